#!/usr/bin/env bash
# Every test of the project, from a fresh clone on a fresh machine: the README's test command.
# Installs what it needs (Rust components, the Python venv with real Comet, pygcn and
# kafka-python, stunnel, GnuPG, Chromium, the tansu Kafka-protocol broker: built once per machine,
# cached),
# then runs formatting, lints and the whole test suite (unit, property, flow, socket and interop
# tests, TLS interop included).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "real peers: Comet 3.1.0, pygcn 1.1.3, kafka-python 3.0.12 venv; stunnel; GnuPG"
VTP_PEERS_VENV="$(bash conformance/peers/setup.sh | tail -n 1)"
export VTP_PEERS_VENV
echo "venv: $VTP_PEERS_VENV"

step "Chromium (Debian's chromium), the status page's headless browser"
VTP_CHROMIUM="$(bash conformance/peers/setup_chromium.sh | tail -n 1)"
export VTP_CHROMIUM
echo "chromium: $VTP_CHROMIUM"

step "Kafka-protocol broker: tansu 0.6.0 (built once per machine into ~/.cache/vtp, 15-35 min)"
VTP_TANSU="$(bash conformance/peers/setup_tansu.sh | tail -n 1)"
export VTP_TANSU
echo "tansu: $VTP_TANSU"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo test"
cargo test --workspace --locked 2>&1 | tee target/test-output.txt

step "embedded build: static mio-only vtp, alone under chroot, conformance suite"
bash .ci/embedded.sh 2>&1 | tee target/embedded-output.txt

step "conformance suite over TLS (ssl: listeners, openssl-made P-256 CA) on every runtime"
bash .ci/conformance-tls.sh 2>&1 | tee target/conformance-tls-output.txt

# One closing line for CI: totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     /^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped/ { p += $1; f += $3; i += $5 }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' \
  target/test-output.txt target/embedded-output.txt target/conformance-tls-output.txt
