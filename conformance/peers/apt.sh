# Sourced by the setup scripts of Debian-packaged peers (setup_stunnel.sh, setup_gnupg.sh).
#
# apt_ensure PACKAGE COMMAND...: when none of the COMMANDs is on the PATH and apt-get is there
# (and we are root), installs PACKAGE non-interactively (refreshing the package lists once if
# the first try fails). A failed install is not an error here either; the caller checks for the command after
# and fails with its own message: the tests need it and never skip.
apt_ensure() {
  local package="$1" c
  shift
  for c in "$@"; do
    command -v "$c" >/dev/null && return 0
  done
  command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]] || return 0
  echo "no $1 here: installing Debian's $package" >&2
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
    --no-install-recommends "$package")
  "${install[@]}" >&2 || { apt-get update -q >&2 && "${install[@]}" >&2; } || true
}
