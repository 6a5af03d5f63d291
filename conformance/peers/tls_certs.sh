#!/usr/bin/env bash
# Test certificates for the TLS interop tests (cli/tests/interop_tls.rs), made with the openssl
# command into DIR (created if missing). ECDSA P-256 keys, PEM, unencrypted.
#
#   tls_certs.sh DIR
#
#   ca.pem ca.key                 "vtp test CA", self-signed, valid for 2 days
#   other-ca.pem other-ca.key     "vtp other CA": a second CA nobody in the tests trusts
#   server.pem server.key         localhost, 127.0.0.1 (serverAuth), by ca; CN vtp-test-server
#   author.pem author.key         CN good-author, DNS good-author (clientAuth), by ca
#   subscriber.pem subscriber.key CN good-subscriber, DNS good-subscriber (clientAuth), by ca
#   stranger.pem stranger.key     CN stranger, DNS stranger (clientAuth), by ca: a valid
#                                 certificate whose name is in no identity list
#   rogue.pem rogue.key           CN good-author, DNS good-author, by other-ca
#   expired.pem expired.key       CN good-author, DNS good-author, by ca, valid only in 2020
#
# Every certificate is signed with `openssl ca`, the one openssl 3.0 command that can set
# explicit validity dates (needed for the expired one).
set -euo pipefail

dir="${1:?usage: tls_certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"

cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ca]
default_ca = vtp_ca
[vtp_ca]
database = index.txt
new_certs_dir = issued
serial = serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[any]
commonName = supplied
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:${ENV::VTP_CERT_NAME}
authorityKeyIdentifier = keyid
EOF
export OPENSSL_CONF="$dir/openssl.cnf" VTP_CERT_NAME=unused

key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
}

# ca NAME "CN": a self-signed CA certificate NAME.pem with key NAME.key.
ca() {
  key "$1"
  openssl req -new -x509 -key "$1.key" -subj "/CN=$2" -days 2 -sha256 \
    -extensions ca_ext -out "$1.pem"
}

# leaf NAME CA EXT CN [START END]: NAME.pem (with key NAME.key) signed by CA, with the
# extensions section EXT, the subject CN (also its DNS name for client certificates), valid
# for 2 days from now or from START to END (YYYYMMDDHHMMSSZ).
leaf() {
  local name="$1" ca="$2" ext="$3" cn="$4"
  key "$name"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  rm -rf index.txt index.txt.* serial serial.* issued
  mkdir issued
  : >index.txt
  openssl rand -hex 16 >serial
  local dates=(-days 2)
  if [[ $# -ge 6 ]]; then dates=(-startdate "$5" -enddate "$6"); fi
  VTP_CERT_NAME="$cn" openssl ca -batch -notext -cert "$ca.pem" -keyfile "$ca.key" \
    -extensions "$ext" "${dates[@]}" -in "$name.csr" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr"
}

ca ca "vtp test CA"
ca other-ca "vtp other CA"
leaf server ca server_ext vtp-test-server
leaf author ca client_ext good-author
leaf subscriber ca client_ext good-subscriber
leaf stranger ca client_ext stranger
leaf rogue other-ca client_ext good-author
leaf expired ca client_ext good-author 20200101000000Z 20200201000000Z
rm -rf index.txt index.txt.* serial serial.* issued openssl.cnf
