#!/usr/bin/env bash
# Install the real VTP peers (Comet 3.1.0 broker/subscriber/sender, pygcn 1.1.3 listener) and
# kafka-python 3.0.12 (the independent Kafka client of the vtp-kafka tests, with zstandard and
# lz4 for its zstd and lz4 batches)
# into a private venv, stunnel (setup_stunnel.sh), the TLS shim the TLS interop tests put
# in front of them, and GnuPG (setup_gnupg.sh), the signature tests' OpenPGP peer. Idempotent and non-interactive; prints the venv path on its last line.
#
#   VTP_PEERS_VENV   venv location (default: <repo>/target/peers-venv)
#   VTP_PEERS_PYTHON interpreter used to create the venv (default: the first of python3 and
#                    /usr/bin/python3 that has the gdbm module, see below)
#
# A stamp file inside the venv records the requirement list and Comet's dbm backend; when it
# matches and the venv still imports the pinned versions, nothing is done.
#
# Comet keeps its seen-event database with Python's `dbm`. An interpreter built without gdbm
# (pyenv's, unless libgdbm-dev was there when it was built) falls back to dbm.dumb, and worse:
# when Comet's thread pool calls dbm.open for the first time from two threads at once, CPython
# can hand one of them the half-imported, failed `dbm.gnu` module, and from then on Comet naks
# every event with "module 'dbm.gnu' has no attribute 'open'" (seen in CI). So the venv is made
# from an interpreter with gdbm (Debian's python3-gdbm is installed when none has it, as a
# production Debian host would have it), and a .pth file initialises dbm once at interpreter
# start, before any thread exists, whichever backend it ends up with.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VTP_PEERS_VENV:-$repo/target/peers-venv}"

reqs=(
  "Comet==3.1.0"
  "pygcn==1.1.3"
  "Twisted==26.10.0"
  "lxml==6.1.3"
  "zope.interface==8.7"
  "kafka-python==3.0.12"
  "zstandard==0.25.0"
  "lz4==4.4.5"
)
stamp="$venv/.vtp-peers-stamp"

reqs_text="$(printf '%s\n' "${reqs[@]}")"

# stunnel and gnupg are system packages, not part of the venv: checked (and installed) every
# time.
bash "$here/setup_stunnel.sh" >/dev/null
bash "$here/setup_gnupg.sh" >/dev/null

# True when interpreter $1 is >= 3.11 and has the gdbm module.
has_gdbm() {
  "$1" -c 'import sys, dbm.gnu; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# Sets `py` (the interpreter to build the venv with) and `backend` (gnu or dumb).
pick_python() {
  if [[ -n "${VTP_PEERS_PYTHON:-}" ]]; then
    py="$VTP_PEERS_PYTHON"
    if has_gdbm "$py"; then backend=gnu; else backend=dumb; fi
    return
  fi
  local c
  for c in python3 /usr/bin/python3; do
    if command -v "$c" >/dev/null && has_gdbm "$c"; then
      py="$c" backend=gnu
      return
    fi
  done
  py=python3 backend=dumb
}

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

# Up to date: same pins, the dbm backend as recorded (gdbm must still import when recorded),
# the warm-up module in place, the pinned versions installed.
up_to_date() {
  [[ -f "$stamp" && -x "$venv/bin/twistd" && -x "$venv/bin/comet-sendvo" ]] || return 1
  local recorded
  recorded="$(cat "$stamp")"
  if [[ "$recorded" == "$reqs_text"$'\n'"dbm: gnu" ]]; then
    has_gdbm "$venv/bin/python" || return 1
  elif [[ "$recorded" != "$reqs_text"$'\n'"dbm: dumb" ]]; then
    return 1
  fi
  "$venv/bin/python" -c 'import vtp_dbm_warmup' 2>/dev/null && check_versions 2>/dev/null
}

if up_to_date; then
  echo "peers venv up to date" >&2
  echo "$venv"
  exit 0
fi

echo "setting up peers venv in $venv" >&2
pick_python
if [[ "$backend" == dumb && -z "${VTP_PEERS_PYTHON:-}" ]] && command -v apt-get >/dev/null \
    && [[ "$(id -u)" == 0 ]]; then
  # Debian's python3 gets gdbm from a package of its own (and venv from another).
  echo "no python3 with gdbm here: installing Debian's python3-gdbm" >&2
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      python3-gdbm python3-venv >&2
  }
  apt_install || { apt-get update -q >&2 && apt_install; } || true
  pick_python
fi
if [[ "$backend" == dumb ]]; then
  echo "setup.sh: warning: $py has no gdbm module (install Debian's python3-gdbm, or set" \
    "VTP_PEERS_PYTHON to an interpreter that has it); Comet will keep its event database" \
    "with dbm.dumb, which is slower than on a production host" >&2
fi
# zope.interface 8.7 requires Python >= 3.11 (Twisted 26.10.0: >= 3.10).
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: $py is $("$py" -V 2>&1); the pins need Python >= 3.11" >&2
  exit 1
fi
echo "interpreter: $py ($("$py" -V 2>&1)), Comet's dbm backend: $backend" >&2
want="$reqs_text"$'\n'"dbm: $backend"

rm -f "$stamp"
if ! "$venv/bin/python" -c '' 2>/dev/null \
    || { [[ "$backend" == gnu ]] && ! has_gdbm "$venv/bin/python"; }; then
  # missing, left behind by an interpreter that is gone, or made from one without gdbm while
  # one with gdbm is at hand: (re)create it
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv --clear "$venv"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet "${reqs[@]}"
check_versions
# Dependency conflicts are reported by pip check; fail loudly rather than run a broken set.
"$venv/bin/python" -m pip check >&2

# The dbm warm-up (see the top of this file): a module, and a .pth line that imports it at
# every interpreter start.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat >"$site/vtp_dbm_warmup.py" <<'EOF'
"""Written by vtp's conformance/peers/setup.sh: initialise dbm's backend table once, at
interpreter start, before any thread exists. CPython's first dbm.open imports every backend;
when two threads do that at once and a backend is missing, one of them can keep the
half-imported module (Comet then fails every event with "module 'dbm.gnu' has no attribute
'open'")."""
import dbm

try:
    dbm.open("/nonexistent-vtp-dbm-warmup/db", "r")
except Exception:  # no such file: only the backend table was wanted
    pass
EOF
echo "import vtp_dbm_warmup" >"$site/vtp_dbm_warmup.pth"

# Smoke test: the twistd plugin and pygcn must load. Running `twistd comet --help` once
# also writes Twisted's plugin caches (twisted/plugins/dropin.cache, comet/plugins/
# dropin.cache) now, rather than racily from the first brokers a test starts in parallel.
"$venv/bin/python" -c 'import comet, gcn.voeventclient, twisted.plugins.comet_plugin' >&2
(cd "$venv" && "$venv/bin/twistd" comet --help >/dev/null)
printf '%s\n' "$want" >"$stamp"
echo "$venv"
