#!/usr/bin/env bash
# The conformance suite over TLS against `vtp broker` on every runtime (tokio, smol, mio), in
# parallel: a throwaway P-256 CA and a server certificate for localhost and 127.0.0.1 are made
# with `openssl` in a temporary directory (.ci/tls-certs.sh); each broker gets ssl:/tls:
# listeners with them, and `vtp-conformance --tls-ca` verifies the broker's certificate by DNS name on the receive
# address (localhost) and by IP address on the broadcast address (127.0.0.1).
#
#   bash .ci/conformance-tls.sh       # uses target/debug/{vtp,vtp-conformance}, builds them
set -euo pipefail
cd "$(dirname "$0")/.."

# Two builds, as conformance/tests/vtp.rs and .ci/embedded.sh make them: built together, the
# packages' features would be unified differently and everything below them rebuilt.
cargo build --locked -p vtp-cli --bin vtp
cargo build --locked -p vtp-conformance --bin vtp-conformance
bin=target/debug
. .ci/lib.sh
scratch vtp-tls-conformance

bash .ci/tls-certs.sh "$work"

# The receive address is given as localhost (its certificate is checked by DNS name) when
# localhost resolves to 127.0.0.1 first, as the brokers listen there only.
recv_host=localhost
if [ "$(getent ahosts localhost 2>/dev/null | awk 'NR == 1 { print $1 }')" != 127.0.0.1 ]; then
  echo "localhost does not resolve to 127.0.0.1 first here: verifying by IP address only"
  recv_host=127.0.0.1
fi

files="certKey=$work/server.pem:privateKey=$work/server.key"
for rt in tokio smol mio; do
  mkdir "$work/db-$rt"
  "$bin/vtp" broker --runtime "$rt" --local-ivo "ivo://vtp.test/tls-$rt" \
    --receive "ssl:0:interface=127.0.0.1:$files" --broadcast "tls:0:interface=127.0.0.1:$files" \
    --eventdb "$work/db-$rt" --iamalive-interval 1 --receive-timeout 2 \
    --broadcast-test-interval 0 2>"$work/broker-$rt.log" &
  pids+=($!)
done

port() { listening_port "$work/broker-$1.log" "$2"; }
runs=()
for i in 0 1 2; do
  rt=(tokio smol mio)
  rt="${rt[$i]}"
  for _ in $(seq 1 100); do
    [ -n "$(port "$rt" authors)" ] && [ -n "$(port "$rt" subscribers)" ] && break
    kill -0 "${pids[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$(port "$rt" subscribers)" ]; then
    cat "$work/broker-$rt.log"
    echo "vtp broker --runtime $rt with TLS listeners did not start"
    exit 1
  fi
  "$bin/vtp-conformance" --tls-ca "$work/ca.pem" --receive "$recv_host:$(port "$rt" authors)" \
    --broadcast "127.0.0.1:$(port "$rt" subscribers)" --iamalive 1 --deadline 2 \
    >"$work/suite-$rt.txt" 2>&1 &
  runs+=($!)
done

status=0
for i in 0 1 2; do
  rt=(tokio smol mio)
  rt="${rt[$i]}"
  if wait "${runs[$i]}"; then
    echo "conformance over TLS, vtp broker --runtime $rt: every scenario passed"
    tail -n 1 "$work/suite-$rt.txt"
  else
    echo "conformance over TLS, vtp broker --runtime $rt: FAILED"
    cat "$work/suite-$rt.txt"
    echo "--- broker log (last 30 lines)"
    tail -n 30 "$work/broker-$rt.log"
    status=1
  fi
done
exit "$status"
