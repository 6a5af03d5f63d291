#!/usr/bin/env bash
# Side-by-side benchmark (prints numbers; not a test): vtp on each runtime (tokio, smol, mio)
# and Comet 3.1.0, started with the same settings on loopback and driven by the same load
# generator (vtp-bench), plus a null relay (writes each frame to every subscriber, nothing else)
# as the physical ceiling for fan-out. Prints ONE table: absolute numbers, vtp/Comet ratios,
# the share of the null relay, and which targets are met.
#
#   bash .ci/bench.sh
#
# Takes about 5-8 minutes on 2 cores (Comet is the slow part), plus the release build. Every
# broker is started fresh for each workload (new event database, no state carried over) and
# stopped right after it; everything listens on 127.0.0.1 only; every run is bounded by a
# timeout; all processes are killed on exit.
#
# Workloads (same for every broker; override with the environment variables shown):
#   submit   SUBMIT_EVENTS (3000) distinct 10 KB GCN events from 8 concurrent authors, one
#            connection per event (as comet-sendvo does); submissions/s.
#   fan-out  100 subscribers; FANOUT_EVENTS (600) events as fast as they are delivered, at most
#            32 events not yet at every subscriber; deliveries/s, broker CPU per event.
#   paced    100 subscribers; PACED_EVENTS (300) events at 20 events/s; latency from the start
#            of each submission to its receipt at each subscriber (p50/p99/max).
#   hold     HOLD_SUBSCRIBERS (10000) subscribers held HOLD_SECONDS (15) with an iamalive
#            period of HOLD_IAMALIVE (5) s; each must get every iamalive within the period plus
#            1 s, and still be connected at the end; broker RSS with all of them connected.
# Broker CPU is utime+stime of the broker process (exact per-thread schedstat sums where the
# kernel has them) sampled by vtp-bench before and after the measured phase.
#
# Settings shared by every broker: --local-ivo ivo://vtp.bench/broker, receive and broadcast
# on 127.0.0.1 (Comet through conformance/peers/comet_twistd.py), author and subscriber
# whitelists 127.0.0.0/8, a fresh event database, test events off, default log level,
# iamalive period 60 s (HOLD_IAMALIVE in the hold workload).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

SUBMIT_EVENTS="${SUBMIT_EVENTS:-3000}"
FANOUT_EVENTS="${FANOUT_EVENTS:-600}"
PACED_EVENTS="${PACED_EVENTS:-300}"
HOLD_SUBSCRIBERS="${HOLD_SUBSCRIBERS:-10000}"
HOLD_SECONDS="${HOLD_SECONDS:-15}"
HOLD_IAMALIVE="${HOLD_IAMALIVE:-5}"
SYSTEMS="${SYSTEMS:-tokio smol mio comet null}"

# 10,000 subscribers need 10,000 descriptors in the generator and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((HOLD_SUBSCRIBERS + 100)) ]; then
  echo "bench: ulimit -n is $(ulimit -n); the hold workload needs $((HOLD_SUBSCRIBERS + 100))" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/vtp-bench.XXXXXX")"
