#!/usr/bin/env bash
# What `--http` costs with many subscribers (prints numbers; not a test). For each runtime in
# SYSTEMS (default "tokio mio"): a fresh vtp broker with --http on 127.0.0.1, SUBSCRIBERS
# (9800) subscribers held by `vtp-bench hold`, then
#
#   1. the time of SCRAPES (50) requests each of GET /metrics, /status and /healthz, one after
#      the other (client side, curl's time_total);
#   2. with no events flowing, the CPU time of the event loop's thread and of the endpoint's
#      thread over WINDOW (10) s, without scraping and while /metrics and /status are scraped
#      every SCRAPE_INTERVAL (0.1) s: what a scrape costs the loop, and what it costs at all;
#   3. paced end-to-end latency (`vtp-bench e2e`: 100 more subscribers, EVENTS (30) events of
#      about 400 bytes at RATE (1) event/s, so each event goes to SUBSCRIBERS + 100) without
#      scraping, while /metrics is scraped every SCRAPE_INTERVAL s, and while /metrics and
#      /status are: a scrape that held the event loop would show in the latency of the events
#      that met it (on a 2-core machine the scraper's own CPU competes with the broker's).
#
#   bash .ci/bench-scrape.sh
#
# The broker splits its file descriptors between authors and subscribers: with a limit of
# 20,000 (this machine's hard limit) it takes about 9,900 subscribers, hence 9,800 + 100.
#
# Everything listens on 127.0.0.1; every run is bounded by a timeout; every process is killed
# on exit. Outputs stay in target/bench-scrape/ (BENCH_RESULTS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

SYSTEMS="${SYSTEMS:-tokio mio}"
SUBSCRIBERS="${SUBSCRIBERS:-9800}"
SCRAPES="${SCRAPES:-50}"
EVENTS="${EVENTS:-30}"
RATE="${RATE:-1}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-0.1}"
WINDOW="${WINDOW:-10}"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

. .ci/lib.sh
scratch vtp-bench-scrape
results="${BENCH_RESULTS:-${CARGO_TARGET_DIR:-$repo/target}/bench-scrape}"
rm -rf "$results"
mkdir -p "$results"
trap 'exit 130' INT TERM

echo "== building (release)" >&2
cargo build --locked --release -p vtp-cli -p vtp-conformance --bins 2>&1 | tail -n 1 >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

cat >"$work/event.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://vtp.bench/scrape#e" role="test" version="2.0">
  <Who><AuthorIVORN>ivo://vtp.bench/author</AuthorIVORN><Date>2026-01-01T00:00:00</Date></Who>
  <What><Param name="n" value="1"/></What>
</voe:VOEvent>
XML

# timings FILE: p50 and max of the numbers in FILE (seconds), in ms.
timings() {
  sort -n "$1" | awk '{ v[NR] = $1 } END { printf "p50 %.2f ms, max %.2f ms", 1000 * v[int((NR + 1) / 2)], 1000 * v[NR] }'
}

# latency FILE: p50/p99/max of a vtp-bench JSON line.
latency() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("p50 %s ms, p99 %s ms, max %s ms (%s)" % (r.get("latency_p50_ms"), r.get("latency_p99_ms"), r.get("latency_max_ms"), "ok" if r.get("ok") else "NOT OK"))' "$1"
}

