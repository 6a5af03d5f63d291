#!/usr/bin/env bash
# Makes a throwaway test PKI with `openssl` in DIR (created if needed): an ECDSA P-256 CA
# (ca.pem, ca.key) and an ECDSA P-256 server certificate for localhost and 127.0.0.1 signed by
# it (server.pem, server.key), valid for 2 days. For tests and benchmarks on loopback only.
#
#   bash .ci/tls-certs.sh DIR
set -euo pipefail
dir="${1:?usage: tls-certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
{
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=vtp test CA" -out ca.pem
  openssl ecparam -name prime256v1 -genkey -noout -out server.key
  openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile server.ext -out server.pem
} >openssl.log 2>&1 || { cat openssl.log >&2; echo "tls-certs.sh: openssl failed" >&2; exit 1; }
