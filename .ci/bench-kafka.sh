#!/usr/bin/env bash
# The Kafka bridge's benchmark (prints numbers; not a test, never timed in CI): a release
# `vtp broker` against tansu (conformance/peers/setup_tansu.sh, in-memory storage) on loopback.
#
#   bash .ci/bench-kafka.sh
#
#   ingest   EVENTS (20000) distinct 10 KB GCN VOEvents (core/tests/data/gcn_swift_bat.xml with
#            numbered IVORNs) are produced to a topic first (kafka-python; its rate is printed
#            but is not part of the figure). Then vtp starts with --kafka-start earliest behind
#            a gate (its bootstrap address is a forwarder that opens only once SUBSCRIBERS (10)
#            raw VTP subscribers, vtp-bench, are connected, so none misses an event); events/s
#            is EVENTS over the time from the first delivery to the last event at every
#            subscriber, from vtp-bench.
#   latency  a fresh vtp (--kafka-start latest) and one raw subscriber (Python); PACED_EVENTS
#            (1000) events produced at PACED_RATE (100) per second, each sent at once; latency
#            from the producer's send call to the arrival at the subscriber, p50/p99/max.
#   publish  authors (vtp-bench submit, 8 at a time, one connection per event as comet-sendvo
#            does) submit EVENTS events to a vtp with --kafka-publish; events/s is EVENTS over
#            the time from the first submission until Kafka has acknowledged all EVENTS
#            (vtp_kafka_records_total{direction="out"}, polled every 50 ms); then kafka-python
#            reads the topic back (not timed): EVENTS records, EVENTS distinct keys.
#            vtp-bench's own submissions/s is printed beside it: the publish rate cannot
#            exceed it.
# WORKLOADS (default "ingest latency publish") picks what runs.
#
# Every vtp has a fresh event database (durability before-reply: each event's record is on
# disk before it is forwarded, published or its offset committed). Each figure also prints
# vtp's own Kafka metrics (GET /metrics) at the end of its run. Everything listens on
# 127.0.0.1; every wait is bounded; every process started is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

EVENTS="${EVENTS:-20000}"
SUBSCRIBERS="${SUBSCRIBERS:-10}"
PACED_EVENTS="${PACED_EVENTS:-1000}"
PACED_RATE="${PACED_RATE:-100}"
WORKLOADS="${WORKLOADS:-ingest latency publish}"

. .ci/lib.sh
scratch vtp-bench-kafka

echo "== building (release)" >&2
cargo build --locked --release -p vtp-cli --bin vtp -p vtp-conformance --bin vtp-bench 2>&1 \
  | tail -n 1 >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
venv="$(bash conformance/peers/setup.sh | tail -n 1)"
py="$venv/bin/python"
tansu="$(bash conformance/peers/setup_tansu.sh | tail -n 1)"
event="$repo/core/tests/data/gcn_swift_bat.xml"
helper="$repo/conformance/peers/kafka_bench.py"
tag="b$(date +%s)"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

kport="$(free_port)"
RUST_LOG=warn "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" \
  --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/ \
  >"$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  (echo >"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break
  sleep 0.05
done
kafka="127.0.0.1:$kport"
for t in bench.ingest bench.paced bench.publish; do
  "$tansu" topic create "$t" --broker "tcp://$kafka" --partitions 1 >/dev/null
done

# vtp NAME ARGS...: starts a release vtp broker logging to $work/NAME.log; sets vtp_pid,
# recv, bcast, http. `--http` is for reading the metrics; the archive it would turn on is left
# out (`--no-archive`): this measures the bridge (`SYSTEMS=mio-http` in bench.sh measures the
# archive).
vtp() {
  local name="$1" log="$work/$1.log"
  shift
  "$bin/vtp" broker --local-ivo "ivo://vtp.bench/$name" --eventdb "$work/db-$name" \
    --broadcast-test-interval 0 --http 127.0.0.1:0 --no-archive \
    --author-whitelist 127.0.0.0/8 --subscriber-whitelist 127.0.0.0/8 \
    --author-connections-per-address 100000 --subscriber-connections-per-address 100000 \
    "$@" 2>"$log" &
  vtp_pid=$!
  pids+=("$vtp_pid")
  recv="" bcast="" http=""
  for _ in $(seq 1 300); do
    vtp_ports "$log"
    if [ -n "$bcast" ] && [ -n "$http" ]; then
      case " $* " in *" --receive "*) [ -n "$recv" ] && return 0 ;; *) return 0 ;; esac
    fi
    sleep 0.05
  done
  echo "bench-kafka: vtp $name did not start:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# metric NAME: the value of one series of the running vtp's /metrics (empty if absent).
