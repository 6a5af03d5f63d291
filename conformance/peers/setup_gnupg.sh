#!/usr/bin/env bash
# Make sure GnuPG (Debian's gnupg, the `gpg` command) is installed: the signature tests
# (sig/tests/) use it as the independent OpenPGP peer that makes keys, signs VOEvents by the
# Comet convention and verifies what vtp signs. Idempotent and non-interactive; prints the
# path of the gpg binary on its last line.
#
# When `gpg` is missing and apt-get is there (and we are root), installs the gnupg package
# (apt.sh, shared with setup_stunnel.sh). Otherwise fails: the tests need it and never skip.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ensure gnupg gpg
if ! path="$(command -v gpg)"; then
  echo "setup_gnupg.sh: gpg is not installed and cannot be installed here (needs apt-get" \
    "and root); install Debian's gnupg package" >&2
  exit 1
fi
echo "gpg: $("$path" --version | head -n 1)" >&2
echo "$path"
