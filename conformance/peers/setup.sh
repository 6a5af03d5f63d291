#!/usr/bin/env bash
# Install the real VTP peers (Comet 3.1.0 broker/subscriber/sender, pygcn 1.1.3 listener)
# into a private venv. Idempotent and non-interactive; prints the venv path on its last line.
#
#   VTP_PEERS_VENV   venv location (default: <repo>/target/peers-venv)
#   VTP_PEERS_PYTHON interpreter used to create the venv (default: python3)
#
# A stamp file inside the venv records the requirement list; when it matches and the
# venv still imports the pinned versions, nothing is done.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VTP_PEERS_VENV:-$repo/target/peers-venv}"
py="${VTP_PEERS_PYTHON:-python3}"

reqs=(
  "Comet==3.1.0"
  "pygcn==1.1.3"
  "Twisted==26.10.0"
  "lxml==6.1.3"
  "zope.interface==8.7"
)
stamp="$venv/.vtp-peers-stamp"
want="$(printf '%s\n' "${reqs[@]}")"

# Confirms that the venv's interpreter sees exactly the pinned distributions.
check_versions() {
  "$venv/bin/python" - "${reqs[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: want {want}, have {have}")
if bad:
    print("version mismatch: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/twistd" \
      && -x "$venv/bin/comet-sendvo" ]] && check_versions 2>/dev/null; then
  echo "peers venv up to date" >&2
  echo "$venv"
  exit 0
fi

echo "setting up peers venv in $venv" >&2
# zope.interface 8.7 requires Python >= 3.11 (Twisted 26.10.0: >= 3.10).
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: $py is $("$py" -V 2>&1); the pins need Python >= 3.11" >&2
  exit 1
fi
rm -f "$stamp"
if ! "$venv/bin/python" -c '' 2>/dev/null; then
  # missing, or left behind by an interpreter that is gone: (re)create it
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv --clear "$venv"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet "${reqs[@]}"
check_versions
# Dependency conflicts are reported by pip check; fail loudly rather than run a broken set.
"$venv/bin/python" -m pip check >&2
# Smoke test: the twistd plugin and pygcn must load. Running `twistd comet --help` once
# also writes Twisted's plugin caches (twisted/plugins/dropin.cache, comet/plugins/
# dropin.cache) now, rather than racily from the first brokers a test starts in parallel.
"$venv/bin/python" -c 'import comet, gcn.voeventclient, twisted.plugins.comet_plugin' >&2
(cd "$venv" && "$venv/bin/twistd" comet --help >/dev/null)
printf '%s\n' "$want" >"$stamp"
echo "$venv"
