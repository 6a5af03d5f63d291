#!/usr/bin/env bash
# Footprint benchmark (prints numbers; not a test): binary sizes per build, and the broker's
# resident memory idle and with 100 connected subscribers, on each runtime.
#
#   bash .ci/footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(rustc -vV | sed -n 's/^host: //p')"

echo "== building"
cargo build --locked --release -p vtp-cli 2>&1 | tail -n 1
cp target/release/vtp target/vtp-release-all
cargo build --locked --release -p vtp-cli --no-default-features --features mio 2>&1 | tail -n 1
cp target/release/vtp target/vtp-release-mio
EMBEDDED_BUILD_ONLY=1 bash .ci/embedded.sh >/dev/null 2>&1
cargo build --locked --release -p vtp-cli 2>&1 | tail -n 1   # leave the full build in place

size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
stripped() { local t; t="$(mktemp)"; strip -o "$t" "$1"; size "$t"; rm -f "$t"; }
echo
echo "== binary sizes"
printf '%-58s %12s %10s\n' "build" "bytes" ""
for b in target/vtp-release-all target/vtp-release-mio; do
  printf '%-58s %12s %10s\n' "$b (stripped)" "$(stripped "$b")" "$(mib "$(stripped "$b")")"
done
e="target/$target/embedded/vtp"
printf '%-58s %12s %10s\n' "$e (static, mio only)" "$(size "$e")" "$(mib "$(size "$e")")"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
echo
echo "== resident memory (VmRSS), vtp broker on loopback"
printf '%-11s %12s %22s\n' "build" "idle" "100 subscribers"
for build in tokio smol mio mio-static; do
  db="$(mktemp -d)"; log="$(mktemp)"
  case "$build" in
    mio-static) bin="$e"; rt=mio ;;
    *) bin=target/release/vtp; rt="$build" ;;
  esac
  "$bin" broker --runtime "$rt" --local-ivo ivo://vtp.bench/footprint \
    --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --eventdb "$db" 2>"$log" &
  pid=$!
  port=""
  for _ in $(seq 1 100); do
    port="$(sed -n 's/.*listening for subscribers on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)"
    [ -n "$port" ] && break
    sleep 0.05
  done
  idle="$(rss_kib "$pid")"
  # 100 subscribers: connect, read the broker's authenticate, hold the connection.
  python3 - "$port" "$pid" <<'PY' >"$log.100"
import socket, struct, sys
port, pid = int(sys.argv[1]), sys.argv[2]
subs = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", port))
    n = struct.unpack("!I", s.recv(4, socket.MSG_WAITALL))[0]
    s.recv(n, socket.MSG_WAITALL)
    subs.append(s)
with open(f"/proc/{pid}/status") as f:
    print(next(l.split()[1] for l in f if l.startswith("VmRSS:")))
PY
  with100="$(cat "$log.100")"
  printf '%-11s %9s KiB %18s KiB\n' "$build" "$idle" "$with100"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$db" "$log" "$log.100"
done
echo
echo "machine: $(nproc) cores, $(uname -sr); $(date -u +%Y-%m-%d)"
