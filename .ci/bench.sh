#!/usr/bin/env bash
# Side-by-side benchmark (prints numbers; not a test): vtp on each runtime (tokio, smol, mio)
# and Comet 3.1.0, started with the same settings on loopback and driven by the same load
# generator (vtp-bench), plus a null relay (writes each frame to every subscriber, nothing else)
# as the physical ceiling for fan-out. Prints ONE table: absolute numbers, vtp/Comet ratios,
# the share of the null relay, and which targets are met.
#
#   bash .ci/bench.sh
#
# Some minutes per workload on 2 cores (Comet, the signatures' RSA signing and the
# instructions workload's valgrind are the slow parts), plus the release build. Every broker
# is started fresh for each run (new event database, no state carried over) and stopped right
# after it; everything listens on 127.0.0.1 only; every run is bounded by a timeout; every
# process is killed on exit. Each run's output and JSON line stay in target/bench-results/
# (BENCH_RESULTS overrides).
#
# Workloads (the same for every broker; the environment variables shown override them):
#   submit   SUBMIT_EVENTS (1000) distinct 10 KB GCN events from 8 concurrent authors, one
#            connection per event (as comet-sendvo does); submissions/s. Comet's cost per
#            submission can grow with its event database (it opens its dbm file on every
#            event; on gdbm, which the peers venv uses, the growth is small), so the workload
#            also runs with SUBMIT_FRESH_EVENTS (200) events, on an almost empty database.
#   fan-out  100 subscribers; FANOUT_EVENTS (600) events as fast as they are delivered, at most
#            32 events not yet at every subscriber; deliveries/s, broker CPU per event. Brokers
#            get them from 32 concurrent authors (one connection per event), so that up to 32
#            events can be in flight, as on the null relay's single stream.
#   paced    100 subscribers; PACED_EVENTS (200) events at 20 events/s; latency from the start
#            of each submission to its receipt at each subscriber (p50/p99/max).
#   hold     HOLD_SUBSCRIBERS (10000) subscribers held HOLD_SECONDS (15) with an iamalive
#            period of HOLD_IAMALIVE (5) s; each must get every iamalive within the period plus
#            1 s, and still be connected at the end; broker RSS with all of them connected.
# TLS workloads (vtp runtimes only; a throwaway ECDSA P-256 CA and server certificate made by
# .ci/tls-certs.sh; clients offer X25519 only, as OpenSSL clients do first, and never resume):
#   fanout-tls  the fan-out workload with the broadcast listener TLS (tls:0:...) and every
#            subscriber a TLS client; authors submit over plain TCP. Each TLS run is paired
#            with a plain run on the same runtime right before it, and the table gives
#            TLS/plain from these pairs (best of each).
#   handshake   HANDSHAKES (2000) connections to a TLS broadcast listener, HANDSHAKE_CLIENTS (8)
#            at a time: TCP connect, full TLS 1.3 handshake, the broker's authenticate, reset;
#            handshakes/s and the broker's CPU per handshake. The same against a plain
#            listener gives the cost of a connection without TLS.
#   idle-tls    idle RSS of a broker whose receive and broadcast listeners are both TLS, against
#            the same broker with plain listeners, each started IDLE_STARTS (3) times and read
#            1 s after start (lowest of the starts); VmRSS, and its private part RssAnon (the
#            rest is file pages: the binary's code read in, shared and reclaimable).
# Signature workload (vtp runtimes only; keys made by GnuPG, conformance/peers/setup_gnupg.sh):
#   signatures  SIG_EVENTS (2000) distinct events from 8 authors, one connection per event,
#            to a broker with `--signatures off`, then each event with its own detached
#            signature by the convention (`vtp-bench submit --sign-key`, all signed before the
#            timed run) to a broker with `--signatures require --trusted-keys`, once per key in
#            SIG_KEYS ("ed25519 rsa2048"); each signed run right after the plain one on the same
#            runtime, signed/plain from these pairs (best of each). 140 s for the three
#            runtimes on a loaded machine (less idle; RSA signing is 2 ms per event). Alone:
#            WORKLOADS=signatures SYSTEMS="tokio smol mio".
# Machine-independent (no broker):
#   instructions  callgrind instruction counts of the sans-IO core (valgrind): per 10 KB
#            submission and per subscriber ack, from the core benchmark (core/benches/core.rs).
#            About 3 minutes.
# Submit, fan-out and the TLS workloads run REPEAT (3) times per system, paced PACED_REPEAT (2)
# times, the systems taking turns; the table shows the best value of each figure (the machine may be shared, and
# interference only ever lowers throughput and raises latency and CPU time). SYSTEMS (default
# "tokio smol mio comet null") picks what runs, WORKLOADS (default "fresh submit fanout paced
# hold fanout-tls handshake idle-tls signatures instructions") which workloads.
#
# Broker CPU is utime+stime of the broker process (the exact per-thread schedstat sums where
# the kernel has them) sampled by vtp-bench before and after the measured phase.
#
# SYSTEM-http (tokio-http, smol-http, mio-http) is that runtime with `--http 127.0.0.1:0`,
# scraped (GET /metrics, then GET /status) every SCRAPE_INTERVAL (0.5) s during the run: the
# cost of the metrics and of their endpoint, and of the event archive `--http` turns on (with
# the handler spool it needs), e.g. SYSTEMS="mio mio-http" WORKLOADS=fanout. SYSTEM-metrics is
# the same with `--no-archive`: SYSTEMS="mio mio-metrics mio-http" tells the archive's share,
# printed as the median over the rounds of 1 - http/metrics, each round's pair run back to back
# (one round's outlier moves a mean by tens of points; issue 17's target: at most 10%).
#
# Settings shared by every broker: --local-ivo ivo://vtp.bench/broker, receive and broadcast
# on 127.0.0.1 (Comet through conformance/peers/comet_twistd.py), author and subscriber
# whitelists 127.0.0.0/8, a fresh event database, test events off, default log level,
# iamalive period 60 s (HOLD_IAMALIVE in the hold workload). vtp's per-address connection
# limits are lifted: every generated peer is on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
repo="$PWD"

