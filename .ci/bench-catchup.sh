#!/usr/bin/env bash
# Catch-up benchmark (prints numbers; not a test): EVENTS (10000) distinct 10 KB GCN events are
# submitted to an upstream `vtp broker --http` (which archives them), then a `vtp listen` that
# has never run starts with `--catch-up URL --catch-up-start all` and fetches them all from the
# archive API. Target: the 10,000 missed events caught up in 2 s or less.
#
#   bash .ci/bench-catchup.sh
#
# Two figures, best of REPEAT (3) runs (each with a fresh listener state):
#   fetch      the listener's own line "N events fetched ... in X s": pages fetched, decoded
#              and handed to the node (checked, deduplicated, forwarded to handlers);
#   committed  from the listener's launch to its catch-up position (the state file) reaching
#              the archive's newest event: every event handled and its seen-index record
#              durable (process start-up and the first request included).
# The listener's handler is `--stdout xml0` into /dev/null (the cheapest real handler). Each
# round also prints the CPU time the listener and the upstream spent (on a shared machine the
# wall times above are inflated by other work; CPU time is not).
# Needs the archive (cargo feature `archive`, `--http` on the upstream) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${EVENTS:-10000}"
REPEAT="${REPEAT:-3}"

cargo build --locked --release -p vtp-cli -p vtp-conformance --bins 2>&1 | tail -n 1 >&2
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"

. .ci/lib.sh
scratch vtp-bench-catchup

# The upstream: receive, broadcast, HTTP (archive), all on ephemeral loopback ports.
log="$work/upstream.log"
"$bin/vtp" broker --local-ivo ivo://vtp.bench/upstream --eventdb "$work/upstream" \
  --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --http 127.0.0.1:0 \
  --broadcast-test-interval 0 2>"$log" &
upid=$!
pids+=("$upid")
tck="$(getconf CLK_TCK)"
# cpu PID: utime + stime of the process so far, in seconds.
cpu() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
recv="" bcast="" http=""
for _ in $(seq 1 300); do
  vtp_ports "$log"
  [ -n "$recv" ] && [ -n "$bcast" ] && [ -n "$http" ] && break
  sleep 0.05
done
if [ -z "$http" ]; then
  echo "bench-catchup: the upstream did not start:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
url="http://127.0.0.1:$http"

last_seq() {
  curl -fsS "$url/api/events?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_seq"] or 0)'
}

echo "== machine: $(nproc) cores ($(uname -m)), shared"
echo "== setup: $EVENTS events submitted to the upstream (vtp-bench, 8 authors)"
timeout 600 "$bin/vtp-bench" submit --receive "127.0.0.1:$recv" --events "$EVENTS" --authors 8 \
  >"$work/submit.out" 2>&1 || { cat "$work/submit.out" >&2; exit 1; }
for _ in $(seq 1 600); do
  [ "$(last_seq)" -ge "$EVENTS" ] && break
  sleep 0.1
done
newest="$(last_seq)"
if [ "$newest" -lt "$EVENTS" ]; then
  echo "bench-catchup: the archive holds $newest events, not $EVENTS" >&2
  exit 1
fi
echo "   archive: last_seq $newest"

state_name="catch-up-$(printf '%s' "$url" | sed 's/[^A-Za-z0-9.-]/_/g').seq"
best_fetch="" best_commit=""
for round in $(seq 1 "$REPEAT"); do
  db="$work/listen-$round"
  mkdir -p "$db"
  llog="$work/listen-$round.log"
  up_before="$(cpu "$upid")"
  start="$(date +%s.%N)"
  "$bin/vtp" listen "127.0.0.1:$bcast" --eventdb "$db" --catch-up "$url" \
    --catch-up-start all --stdout xml0 >/dev/null 2>"$llog" &
  lpid=$!
  pids+=("$lpid")
  done_at=""
  for _ in $(seq 1 6000); do
    pos="$(sed -n 's/^after \([0-9]*\)$/\1/p' "$db/$state_name" 2>/dev/null || true)"
    if [ -n "$pos" ] && [ "$pos" -ge "$newest" ]; then
      done_at="$(date +%s.%N)"
      l_cpu="$(cpu "$lpid")"
      up_cpu="$(python3 -c "print(f'{$(cpu "$upid") - $up_before:.3f}')")"
      break
    fi
    sleep 0.01
  done
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  if [ -z "$done_at" ]; then
    echo "bench-catchup: round $round: the listener did not catch up:" >&2
    tail -n 20 "$llog" >&2
    exit 1
  fi
  commit="$(python3 -c "print(f'{$done_at - $start:.3f}')")"
  fetch="$(sed -n 's/.*catch-up from .*: \([0-9]*\) events fetched .* in \([0-9.]*\) s.*/\1 \2/p' "$llog" | head -n 1)"
  echo "   round $round: fetched ${fetch% *} events in ${fetch#* } s; committed ${newest} after ${commit} s from launch; CPU: listener ${l_cpu} s, upstream (API) ${up_cpu} s"
  best_fetch="$(python3 -c "a='$best_fetch'; b=${fetch#* }; print(b if not a else min(float(a), b))")"
  best_commit="$(python3 -c "a='$best_commit'; b=$commit; print(b if not a else min(float(a), b))")"
done
target="met"
python3 -c "import sys; sys.exit(0 if $best_commit <= 2.0 else 1)" || target="NOT met"
echo "catch-up of $newest missed events: fetch ${best_fetch} s, committed ${best_commit} s from launch (best of $REPEAT); target <= 2 s: $target"