broker_pid=""
stop_broker() {
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
cleanup() {
  stop_broker
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
cargo build --locked --release -p vtp-cli -p vtp-conformance --bins 2>&1 | tail -n 1 >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
echo "== Comet 3.1.0 venv" >&2
venv="$(bash conformance/peers/setup.sh | tail -n 1)"

# start SYSTEM IAMALIVE: starts a fresh broker; sets broker_pid, recv, bcast.
start() {
  local system="$1" iamalive="$2" log="$work/$1.log" db
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
      "$bin/vtp" broker --runtime "$system" --local-ivo ivo://vtp.bench/broker \
        --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --eventdb "$db" \
        --broadcast-test-interval 0 --iamalive-interval "$iamalive" \
        --author-whitelist 127.0.0.0/8 --subscriber-whitelist 127.0.0.0/8 2>"$log" &
      ;;
  esac
  broker_pid=$!
  recv="" bcast=""
  for _ in $(seq 1 300); do
    if [ "$system" = comet ]; then
      recv="$(sed -n 's/.*VOEventReceiverFactory (WhitelistingFactory) starting on \([0-9]*\).*/\1/p' "$log")"
      bcast="$(sed -n 's/.*VOEventBroadcasterFactory (WhitelistingFactory) starting on \([0-9]*\).*/\1/p' "$log")"
    else
      recv="$(sed -n 's/.*listening for authors on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")"
      bcast="$(sed -n 's/.*listening for subscribers on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")"
    fi
    [ -n "$recv" ] && [ -n "$bcast" ] && return 0
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: $system did not start; its log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# run WORKLOAD SYSTEM ARGS...: runs vtp-bench against the current broker; saves its JSON line.
run() {
  local workload="$1" system="$2"
  shift 2
  local out="$work/$workload.$system.json"
  # vtp-bench bounds itself (--timeout); `timeout` is the backstop.
  if ! timeout 400 "$bin/vtp-bench" "$@" --pid "$broker_pid" --label "$system" \
      >"$work/$workload.$system.out" 2>"$work/$workload.$system.err"; then
    echo "bench: $workload on $system did not complete as expected (details in the table)" >&2
  fi
  tail -n 1 "$work/$workload.$system.out" >"$out"
  python3 - "$out" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["submissions_per_s", "deliveries_per_s", "latency_p99_ms", "broker_cpu_us_per_event",
        "on_time", "broker_rss_kib", "ok"]
print("   ", r["mode"], r["label"], " ".join(f"{k}={r[k]}" for k in keys if k in r))
PY
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for system in $SYSTEMS; do
  [ "$system" = null ] && continue
  echo "== submit: $system" >&2
  start "$system" 60 || continue
  # Resident memory before any traffic.
  awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status" >"$work/idle.$system"
  run submit "$system" submit --receive "127.0.0.1:$recv" --events "$SUBMIT_EVENTS" \
    --authors 8 --timeout 300
  stop_broker
done
for system in $SYSTEMS; do
  echo "== fan-out: $system" >&2
  start "$system" 60 || continue
  stream=""
  [ "$system" = null ] && stream="--stream"
  run fanout "$system" e2e --receive "127.0.0.1:$recv" --broadcast "127.0.0.1:$bcast" \
    --subscribers 100 --rate 0 --events "$FANOUT_EVENTS" --window 32 $stream --timeout 120
  stop_broker
done
for system in $SYSTEMS; do
  echo "== paced: $system" >&2
  start "$system" 60 || continue
  stream=""
  [ "$system" = null ] && stream="--stream"
  run paced "$system" e2e --receive "127.0.0.1:$recv" --broadcast "127.0.0.1:$bcast" \
    --subscribers 100 --rate 20 --events "$PACED_EVENTS" $stream --timeout 120
  stop_broker
done
for system in $SYSTEMS; do
  [ "$system" = null ] && continue
  echo "== hold: $system" >&2
  start "$system" "$HOLD_IAMALIVE" || continue
  run hold "$system" hold --broadcast "127.0.0.1:$bcast" --subscribers "$HOLD_SUBSCRIBERS" \
    --seconds "$HOLD_SECONDS" --iamalive "$HOLD_IAMALIVE" --slack 1 --timeout 120
  stop_broker
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
machine="$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr)"
python3 - "$work" "$SYSTEMS" "$machine" "$load_before" "$load_after" "$HOLD_IAMALIVE" <<'PY'
import json, os, sys, datetime

work, systems, machine, load_before, load_after, hold_iamalive = sys.argv[1:7]
systems = systems.split()
vtps = [s for s in systems if s not in ("comet", "null")]
names = {"tokio": "vtp tokio", "smol": "vtp smol", "mio": "vtp mio", "comet": "Comet 3.1.0",
         "null": "null relay"}

def load(workload, system):
    try:
        with open(os.path.join(work, f"{workload}.{system}.json")) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None

R = {w: {s: load(w, s) for s in systems} for w in ("submit", "fanout", "paced", "hold")}
idle = {}
for s in systems:
    try:
        idle[s] = int(open(os.path.join(work, f"idle.{s}")).read())
    except (OSError, ValueError):
        idle[s] = None

def get(w, s, k):
    r = R[w].get(s)
    return None if r is None else r.get(k)

def num(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"

def ratio(a, b):
    return None if a in (None, 0) or b in (None, 0) else a / b

def times(x):
    return "-" if x is None else f"{x:.1f}x"

rows = []
def row(label, cells):
    rows.append((label, [cells.get(s, "") for s in systems]))
def head(label):
    rows.append((label, None))

n = {w: next((get(w, s, "events") for s in systems if get(w, s, "events")), None) for w in R}
head(f"submit: {n['submit']} events, 8 authors, one connection each")
row("  submissions/s", {s: num(get("submit", s, "submissions_per_s")) for s in systems})
row("  vtp / Comet", {s: times(ratio(get("submit", s, "submissions_per_s"),
                                      get("submit", "comet", "submissions_per_s")))
                      for s in vtps})
row("  receipt p99 ms", {s: num(get("submit", s, "receipt_p99_ms"), 2) for s in systems})
row("  broker CPU us/event", {s: num(get("submit", s, "broker_cpu_us_per_event"))
                              for s in systems})
row("  acked / events", {s: f"{get('submit', s, 'acked')}/{get('submit', s, 'events')}"
                         for s in systems if R["submit"].get(s)})

head(f"fan-out: 100 subscribers, {n['fanout']} events, window 32")
dps = {s: get("fanout", s, "deliveries_per_s") for s in systems}
row("  deliveries/s", {s: num(dps[s]) for s in systems})
row("  vtp / Comet", {s: times(ratio(dps[s], dps.get("comet"))) for s in vtps + ["null"]})
row("  % of null relay", {s: "-" if ratio(dps[s], dps.get("null")) is None
                          else f"{100 * ratio(dps[s], dps.get('null')):.0f}%"
                          for s in vtps + ["comet"]})
cpu_f = {s: get("fanout", s, "broker_cpu_us_per_event") for s in systems}
row("  broker CPU us/event", {s: num(cpu_f[s]) for s in systems})
row("  Comet / vtp CPU", {s: times(ratio(cpu_f.get("comet"), cpu_f[s])) for s in vtps})
def busy(who, s):
    cpu, wall = get("fanout", s, who), get("fanout", s, "wall_ms")
    return "-" if cpu is None or not wall else f"{100 * cpu / wall:.0f}%"
row("  broker CPU busy", {s: busy("broker_cpu_ms", s) for s in systems})
row("  generator CPU busy", {s: busy("bench_cpu_ms", s) for s in systems})

head(f"paced: 100 subscribers, 20 events/s, {n['paced']} events")
row("  latency p50 ms", {s: num(get("paced", s, "latency_p50_ms"), 2) for s in systems})
row("  latency p99 ms", {s: num(get("paced", s, "latency_p99_ms"), 2) for s in systems})
row("  latency max ms", {s: num(get("paced", s, "latency_max_ms"), 2) for s in systems})
row("  Comet / vtp p99", {s: times(ratio(get("paced", "comet", "latency_p99_ms"),
                                          get("paced", s, "latency_p99_ms"))) for s in vtps})
cpu_p = {s: get("paced", s, "broker_cpu_us_per_event") for s in systems}
row("  broker CPU us/event", {s: num(cpu_p[s]) for s in systems})
row("  Comet / vtp CPU", {s: times(ratio(cpu_p.get("comet"), cpu_p[s])) for s in vtps})

hold_s = {s: get("hold", s, "subscribers") for s in systems}
head(f"hold: iamalive every {hold_iamalive} s, 1 s slack")
row("  subscribers", {s: num(hold_s[s]) for s in systems if s != "null"})
row("  connected in s", {s: num((get("hold", s, "connect_ms") or 0) / 1000, 1)
                         for s in systems if R["hold"].get(s)})
row("  held / on time", {s: f"{get('hold', s, 'held')}/{get('hold', s, 'on_time')}"
                         for s in systems if R["hold"].get(s)})
row("  longest iamalive gap s", {s: num((get("hold", s, "gap_max_ms") or 0) / 1000, 2)
                                 for s in systems if R["hold"].get(s)})
row("  broker RSS MiB", {s: num((get("hold", s, "broker_rss_kib") or 0) / 1024, 1)
                         for s in systems if R["hold"].get(s)})
head("memory")
row("  idle RSS MiB", {s: num(idle[s] / 1024, 1) for s in systems if idle.get(s)})

width = max(len(l) for l, _ in rows) + 2
col = max(12, *(len(names[s]) + 2 for s in systems))
print()
print(f"vtp side-by-side benchmark, {datetime.date.today().isoformat()}")
print(f"machine: {machine}; load average before {load_before}, after {load_after}")
print()
print(" " * width + "".join(f"{names[s]:>{col}}" for s in systems))
for label, cells in rows:
    if cells is None:
        print(label)
    else:
        print(f"{label:<{width}}" + "".join(f"{c:>{col}}" for c in cells))

print()
print("targets (each vtp runtime)")
def verdict(name, values, ok):
    parts = []
    for s in vtps:
        v = values.get(s)
        parts.append(f"{s} {v[1]} {'met' if v[0] else 'MISSED'}" if v else f"{s} -")
    print(f"  {name}: " + "; ".join(parts))

sub_c = get("submit", "comet", "submissions_per_s")
verdict("submissions/s with 8 authors >= 30x Comet",
        {s: (r >= 30, f"{r:.1f}x") for s in vtps
         if (r := ratio(get("submit", s, "submissions_per_s"), sub_c)) is not None}, None)
verdict("deliveries/s at 100 subscribers >= 70% of the null relay",
        {s: (r >= 0.7, f"{100 * r:.0f}%") for s in vtps
         if (r := ratio(dps[s], dps.get("null"))) is not None}, None)
verdict("p99 end-to-end <= 2 ms at 100 subscribers, 20 events/s",
        {s: (p <= 2.0, f"{p:.2f} ms") for s in vtps
         if (p := get("paced", s, "latency_p99_ms")) is not None}, None)
for label, cpu in (("fan-out", cpu_f), ("paced", cpu_p)):
    verdict(f"broker CPU per event at 100 subscribers <= 1/50 of Comet's ({label})",
            {s: (r >= 50, f"1/{r:.0f}") for s in vtps
             if (r := ratio(cpu.get("comet"), cpu[s])) is not None}, None)
held_n = next((hold_s[s] for s in vtps if hold_s.get(s)), "-")
verdict(f"{held_n} subscribers held, iamalives on time, <= 150 MB RSS",
        {s: (get("hold", s, "on_time") == hold_s[s] and
             get("hold", s, "broker_rss_kib") * 1024 <= 150e6,
             f"{get('hold', s, 'on_time')} on time, "
             f"{get('hold', s, 'broker_rss_kib') * 1024 / 1e6:.0f} MB")
         for s in vtps if R["hold"].get(s)}, None)
PY