SUBMIT_EVENTS="${SUBMIT_EVENTS:-1000}"
SUBMIT_FRESH_EVENTS="${SUBMIT_FRESH_EVENTS:-200}"
FANOUT_EVENTS="${FANOUT_EVENTS:-600}"
PACED_EVENTS="${PACED_EVENTS:-200}"
REPEAT="${REPEAT:-3}"
PACED_REPEAT="${PACED_REPEAT:-2}"
HOLD_SUBSCRIBERS="${HOLD_SUBSCRIBERS:-10000}"
HOLD_SECONDS="${HOLD_SECONDS:-15}"
HOLD_IAMALIVE="${HOLD_IAMALIVE:-5}"
HANDSHAKES="${HANDSHAKES:-2000}"
HANDSHAKE_CLIENTS="${HANDSHAKE_CLIENTS:-8}"
IDLE_STARTS="${IDLE_STARTS:-3}"
SYSTEMS="${SYSTEMS:-tokio smol mio comet null}"
WORKLOADS="${WORKLOADS:-fresh submit fanout paced hold fanout-tls handshake idle-tls signatures instructions}"
SIG_EVENTS="${SIG_EVENTS:-2000}"
SIG_KEYS="${SIG_KEYS:-ed25519 rsa2048}"
for key in $SIG_KEYS; do
  case "$key" in
    ed25519 | rsa2048) ;;
    *) echo "bench: SIG_KEYS: $key is not one of ed25519 rsa2048" >&2; exit 2 ;;
  esac
done
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-0.5}"

# 10,000 subscribers need 10,000 descriptors in the generator and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((HOLD_SUBSCRIBERS + 100)) ]; then
  echo "bench: ulimit -n is $(ulimit -n); the hold workload needs $((HOLD_SUBSCRIBERS + 100))" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/vtp-bench.XXXXXX")"
# Every run's output and JSON line (kept after the run; replaced by the next run).
results="${BENCH_RESULTS:-${CARGO_TARGET_DIR:-$repo/target}/bench-results}"
rm -rf "$results"
mkdir -p "$results"
broker_pid=""
scraper_pid=""
stop_broker() {
  if [ -n "$scraper_pid" ]; then
    kill "$scraper_pid" 2>/dev/null || true
    wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=""
  fi
  [ -n "$broker_pid" ] || return 0
  kill -TERM "$broker_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}
gnupg=""
cleanup() {
  stop_broker
  # The signature workload's GnuPG home has an agent running.
  [ -z "$gnupg" ] || gpgconf --homedir "$gnupg" --kill gpg-agent 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
cargo build --locked --release -p vtp-cli -p vtp-conformance --bins 2>&1 | tail -n 1 >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
echo "== Comet 3.1.0 venv" >&2
venv="$(bash conformance/peers/setup.sh | tail -n 1)"
# The TLS workloads' certificates; `listen` picks the listeners vtp brokers start with:
# plain, tls-broadcast (receive plain, broadcast TLS) or tls-both.
bash .ci/tls-certs.sh "$work/pki"
tls_files="certKey=$work/pki/server.pem:privateKey=$work/pki/server.key"
listen=plain
# The signature workload: `--signatures require --trusted-keys $trusted` when set, `--signatures
# off` when `off`, the default (verify) when empty.
trusted=""

# start SYSTEM IAMALIVE: starts a fresh broker logging to $results/$run_name.log; sets
# broker_pid, recv, bcast.
start() {
  # One log per run: reading a previous run's log would give a dead broker's ports.
  local system="$1" iamalive="$2" log="$results/$run_name.log" db
  db="$(mktemp -d "$work/db.XXXXXX")"
  case "$system" in
    comet)
      # Comet 3.1.0 has no option for the listen address or the iamalive period.
      VTP_COMET_INTERFACE=127.0.0.1 VTP_COMET_IAMALIVE_INTERVAL="$iamalive" \
        "$venv/bin/python" conformance/peers/comet_twistd.py -n --logfile=- --pidfile= comet \
        --receive --receive-port=0 --broadcast --broadcast-port=0 \
        --local-ivo=ivo://vtp.bench/broker --eventdb="$db" --broadcast-test-interval=0 \
        --author-whitelist=127.0.0.0/8 --subscriber-whitelist=127.0.0.0/8 >"$log" 2>&1 &
      ;;
    null)
      "$bin/null-relay" --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 2>"$log" &
      ;;
    *)
      # SYSTEM-async: the runtime with `--durability async` (receipts and forwards do not wait
      # for the store's fsync).
      local durability=before-reply http=() receive=127.0.0.1:0 broadcast=127.0.0.1:0 sig=()
      case "$trusted" in
        "") ;;
        off) sig=(--signatures off) ;;
        *) sig=(--signatures require --trusted-keys "$trusted") ;;
      esac
      case "$system" in *-async) durability=async ;; esac
      case "$system" in
        *-http) http=(--http 127.0.0.1:0) ;;
        *-metrics) http=(--http 127.0.0.1:0 --no-archive) ;;
      esac
      local runtime="${system%-async}"
      runtime="${runtime%-http}"
      runtime="${runtime%-metrics}"
      case "$listen" in
        tls-broadcast) broadcast="tls:0:interface=127.0.0.1:$tls_files" ;;
        tls-both)
          receive="tls:0:interface=127.0.0.1:$tls_files"
          broadcast="tls:0:interface=127.0.0.1:$tls_files"
          ;;
      esac
      "$bin/vtp" broker --runtime "$runtime" --durability "$durability" "${http[@]}" "${sig[@]}" \
        --local-ivo ivo://vtp.bench/broker \
        --receive "$receive" --broadcast "$broadcast" --eventdb "$db" \
        --broadcast-test-interval 0 --iamalive-interval "$iamalive" \
        --author-whitelist 127.0.0.0/8 --subscriber-whitelist 127.0.0.0/8 \
        --author-connections-per-address 100000 --subscriber-connections-per-address 100000 \
        2>"$log" &
      ;;
  esac
  broker_pid=$!
  recv="" bcast=""
  for _ in $(seq 1 300); do
    if [ "$system" = comet ]; then
      recv="$(sed -n 's/.*VOEventReceiverFactory (WhitelistingFactory) starting on \([0-9]*\).*/\1/p' "$log")"
      bcast="$(sed -n 's/.*VOEventBroadcasterFactory (WhitelistingFactory) starting on \([0-9]*\).*/\1/p' "$log")"
    else
      recv="$(listening_port "$log" authors)"
      bcast="$(listening_port "$log" subscribers)"
    fi
    if [ -n "$recv" ] && [ -n "$bcast" ]; then
      case "$system" in *-http | *-metrics) scrape "$log" ;; esac
      return 0
    fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: $system did not start; its log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# scrape LOG: GETs /metrics and /status of the broker that logged LOG every SCRAPE_INTERVAL
