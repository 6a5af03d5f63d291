#!/usr/bin/env bash
# Make sure Chromium (Debian's chromium package) is installed: the status page test
# (cli/tests/page.rs) loads `GET /` of a running vtp in it, headless, dumps the DOM and takes a
# screenshot. Idempotent and non-interactive (fast when installed); prints the path of the
# chromium binary on its last line.
#
# When `chromium` is missing and apt-get is there (and we are root), installs the chromium
# package (apt.sh, shared with setup_stunnel.sh and setup_gnupg.sh). Otherwise fails: the test
# needs it and never skips.
set -euo pipefail

find_chromium() { command -v chromium || command -v chromium-browser; }

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ensure chromium chromium chromium-browser
if ! path="$(find_chromium)"; then
  echo "setup_chromium.sh: chromium is not installed and cannot be installed here (needs" \
    "apt-get and root); install Debian's chromium package" >&2
  exit 1
fi
echo "chromium: $("$path" --version 2>/dev/null | head -n 1 || true)" >&2
echo "$path"
