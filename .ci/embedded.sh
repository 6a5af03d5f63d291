#!/usr/bin/env bash
# The embedded build: a static, stripped, size-optimised, mio-only `vtp`, run ALONE in an empty
# directory under chroot as a broker on loopback, and checked with the conformance suite.
#
#   bash .ci/embedded.sh            # build, chroot, conformance
#   EMBEDDED_BUILD_ONLY=1 bash .ci/embedded.sh   # just build; prints the binary path
#   EMBEDDED_FEATURES=mio,tls ...   # the same build with TLS (default features: mio)
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
target="$(rustc -vV | sed -n 's/^host: //p')"

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --profile embedded --target "$target" -p vtp-cli \
  --no-default-features --features "${EMBEDDED_FEATURES:-mio}"
bin="target/$target/embedded/vtp"
echo "embedded binary: $bin ($(stat -c %s "$bin") bytes)"
file "$bin" 2>/dev/null | grep -q "static" || { echo "not a static binary: $(file "$bin")"; exit 1; }
[ -n "${EMBEDDED_BUILD_ONLY:-}" ] && exit 0

cargo build --locked -p vtp-conformance --bin vtp-conformance
root="$(mktemp -d)"
log="$(mktemp)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$root" "$log"; }
trap cleanup EXIT
cp "$bin" "$root/vtp"
if [ "$(id -u)" = 0 ]; then jail=(chroot "$root"); else jail=(unshare -r chroot "$root"); fi
"${jail[@]}" /vtp broker --runtime mio --local-ivo ivo://vtp.test/embedded \
  --receive 127.0.0.1:0 --broadcast 127.0.0.1:0 --eventdb /eventdb \
  --iamalive-interval 1 --receive-timeout 2 --broadcast-test-interval 0 2>"$log" &
pid=$!
port() { listening_port "$log" "$1"; }
for _ in $(seq 1 100); do
  [ -n "$(port authors)" ] && [ -n "$(port subscribers)" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "the chrooted broker exited"; exit 1; }
  sleep 0.1
done
[ -n "$(port subscribers)" ] || { cat "$log"; echo "the chrooted broker did not start"; exit 1; }
echo "chrooted broker (only /vtp in its root) on ports $(port authors) / $(port subscribers)"
# xpath-filter: the embedded build has no XPath engine (a listed deviation, issue #5).
target/debug/vtp-conformance --receive "127.0.0.1:$(port authors)" \
  --broadcast "127.0.0.1:$(port subscribers)" --iamalive 1 --deadline 2 --skip xpath-filter
