#!/usr/bin/env bash
# Footprint benchmark (prints numbers; not a test): binary sizes per build (the embedded build
# with and without TLS), and the broker's resident memory idle and with 100 connected
# subscribers, on each runtime, with plain listeners and with TLS listeners (a throwaway P-256
# certificate from .ci/tls-certs.sh; the 100 subscribers are then TLS clients: Python's ssl).
#
#   bash .ci/footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
target="$(rustc -vV | sed -n 's/^host: //p')"

echo "== building"
cargo build --locked --release -p vtp-cli 2>&1 | tail -n 1
cp target/release/vtp target/vtp-release-all
cargo build --locked --release -p vtp-cli --no-default-features --features mio 2>&1 | tail -n 1
cp target/release/vtp target/vtp-release-mio
EMBEDDED_FEATURES=mio,tls EMBEDDED_BUILD_ONLY=1 bash .ci/embedded.sh >/dev/null 2>&1
cp "target/$target/embedded/vtp" target/vtp-embedded-tls
# The plain embedded build last: it stays in place, as .ci/embedded.sh leaves it.
EMBEDDED_BUILD_ONLY=1 bash .ci/embedded.sh >/dev/null 2>&1
cargo build --locked --release -p vtp-cli 2>&1 | tail -n 1   # leave the full build in place
pki="$(mktemp -d)"
trap 'rm -rf "$pki"' EXIT
bash .ci/tls-certs.sh "$pki"

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
et=target/vtp-embedded-tls
printf '%-58s %12s %10s\n' "$et (static, mio, tls)" "$(size "$et")" "$(mib "$(size "$et")")"
if [ "$(size "$e")" -le $((3 * 1048576)) ]; then verdict=met; else verdict=MISSED; fi
echo "target: the plain embedded build <= 3 MiB: $verdict; TLS adds $(mib $(($(size "$et") - $(size "$e"))))"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
echo
echo "== resident memory (VmRSS), vtp broker on loopback"
printf '%-22s %12s %22s\n' "build" "idle" "100 subscribers"
for build in tokio smol mio mio-static tokio+tls smol+tls mio+tls mio-static+tls; do
  db="$(mktemp -d)"; log="$(mktemp)"
  case "$build" in
    mio-static+tls) bin="$et"; rt=mio ;;
    mio-static) bin="$e"; rt=mio ;;
    *) bin=target/release/vtp; rt="${build%+tls}" ;;
  esac
  listeners=(--receive 127.0.0.1:0 --broadcast 127.0.0.1:0)
  case "$build" in
    *+tls)
      files="interface=127.0.0.1:certKey=$pki/server.pem:privateKey=$pki/server.key"
      listeners=(--receive "tls:0:$files" --broadcast "tls:0:$files")
      ;;
  esac
  "$bin" broker --runtime "$rt" --local-ivo ivo://vtp.bench/footprint \
    "${listeners[@]}" --eventdb "$db" 2>"$log" &
  pid=$!
  port=""
  for _ in $(seq 1 100); do
    port="$(listening_port "$log" subscribers)"
    [ -n "$port" ] && break
    sleep 0.05
  done
  idle="$(rss_kib "$pid")"
  # 100 subscribers: connect, read the broker's authenticate, hold the connection.
  tls_ca=""
  case "$build" in *+tls) tls_ca="$pki/ca.pem" ;; esac
  python3 - "$port" "$pid" "$tls_ca" <<'PY' >"$log.100"
import socket, ssl, struct, sys
port, pid, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca) if ca else None
def exact(s, k):
    b = b""
    while len(b) < k:
        chunk = s.recv(k - len(b))
        if not chunk:
            raise SystemExit("the broker closed a subscriber")
        b += chunk
    return b
subs = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", port))
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    exact(s, struct.unpack("!I", exact(s, 4))[0])
    subs.append(s)
with open(f"/proc/{pid}/status") as f:
    print(next(l.split()[1] for l in f if l.startswith("VmRSS:")))
PY
  with100="$(cat "$log.100")"
  printf '%-22s %9s KiB %18s KiB\n' "$build" "$idle" "$with100"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$db" "$log" "$log.100"
done
echo
echo "machine: $(nproc) cores, $(uname -sr); $(date -u +%Y-%m-%d)"