# seconds, in the background, until stop_broker (sets scraper_pid).
scrape() {
  local port=""
  for _ in $(seq 1 100); do
    port="$(listening_port "$1" http)"
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "bench: no HTTP endpoint in $1" >&2; return 1; }
  (
    while :; do
      curl -sf -o /dev/null "http://127.0.0.1:$port/metrics" || true
      curl -sf -o /dev/null "http://127.0.0.1:$port/status" || true
      sleep "$SCRAPE_INTERVAL"
    done
  ) &
  scraper_pid=$!
}

# run WORKLOAD SYSTEM ROUND ARGS...: runs vtp-bench against the current broker; keeps its
# JSON line as $results/WORKLOAD.SYSTEM.ROUND.json.
run() {
  local workload="$1" system="$2" round="$3"
  shift 3
  local name="$results/$workload.$system.$round"
  # vtp-bench bounds itself (--timeout); `timeout` is the backstop.
  if ! timeout 400 "$bin/vtp-bench" "$@" --pid "$broker_pid" --label "$system" \
      >"$name.out" 2>"$name.err"; then
    echo "bench: $workload on $system (round $round) did not complete as expected" >&2
  fi
  tail -n 1 "$name.out" >"$name.json"
  python3 - "$name.json" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["submissions_per_s", "deliveries_per_s", "latency_p99_ms", "broker_cpu_us_per_event",
        "on_time", "broker_rss_kib", "naked", "sign_us_per_event", "ok"]
print("   ", " ".join(f"{k}={r[k]}" for k in keys if k in r))
PY
}

# workload NAME IAMALIVE ROUNDS SYSTEMS...: runs NAME's vtp-bench command (function
# args_NAME, dashes as underscores, which sees $system, $recv, $bcast) ROUNDS times per system,
# systems in turn, each run on a freshly started broker; rounds are numbered from $round_from
# (default 1).
workload() {
  local name="$1" iamalive="$2" rounds="$3" round system first="${round_from:-1}"
  shift 3
  for round in $(seq "$first" $((first + rounds - 1))); do
    for system in "$@"; do
      echo "== $name: $system (round $round of $((first + rounds - 1)))" >&2
      run_name="$name.$system.$round"
      start "$system" "$iamalive" || continue
      if [ "$listen" = plain ] && [ ! -f "$results/idle.$system" ]; then
        # Resident memory before any traffic.
        awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status" >"$results/idle.$system"
      fi
      # shellcheck disable=SC2046 # word splitting of the argument list is intended
      run "$name" "$system" "$round" $(args_"${name//-/_}")
      stop_broker
    done
  done
}

brokers=()
for system in $SYSTEMS; do
  [ "$system" = null ] || brokers+=("$system")
done
stream() { [ "$system" = null ] && echo --stream; true; }
args_submit() {
  echo submit --receive "127.0.0.1:$recv" --events "$SUBMIT_EVENTS" --authors 8 --timeout 300
}
args_fresh() {
  echo submit --receive "127.0.0.1:$recv" --events "$SUBMIT_FRESH_EVENTS" --authors 8 \
    --timeout 300
}
args_fanout() {
  echo e2e --receive "127.0.0.1:$recv" --broadcast "127.0.0.1:$bcast" --subscribers 100 \
    --rate 0 --events "$FANOUT_EVENTS" --window 32 --authors 32 --timeout 120 "$(stream)"
}
args_paced() {
  echo e2e --receive "127.0.0.1:$recv" --broadcast "127.0.0.1:$bcast" --subscribers 100 \
    --rate 20 --events "$PACED_EVENTS" --timeout 120 "$(stream)"
}
tls_args() {
  echo --tls-ca "$work/pki/ca.pem" --tls-name 127.0.0.1 --tls-group x25519
}
args_fanout_plain() {
  args_fanout
}
args_fanout_tls() {
  echo "$(args_fanout) $(tls_args)"
}
args_handshake() {
  echo handshake --broadcast "127.0.0.1:$bcast" --connections "$HANDSHAKES" \
    --concurrency "$HANDSHAKE_CLIENTS" --timeout 120 "$(tls_args)"
}
args_connect() {
  echo handshake --broadcast "127.0.0.1:$bcast" --connections "$HANDSHAKES" \
    --concurrency "$HANDSHAKE_CLIENTS" --timeout 120
}
args_sig_plain() {
  echo submit --receive "127.0.0.1:$recv" --events "$SIG_EVENTS" --authors 8 --timeout 300
}
args_sig_ed25519() {
  echo "$(args_sig_plain) --sign-key $work/gnupg/ed25519.sec.asc"
}
args_sig_rsa2048() {
  echo "$(args_sig_plain) --sign-key $work/gnupg/rsa2048.sec.asc"
}
args_hold() {
  echo hold --broadcast "127.0.0.1:$bcast" --subscribers "$HOLD_SUBSCRIBERS" \
    --seconds "$HOLD_SECONDS" --iamalive "$HOLD_IAMALIVE" --slack 1 --timeout 120
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date +%s)"
wants() { [[ " $WORKLOADS " == *" $1 "* ]]; }
wants fresh && workload fresh 60 "$REPEAT" "${brokers[@]}"
wants submit && workload submit 60 "$REPEAT" "${brokers[@]}"
# shellcheck disable=SC2086 # SYSTEMS is a list
wants fanout && workload fanout 60 "$REPEAT" $SYSTEMS
# shellcheck disable=SC2086
wants paced && workload paced 60 "$PACED_REPEAT" $SYSTEMS
# The same with the store's fsync off the path (what the disk adds to the latency).
if wants paced; then
  for runtime in tokio smol mio; do
    [[ " $SYSTEMS " == *" $runtime "* ]] && workload paced 60 "$PACED_REPEAT" "$runtime-async"
  done
