#!/usr/bin/env bash
# Make sure stunnel (Debian's stunnel4, the TLS shim GCN told VTP users to deploy) is installed:
# the TLS interop tests put it between the real Comet/pygcn and vtp. Idempotent and
# non-interactive; prints the path of the stunnel binary on its last line.
#
# When `stunnel` is missing and apt-get is there (and we are root), installs the stunnel4
# package, as setup.sh does for python3-gdbm. Otherwise fails: the tests need it and never skip.
set -euo pipefail

find_stunnel() { command -v stunnel || command -v stunnel4; }

if ! find_stunnel >/dev/null; then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "no stunnel here: installing Debian's stunnel4" >&2
    apt_install() {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        stunnel4 >&2
    }
    apt_install || { apt-get update -q >&2 && apt_install; }
  fi
fi
if ! path="$(find_stunnel)"; then
  echo "setup_stunnel.sh: stunnel is not installed and cannot be installed here (needs" \
    "apt-get and root); install Debian's stunnel4 package" >&2
  exit 1
fi
echo "stunnel: $("$path" -version 2>&1 | grep -m 1 '^stunnel ' || true)" >&2
echo "$path"