metric() {
  curl -fsS "http://127.0.0.1:$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# wait_metric NAME VALUE SECONDS
wait_metric() {
  for _ in $(seq 1 $(($3 * 20))); do
    [ "$(metric "$1")" = "$2" ] && return 0
    sleep 0.05
  done
  echo "bench-kafka: $1 is not $2 after $3 s" >&2
  return 1
}

kafka_metrics() {
  curl -fsS "http://127.0.0.1:$http/metrics" | grep '^vtp_kafka' | grep -v ' 0$' | sed 's/^/    /'
}

json() { "$py" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

echo "== machine: $(nproc) cores ($(uname -m)), shared; tansu $("$tansu" --version 2>&1 | head -n 1)"

want() { case " $WORKLOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if want ingest; then
echo "== ingest: $EVENTS events of $(wc -c <"$event") bytes, Kafka -> vtp -> $SUBSCRIBERS subscribers"
"$py" "$helper" produce "$kafka" bench.ingest "$EVENTS" "$event" "$tag-i" | sed 's/^/   (setup) /'
gate="$(free_port)"
vtp ingest --broadcast 127.0.0.1:0 --kafka-bootstrap "127.0.0.1:$gate" \
  --kafka-subscribe bench.ingest --kafka-start earliest --kafka-group bench.ingest
"$bin/vtp-bench" subscribe --broadcast "127.0.0.1:$bcast" --subscribers "$SUBSCRIBERS" \
  --expect "$EVENTS" --timeout 600 --pid "$vtp_pid" >"$work/ingest.out" 2>&1 &
bench_pid=$!
pids+=("$bench_pid")
wait_metric vtp_subscribers "$SUBSCRIBERS" 30
"$py" "$helper" forward "$gate" "$kport" &
pids+=($!)
wait "$bench_pid" || { echo "bench-kafka: the ingest run failed:" >&2; cat "$work/ingest.out" >&2; exit 1; }
wall_ms="$(json wall_ms <"$work/ingest.out")"
"$py" -c "import sys; n, ms = int(sys.argv[1]), float(sys.argv[2]); print(f'   ingest: {n} events in {ms/1000:.2f} s: {n*1000/ms:.0f} events/s ({n*1000/ms*int(sys.argv[3]):.0f} deliveries/s)')" \
  "$EVENTS" "$wall_ms" "$SUBSCRIBERS"
echo "   vtp CPU per event: $(json broker_cpu_us_per_event <"$work/ingest.out" 2>/dev/null || echo '?') µs; metrics at the end:"
kafka_metrics
kill "$vtp_pid"
fi

if want latency; then
echo "== latency: $PACED_EVENTS events at $PACED_RATE/s, Kafka -> vtp -> 1 subscriber"
vtp paced --broadcast 127.0.0.1:0 --kafka-bootstrap "$kafka" --kafka-subscribe bench.paced \
  --kafka-start latest --kafka-group bench.paced
wait_metric 'vtp_kafka_up{role="consumer"}' 1 30
"$py" "$helper" latency "$kafka" bench.paced "127.0.0.1:$bcast" "$PACED_EVENTS" "$PACED_RATE" \
  "$event" "$tag-p" | sed 's/^/   /'
kill "$vtp_pid"
fi

if want publish; then
echo "== publish: $EVENTS events from authors -> vtp -> Kafka"
vtp publish --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --kafka-bootstrap "$kafka" \
  --kafka-publish bench.publish
t0="$(date +%s.%N)"
"$bin/vtp-bench" submit --receive "127.0.0.1:$recv" --events "$EVENTS" --authors 8 \
  --timeout 600 --pid "$vtp_pid" >"$work/submit.out" 2>&1 \
  || { echo "bench-kafka: the submissions failed:" >&2; cat "$work/submit.out" >&2; exit 1; }
wait_metric 'vtp_kafka_records_total{direction="out"}' "$EVENTS" 600
t1="$(date +%s.%N)"
"$py" -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print(f'   publish: {n} events in {s:.2f} s: {n/s:.0f} events/s')" \
  "$EVENTS" "$t0" "$t1"
echo "   (the authors alone: $(json submissions_per_s <"$work/submit.out") submissions/s)"
echo "   metrics at the end:"
kafka_metrics
kill "$vtp_pid"
"$py" "$helper" verify "$kafka" bench.publish "$EVENTS" 300 | sed 's/^/   (check) /'
fi