fi
# The disk under the event databases: latency of a small append + fdatasync, 20 ms apart (the
# paced workload's rhythm), as the store's commits see it.
if wants paced; then
  python3 - "$work" >"$results/fsync.json" <<'PY' || true
import json, os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
ts = []
for i in range(200):
    t = time.perf_counter()
    os.pwrite(fd, b"x" * 64, 64 * i)
    os.fdatasync(fd)
    ts.append((time.perf_counter() - t) * 1e3)
    time.sleep(0.02)
os.close(fd)
os.remove(path)
ts.sort()
print(json.dumps({"p50": ts[len(ts) // 2], "p99": ts[len(ts) * 99 // 100], "max": ts[-1]}))
PY
fi
wants hold && workload hold "$HOLD_IAMALIVE" 1 "${brokers[@]}"
vtps=()
for system in "${brokers[@]}"; do
  [ "$system" = comet ] || vtps+=("$system")
done
# TLS: each TLS run right after a plain one on the same runtime, so that the pair sees the same
# machine (it may be shared).
if wants fanout-tls && [ "${#vtps[@]}" -gt 0 ]; then
  for round in $(seq 1 "$REPEAT"); do
    for system in "${vtps[@]}"; do
      listen=plain round_from=$round workload fanout-plain 60 1 "$system"
      listen=tls-broadcast round_from=$round workload fanout-tls 60 1 "$system"
    done
  done
fi
if wants handshake && [ "${#vtps[@]}" -gt 0 ]; then
  for round in $(seq 1 "$REPEAT"); do
    for system in "${vtps[@]}"; do
      listen=tls-broadcast round_from=$round workload handshake 60 1 "$system"
      listen=plain round_from=$round workload connect 60 1 "$system"
    done
  done
fi
# Idle RSS, plain listeners vs both listeners TLS, read the same way.
if wants idle-tls && [ "${#vtps[@]}" -gt 0 ]; then
  for round in $(seq 1 "$IDLE_STARTS"); do
    for system in "${vtps[@]}"; do
      for listen in plain tls-both; do
        run_name="idle-$listen.$system.$round"
        start "$system" 60 || continue
        sleep 1
        awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status" >"$results/$run_name.kib"
        awk '/^RssAnon:/ { print $2 }' "/proc/$broker_pid/status" >"$results/$run_name.anon"
        stop_broker
      done
    done
  done
  listen=plain
fi
# Signatures: a key per algorithm made by GnuPG (unprotected), its public half trusted by the
# broker of the signed runs; each signed run right after a plain one on the same runtime.
if wants signatures && [ "${#vtps[@]}" -gt 0 ]; then
  gpg_bin="$(bash conformance/peers/setup_gnupg.sh | tail -n 1)"
  gnupg="$work/gnupg"
  mkdir -m 700 "$gnupg"
  gpg_run() {
    GNUPGHOME="$gnupg" "$gpg_bin" --batch --no-tty --pinentry-mode loopback "$@" \
      2>>"$results/gnupg.log"
  }
  for key in $SIG_KEYS; do
    uid="vtp bench $key <bench-$key@vtp.invalid>"
    gpg_run --passphrase '' --quick-gen-key "$uid" "$key" sign never
    gpg_run --export --armor "$uid" >"$gnupg/$key.pub.asc"
    gpg_run --passphrase '' --export-secret-keys --armor "$uid" >"$gnupg/$key.sec.asc"
  done
  for round in $(seq 1 "$REPEAT"); do
    for system in "${vtps[@]}"; do
      trusted=off round_from=$round workload sig-plain 60 1 "$system"
      for key in $SIG_KEYS; do
        trusted="$gnupg/$key.pub.asc" round_from=$round workload "sig-$key" 60 1 "$system"
      done
    done
  done
  trusted=""
fi
# Core instructions: callgrind counts instructions, not seconds, so these figures do not move
# with the machine's load. The core benchmark's submission (accept, input of one 10 KB GCN
# event, drain; 0 feeds; every call of its `submit_one`) and a subscriber's ack on a broker
# with 100 feeds (`feed_acks`), divided by the calls the benchmark reports. valgrind hides the
# CPU's SHA extensions, so the event's SHA-256 is counted as a CPU without them runs it.
if wants instructions; then
  if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    echo "== core instructions (callgrind)" >&2
    core_bench="$(cargo bench --locked -p vtp-core --bench core --no-run --message-format=json \
      2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "core":
        print(m["executable"])')"
    for what in submit ack; do
      case "$what" in submit) toggle=submit_one ;; ack) toggle=feed_acks ;; esac
      timeout 900 valgrind --tool=callgrind --callgrind-out-file="$results/callgrind.$what" \
        --toggle-collect="*$toggle*" "$core_bench" --bench "$what" \
        >"$results/core-$what.txt" 2>"$results/callgrind-$what.log" || true
      callgrind_annotate "$results/callgrind.$what" 2>/dev/null \
        | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' >"$results/instructions.$what"
    done
    # The event's SHA-256 (the event key), inclusive: the part a CPU with SHA extensions does
    # in a few microseconds.
    callgrind_annotate --inclusive=yes "$results/callgrind.submit" 2>/dev/null \
      | awk '/EventKey::of_element/ && !seen { gsub(",", "", $1); print $1; seen = 1 }' \
      >"$results/instructions.submit-sha256"
  else
    echo "bench: the instructions workload needs valgrind (Debian: valgrind); skipped" >&2
  fi
fi
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
machine="$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr)"
python3 - "$results" "$SYSTEMS" "$machine" "$load_before" "$load_after" "$HOLD_IAMALIVE" \
  "$REPEAT" "$PACED_REPEAT" "$(( $(date +%s) - started ))" <<'PY'
import datetime, glob, json, os, sys

results, systems, machine, load_before, load_after, hold_iamalive, rounds, paced_rounds, secs = \
    sys.argv[1:10]
systems = systems.split()
vtps = [s for s in systems if s not in ("comet", "null")]
# The systems compared with Comet in ratio rows: the vtp runtimes, and the null relay if it ran.
vs_comet = vtps + [s for s in systems if s == "null"]
names = {"tokio": "vtp tokio", "smol": "vtp smol", "mio": "vtp mio", "comet": "Comet 3.1.0",
         "null": "null relay"}
for s in systems:
    names.setdefault(s, "vtp " + s.replace("-", " "))

def load(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None

RUNS = {}
for w in ("fresh", "submit", "fanout", "paced", "hold", "fanout-plain", "fanout-tls", "handshake",
          "connect", "sig-plain", "sig-ed25519", "sig-rsa2048"):
    for s in systems:
        found = []
        for p in sorted(glob.glob(os.path.join(results, f"{w}.{s}.*.json"))):
            r = load(p)
            if r:
                # The round, from WORKLOAD.SYSTEM.ROUND.json: rounds pair systems' runs.
                r["_round"] = p.rsplit(".", 2)[-2]
                found.append(r)
        RUNS[w, s] = found

def good(w, s):
    """The runs that completed as expected (all runs when none did, to show something)."""
    runs = RUNS.get((w, s), [])
    ok = [r for r in runs if r.get("ok")]
    return ok or runs

HIGHER = {"submissions_per_s", "deliveries_per_s", "events_per_s", "on_time", "held"}

def get(w, s, k):
    """Best value of metric k over the runs: the machine is shared, and interference only
    ever lowers throughput and raises latency and CPU time."""
    vals = [r[k] for r in good(w, s) if r.get(k) is not None]
    if not vals:
        return None
    return max(vals) if k in HIGHER else min(vals)

def run_of(w, s, k):
    """The run with the best value of k (for figures that must come from one run)."""
    runs = [r for r in good(w, s) if r.get(k) is not None]
    return max(runs, key=lambda r: r[k]) if runs else None

def num(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"

def ratio(a, b):
    return None if a in (None, 0) or b in (None, 0) else a / b

def times(x):
    return "-" if x is None else f"{x:.1f}x"

def pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"

rows = []
notes = []
def row(label, cells):
    rows.append((label, [cells.get(s, "") for s in systems]))
def head(label):
    rows.append((label, None))
def completed(w, ss):
    row("  runs completed", {s: f"{sum(1 for r in RUNS[w, s] if r.get('ok'))}/{len(RUNS[w, s])}"
                             for s in ss if RUNS.get((w, s))})

brokers = [s for s in systems if s != "null"]
n = {w: next((get(w, s, "events") for s in systems if get(w, s, "events")), None)
     for w in ("fresh", "submit", "fanout", "paced")}
sub = {}
for w, what in (("fresh", "fresh event database"), ("submit", "one connection each")):
    head(f"submit: {n[w]} events, 8 authors, {what}")
    sub[w] = {s: get(w, s, "submissions_per_s") for s in brokers}
    row("  submissions/s", {s: num(sub[w][s]) for s in brokers})
    row("  vtp / Comet", {s: times(ratio(sub[w][s], sub[w].get("comet"))) for s in vtps})
    row("  receipt p99 ms", {s: num(get(w, s, "receipt_p99_ms"), 2) for s in brokers})
    row("  broker CPU us/event", {s: num(get(w, s, "broker_cpu_us_per_event"))
                                  for s in brokers})
    completed(w, brokers)

head(f"fan-out: 100 subscribers, {n['fanout']} events, window 32 (32 authors)")
dps = {s: get("fanout", s, "deliveries_per_s") for s in systems}
row("  deliveries/s", {s: num(dps[s]) for s in systems})
row("  vtp / Comet", {s: times(ratio(dps[s], dps.get("comet"))) for s in vs_comet})
row("  % of null relay", {s: pct(ratio(dps[s], dps.get("null"))) for s in brokers})
cpu_f = {s: get("fanout", s, "broker_cpu_us_per_event") for s in systems}
row("  broker CPU us/event", {s: num(cpu_f[s]) for s in systems})
row("  Comet / vtp CPU", {s: times(ratio(cpu_f.get("comet"), cpu_f[s])) for s in vtps})
def busy(s, who):
    r = run_of("fanout", s, "deliveries_per_s")
    return None if r is None else ratio(r.get(who), r.get("wall_ms"))
row("  broker CPU busy (best run)", {s: pct(busy(s, "broker_cpu_ms")) for s in systems})
row("  generator CPU busy (best run)", {s: pct(busy(s, "bench_cpu_ms")) for s in systems})
completed("fanout", systems)
# The archive's share of the deliveries/s: SYSTEM-http (--http: the archive and the handler
# spool it needs) against SYSTEM-metrics (--http --no-archive), round by round (a round runs
# the systems back to back), the median of the rounds: the best runs alone spread more than
# the share.
archive_cost = {}
for s in systems:
    base_s = s[:-len("-http")] + "-metrics"
    if not s.endswith("-http") or base_s not in systems:
        continue
    base = {r["_round"]: r.get("deliveries_per_s") for r in good("fanout", base_s)}
    costs = [1 - r["deliveries_per_s"] / base[r["_round"]] for r in good("fanout", s)
             if r.get("deliveries_per_s") and base.get(r["_round"])]
    if costs:
        costs.sort()
        mid = len(costs) // 2
        median = costs[mid] if len(costs) % 2 else (costs[mid - 1] + costs[mid]) / 2
        archive_cost[s] = (median, costs[0], costs[-1], len(costs))
if archive_cost:
    row("  archive's cost (median of rounds)", {s: pct(c[0]) for s, c in archive_cost.items()})

head(f"paced: 100 subscribers, 20 events/s, {n['paced']} events")
for q in ("p50", "p99", "max"):
    row(f"  latency {q} ms", {s: num(get("paced", s, f"latency_{q}_ms"), 2) for s in systems})
p99 = {s: get("paced", s, "latency_p99_ms") for s in systems}
row("  Comet / vtp p99", {s: times(ratio(p99.get("comet"), p99[s])) for s in vs_comet})
cpu_p = {s: get("paced", s, "broker_cpu_us_per_event") for s in systems}
row("  broker CPU us/event", {s: num(cpu_p[s]) for s in systems})
row("  Comet / vtp CPU", {s: times(ratio(cpu_p.get("comet"), cpu_p[s])) for s in vtps})
completed("paced", systems)
p99_async = {}
for s in vtps:
    a = f"{s}-async"
    if RUNS.get(("paced", a)) is None:
        RUNS["paced", a] = [r for r in (load(p) for p in sorted(glob.glob(
            os.path.join(results, f"paced.{a}.*.json")))) if r]
    if RUNS["paced", a]:
        p99_async[s] = get("paced", a, "latency_p99_ms")
        notes.append(f"paced, vtp {s} with --durability async (no fsync before forwarding): "
             f"latency ms p50 {num(get('paced', a, 'latency_p50_ms'), 2)}, p99 "
             f"{num(p99_async[s], 2)}, max {num(get('paced', a, 'latency_max_ms'), 2)}")
disk = load(os.path.join(results, "fsync.json"))
if disk:
    notes.append(f"disk under the event databases: 64-byte append + fdatasync ms p50 {disk['p50']:.2f}, "
         f"p99 {disk['p99']:.2f}, max {disk['max']:.2f}")

head(f"hold: iamalive every {hold_iamalive} s, 1 s slack")
hold = {s: (good("hold", s) or [None])[0] for s in brokers}
def hv(s, k):
    return None if hold[s] is None else hold[s].get(k)
row("  subscribers", {s: num(hv(s, "subscribers")) for s in brokers})
row("  connected in s", {s: num(ratio(hv(s, "connect_ms"), 1000), 1) for s in brokers})
row("  held / on time", {s: f"{hv(s, 'held')}/{hv(s, 'on_time')}" for s in brokers if hold[s]})
row("  longest iamalive gap s", {s: num(ratio(hv(s, "gap_max_ms"), 1000), 2) for s in brokers})
row("  broker RSS MiB", {s: num(ratio(hv(s, "broker_rss_kib"), 1024), 1) for s in brokers})
tls_ratio = {}
tls_cpu_ratio = {}
if any(RUNS.get(("fanout-tls", s)) for s in vtps):
    n_tls = next((get("fanout-tls", s, "events") for s in vtps if get("fanout-tls", s, "events")),
                 None)
    # Authors submit over plain TCP (see the header).
    head(f"fan-out, TLS subscribers: 100, {n_tls} events, window 32")
    d_tls = {s: get("fanout-tls", s, "deliveries_per_s") for s in vtps}
    d_plain = {s: get("fanout-plain", s, "deliveries_per_s") for s in vtps}
    tls_ratio = {s: ratio(d_tls[s], d_plain[s]) for s in vtps}
    row("  deliveries/s", {s: num(d_tls[s]) for s in vtps})
    row("  plain TCP deliveries/s (paired runs)", {s: num(d_plain[s]) for s in vtps})
    row("  TLS / plain", {s: pct(tls_ratio[s]) for s in vtps})
    c_tls = {s: get("fanout-tls", s, "broker_cpu_us_per_event") for s in vtps}
    c_plain = {s: get("fanout-plain", s, "broker_cpu_us_per_event") for s in vtps}
    row("  broker CPU us/event", {s: num(c_tls[s]) for s in vtps})
    row("  TLS / plain CPU", {s: times(ratio(c_tls[s], c_plain[s])) for s in vtps})
    # What the ratio would be with the broker CPU-bound on a core of its own: events per
    # broker CPU second, TLS over plain (robust on a shared machine).
    tls_cpu_ratio = {s: ratio(c_plain[s], c_tls[s]) for s in vtps}
    row("  TLS / plain per broker CPU second", {s: pct(tls_cpu_ratio[s]) for s in vtps})
    def busy_tls(s, who):
        r = run_of("fanout-tls", s, "deliveries_per_s")
        return None if r is None else ratio(r.get(who), r.get("wall_ms"))
    row("  broker CPU busy (best run)", {s: pct(busy_tls(s, "broker_cpu_ms")) for s in vtps})
    row("  generator CPU busy (best run)", {s: pct(busy_tls(s, "bench_cpu_ms")) for s in vtps})
    completed("fanout-tls", vtps)
if any(RUNS.get(("handshake", s)) for s in vtps):
    hs = {s: get("handshake", s, "connections_per_s") for s in vtps}
    hs_n = next((get("handshake", s, "connections") for s in vtps if hs[s]), None)
    hs_c = next((get("handshake", s, "concurrency") for s in vtps if hs[s]), None)
    head(f"TLS handshakes: {num(hs_n)} ({hs_c} at a time), P-256 key, X25519")
    row("  handshakes/s", {s: num(hs[s]) for s in vtps})
    h_cpu = {s: get("handshake", s, "broker_cpu_us_per_event") for s in vtps}
    p_cpu = {s: get("connect", s, "broker_cpu_us_per_event") for s in vtps}
    row("  broker CPU us/handshake", {s: num(h_cpu[s]) for s in vtps})
    row("  plain connections/s", {s: num(get("connect", s, "connections_per_s")) for s in vtps})
    row("  broker CPU us/plain connection", {s: num(p_cpu[s]) for s in vtps})
    row("  TLS adds, broker CPU us", {s: num(h_cpu[s] - p_cpu[s]) for s in vtps
                                      if h_cpu[s] is not None and p_cpu[s] is not None})
    row("  connect to authenticate p99 ms", {s: num(get("handshake", s, "connect_p99_ms"), 2)
                                             for s in vtps})
    completed("handshake", vtps)
SIG_NAMES = {"ed25519": "Ed25519", "rsa2048": "RSA-2048"}
sig_ratio = {}
sig_cpu_ratio = {}
if any(RUNS.get(("sig-plain", s)) for s in vtps):
    n_sig = next((get("sig-plain", s, "events") for s in vtps if get("sig-plain", s, "events")),
                 None)
    head(f"signatures: {n_sig} events, 8 authors, one connection each; --signatures require "
         "against off")
    plain = {s: get("sig-plain", s, "submissions_per_s") for s in vtps}
    row("  submissions/s without signatures", {s: num(plain[s]) for s in vtps})
    plain_cpu = {s: get("sig-plain", s, "broker_cpu_us_per_event") for s in vtps}
    row("    broker CPU us/event", {s: num(plain_cpu[s]) for s in vtps})
    completed("sig-plain", vtps)
    for key, name in SIG_NAMES.items():
        if not any(RUNS.get((f"sig-{key}", s)) for s in vtps):
            continue
        w = f"sig-{key}"
        signed = {s: get(w, s, "submissions_per_s") for s in vtps}
        sig_ratio[key] = {s: ratio(signed[s], plain[s]) for s in vtps}
        row(f"  submissions/s signed, {name}", {s: num(signed[s]) for s in vtps})
        row("    signed / without", {s: pct(sig_ratio[key][s]) for s in vtps})
        cpu = {s: get(w, s, "broker_cpu_us_per_event") for s in vtps}
        row("    broker CPU us/event", {s: num(cpu[s]) for s in vtps})
        # What the ratio would be with the broker CPU-bound on a core of its own (robust on a
        # shared machine): events per broker CPU second, signed over without.
        sig_cpu_ratio[key] = {s: ratio(plain_cpu[s], cpu[s]) for s in vtps}
        row("    signed / without per broker CPU second",
            {s: pct(sig_cpu_ratio[key][s]) for s in vtps})
        row("    receipt p99 ms", {s: num(get(w, s, "receipt_p99_ms"), 2) for s in vtps})
        row("    signing CPU us/event (generator, before the run)",
            {s: num(get(w, s, "sign_us_per_event")) for s in vtps})
        completed(w, vtps)
head("memory")
idle = {s: load(os.path.join(results, f"idle.{s}")) for s in systems}
row("  idle RSS MiB", {s: num(ratio(idle[s], 1024), 1) for s in systems if idle.get(s)})
def idle_min(listen, s, ext="kib"):
    vals = [load(p) for p in glob.glob(os.path.join(results, f"idle-{listen}.{s}.*.{ext}"))]
    vals = [v for v in vals if v]
    return min(vals) if vals else None
def delta(ext):
    a = {s: idle_min("tls-both", s, ext) for s in vtps}
    b = {s: idle_min("plain", s, ext) for s in vtps}
    return a, b, {s: a[s] - b[s] for s in vtps if a[s] is not None and b[s] is not None}
idle_tls, idle_plain, rss_delta = delta("kib")
_, _, anon_delta = delta("anon")
if rss_delta:
    row("  idle RSS MiB, plain listeners (1 s)", {s: num(ratio(idle_plain[s], 1024), 2)
                                                   for s in rss_delta})
    row("  idle RSS MiB, TLS listeners (1 s)", {s: num(ratio(idle_tls[s], 1024), 2)
                                                 for s in rss_delta})
    row("  TLS - plain idle RSS KiB", {s: num(rss_delta[s]) for s in rss_delta})
    row("    of which private (RssAnon) KiB", {s: num(anon_delta.get(s)) for s in rss_delta})

def instructions(what, calls_label, run=None):
    """Instructions per call of the core benchmark's counted function (callgrind), in the
    benchmark run `run` (default: `what`)."""
    try:
        with open(os.path.join(results, f"instructions.{what}")) as f:
            total = int(f.read().strip())
        with open(os.path.join(results, f"core-{run or what}.txt")) as f:
            calls = next(int(l.rsplit(":", 1)[1]) for l in f if l.startswith(calls_label))
    except (OSError, ValueError, StopIteration):
        return None
    return total / calls if calls else None
instr_submit = instructions("submit", "submit_one calls")
instr_sha = instructions("submit-sha256", "submit_one calls", "submit")
instr_ack = instructions("ack", "acks fed by feed_acks")
if instr_submit is not None or instr_ack is not None:
    notes.append("core instructions (callgrind; machine-independent; SHA-256 in software): "
                 f"{num(instr_submit)} per 10 KB submission (0 feeds; "
                 f"{num(instr_sha)} of them the event's SHA-256), "
                 f"{num(instr_ack)} per subscriber ack (100 feeds)")

# Rows no system has a figure for (a workload not run, a comparison with a system not run) say
# nothing: left out, and so is a heading left with no rows.
def says(cells):
    return cells is None or any(c not in ("", "-") for c in cells)
rows = [r for r in rows if says(r[1])]
rows = [r for i, r in enumerate(rows)
        if r[1] is not None or (i + 1 < len(rows) and rows[i + 1][1] is not None)]
width = max([len(label) for label, cells in rows if cells is not None] + [0]) + 2
col = max(12, *(len(names[s]) + 2 for s in systems))
print()
print(f"vtp side-by-side benchmark, {datetime.date.today().isoformat()}, {secs} s")
print(f"machine: {machine}")
print(f"load average before {load_before}, after {load_after}")
print(f"each figure: the best of {rounds} runs (paced: {paced_rounds}; hold: 1) per system")
print()
print(" " * width + "".join(f"{names[s]:>{col}}" for s in systems))
for label, cells in rows:
    if cells is None:
        print(label)
    else:
        print(f"{label:<{width}}" + "".join(f"{c:>{col}}" for c in cells))

for note in notes:
    print(note)
print()
print("targets, per vtp runtime")
def verdict(name, values):
    if not values:
        return
    parts = []
    for s in vtps:
        v = values.get(s)
        parts.append(f"{s} {v[1]} {'met' if v[0] else 'MISSED'}" if v else f"{s} -")
    print(f"  {name}: " + "; ".join(parts))

# Issue 18's targets: submissions against Comet, everything else against the null relay (the
# physical floor of writing each frame to each subscriber).
if instr_submit is not None:
    verdict("core instructions per 10 KB submission <= 300 k (callgrind)",
            {s: (instr_submit <= 300e3, f"{instr_submit / 1e3:,.0f} k") for s in vtps})
for w in ("fresh", "submit"):
    verdict(f"submissions/s with 8 authors >= 30x Comet on mio, >= 25x on tokio and smol "
            f"({n[w]} events)",
            {s: (r >= (30 if s == "mio" else 25), f"{r:.1f}x") for s in vtps
             if (r := ratio(sub[w][s], sub[w].get("comet"))) is not None})
verdict("deliveries/s at 100 subscribers >= 80% of the null relay",
        {s: (r >= 0.8, pct(r)) for s in vtps
         if (r := ratio(dps[s], dps.get("null"))) is not None})
for label, cpu, bound in (("fan-out", cpu_f, 1.3), ("paced, 20 events/s", cpu_p, 1.2)):
    verdict(f"broker CPU per event at 100 subscribers <= {bound}x the null relay's ({label})",
            {s: (r <= bound, f"{r:.2f}x") for s in vtps
             if (r := ratio(cpu[s], cpu.get("null"))) is not None})
verdict(f"paced p99 with --durability async <= 1.5x the null relay's p99 "
        f"({num(p99.get('null'), 2)} ms)",
        {s: (r <= 1.5, f"{num(p99_async[s], 2)} ms, {r:.2f}x") for s in vtps
         if (r := ratio(p99_async.get(s), p99.get("null"))) is not None})
if archive_cost:
    verdict("the archive costs <= 10% of the fan-out deliveries/s (SYSTEM-http against "
            "SYSTEM-metrics, median of the rounds)",
            {s: (c[0] <= 0.10, f"{pct(c[0])} over {c[3]} rounds, {pct(c[1])} to {pct(c[2])}")
             for s, c in archive_cost.items()})
if tls_ratio:
    verdict("deliveries/s at 100 TLS subscribers >= 60% of plain TCP",
            {s: (r >= 0.6, f"{pct(r)} (per broker CPU second {pct(tls_cpu_ratio.get(s))})")
             for s in vtps if (r := tls_ratio[s]) is not None})
for key, ratios in sig_ratio.items():
    verdict(f"submissions/s with --signatures require >= 70% of without ({SIG_NAMES[key]})",
            {s: (r >= 0.7, f"{pct(r)} (per broker CPU second {pct(sig_cpu_ratio[key].get(s))})")
             for s in vtps if (r := ratios[s]) is not None})
if rss_delta:
    verdict("idle RSS with TLS listeners <= plain + 1 MiB",
            {s: (d <= 1024, f"+{d} KiB (private +{anon_delta.get(s)} KiB)")
             for s, d in rss_delta.items()})
verdict(f"{num(hv(vtps[0], 'subscribers')) if vtps else '-'} subscribers held, iamalives on "
        "time, <= 150 MB RSS",
        {s: (hv(s, "on_time") == hv(s, "subscribers") and hv(s, "broker_rss_kib") * 1024 <= 150e6,
             f"{hv(s, 'on_time')} on time, {hv(s, 'broker_rss_kib') * 1024 / 1e6:.0f} MB")
         for s in vtps if hold[s] and hv(s, "broker_rss_kib") is not None})
print()
print(f"every run's output: {results}")
PY