# cpu_ns TID: nanoseconds thread TID of the broker has run (schedstat).
cpu_ns() { cut -d' ' -f1 "/proc/$broker/task/$1/schedstat"; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f ms", ns / 1e6 }'; }

# start_scraper PATH...: GETs each PATH, then sleeps SCRAPE_INTERVAL, until stop_scraper,
# which sets `scrapes` to the number of requests made.
scraper=""
start_scraper() {
  : >"$work/scrapes"
  (
    while :; do
      for path in "$@"; do
        curl -sf -o /dev/null "http://127.0.0.1:$http/$path" && echo >>"$work/scrapes"
      done
      sleep "$SCRAPE_INTERVAL"
    done
  ) &
  scraper=$!
  pids+=("$scraper")
}
stop_scraper() {
  scrapes=0
  [ -n "$scraper" ] || return 0
  kill "$scraper" 2>/dev/null || true
  wait "$scraper" 2>/dev/null || true
  scraper=""
  scrapes="$(wc -l <"$work/scrapes")"
}

hold_seconds=$(( 3 * EVENTS / RATE + 2 * WINDOW + 120 ))
for system in $SYSTEMS; do
  echo "== $system: $SUBSCRIBERS subscribers" >&2
  log="$results/$system.log"
  : >"$log"
  "$bin/vtp" broker --runtime "$system" --local-ivo ivo://vtp.bench/broker \
    --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --eventdb "$(mktemp -d "$work/db.XXXXXX")" \
    --broadcast-test-interval 0 --http 127.0.0.1:0 --stats-interval 0 \
    --author-connections-per-address 100000 --subscriber-connections-per-address 100000 \
    2>"$log" &
  broker=$!
  pids+=("$broker")
  recv="" bcast="" http=""
  for _ in $(seq 1 200); do
    vtp_ports "$log"
    [ -n "$recv" ] && [ -n "$bcast" ] && [ -n "$http" ] && break
    sleep 0.05
  done
  cap="$(sed -n 's/.*connections: at most \([0-9]*\) authors.*/\1/p' "$log")"
  if [ "${cap:-0}" -lt $((SUBSCRIBERS + 100)) ]; then
    echo "bench-scrape: the broker takes at most ${cap:-?} subscribers (the file-descriptor limit); lower SUBSCRIBERS" >&2
    exit 1
  fi
  timeout $((hold_seconds + 60)) "$bin/vtp-bench" hold --broadcast "127.0.0.1:$bcast" \
    --subscribers "$SUBSCRIBERS" --seconds "$hold_seconds" --iamalive 60 --timeout 120 \
    >"$results/$system.hold.out" 2>"$results/$system.hold.err" &
  hold=$!
  pids+=("$hold")
  for _ in $(seq 1 1200); do
    n="$(curl -sf "http://127.0.0.1:$http/metrics" | sed -n 's/^vtp_subscribers \([0-9]*\)$/\1/p')"
    [ "${n:-0}" -ge "$SUBSCRIBERS" ] && break
    sleep 0.1
  done
  echo "   subscribers connected: ${n:-0}" >&2
  for path in metrics status healthz; do
    : >"$results/$system.$path.times"
    for _ in $(seq 1 "$SCRAPES"); do
      curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$http/$path" \
        >>"$results/$system.$path.times"
    done
    size="$(curl -sf "http://127.0.0.1:$http/$path" | wc -c)"
    echo "   GET /$path ($size bytes): $(timings "$results/$system.$path.times")"
  done
  # CPU of the event loop (the main thread) and of the endpoint's thread, idle broker.
  http_tid=""
  for t in /proc/"$broker"/task/*; do
    [ "$(cat "$t/comm")" = vtp-http ] && http_tid="${t##*/}"
  done
  for phase in quiet scraped; do
    [ "$phase" = scraped ] && start_scraper metrics status
    loop0="$(cpu_ns "$broker")" http0="$(cpu_ns "$http_tid")"
    sleep "$WINDOW"
    loop1="$(cpu_ns "$broker")" http1="$(cpu_ns "$http_tid")"
    stop_scraper
    echo "   idle, $phase ${WINDOW} s: event loop $(ms $((loop1 - loop0))) CPU, endpoint thread $(ms $((http1 - http0))) CPU, $scrapes requests"
  done
  echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for phase in quiet metrics status quiet; do
    case "$phase" in
      metrics) start_scraper metrics ;;
      status) start_scraper metrics status ;;
    esac
    timeout 300 "$bin/vtp-bench" e2e --receive "127.0.0.1:$recv" --broadcast "127.0.0.1:$bcast" \
      --subscribers 100 --rate "$RATE" --events "$EVENTS" --event "$work/event.xml" \
      --timeout 120 --pid "$broker" --label "$system-$phase" \
      >"$results/$system.$phase.out" 2>"$results/$system.$phase.err" || true
    tail -n 1 "$results/$system.$phase.out" >"$results/$system.$phase.json"
    stop_scraper
    echo "   e2e latency to $((SUBSCRIBERS + 100)) subscribers, scraping $phase ($scrapes requests): $(latency "$results/$system.$phase.json")"
  done
  kill "$hold" "$broker" 2>/dev/null || true
  wait "$hold" "$broker" 2>/dev/null || true
done
