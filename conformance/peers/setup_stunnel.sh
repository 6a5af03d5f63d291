#!/usr/bin/env bash
# Make sure stunnel (Debian's stunnel4, the TLS shim GCN told VTP users to deploy) is installed:
# the TLS interop tests put it between the real Comet/pygcn and vtp. Idempotent and
# non-interactive; prints the path of the stunnel binary on its last line.
#
# When `stunnel` is missing and apt-get is there (and we are root), installs the stunnel4
# package (apt.sh, shared with setup_gnupg.sh). Otherwise fails: the tests need it and never skip.
set -euo pipefail

find_stunnel() { command -v stunnel || command -v stunnel4; }

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ensure stunnel4 stunnel stunnel4
if ! path="$(find_stunnel)"; then
  echo "setup_stunnel.sh: stunnel is not installed and cannot be installed here (needs" \
    "apt-get and root); install Debian's stunnel4 package" >&2
  exit 1
fi
echo "stunnel: $("$path" -version 2>&1 | grep -m 1 '^stunnel ' || true)" >&2
echo "$path"
