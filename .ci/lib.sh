# What the CI and benchmark scripts share. Source it from the repository's root
# (`. .ci/lib.sh`), under `set -euo pipefail`.

# scratch NAME: makes a fresh directory $work (named after NAME) and an empty list $pids; at
# exit, every process in $pids is killed and waited for, and $work removed.
scratch() {
  work="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  pids=()
  trap scratch_cleanup EXIT
}
scratch_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# listening_port LOG WHAT: the 127.0.0.1 port that the vtp logging to LOG says it listens on
# for WHAT (`authors`, `subscribers`, plain or TLS; `http` for the HTTP endpoint); nothing
# until it says so.
listening_port() {
  case "$2" in
    http) sed -n 's/.*HTTP endpoint on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$1" ;;
    *) sed -n "s/.*listening for $2 on \(tls:\)\{0,1\}127.0.0.1:\([0-9]*\).*/\2/p" "$1" ;;
  esac | awk 'NR == 1'
}

# vtp_ports LOG: sets recv, bcast and http to the ports the vtp logging to LOG listens on for
# authors, subscribers and HTTP (each empty until it says so).
vtp_ports() {
  recv="$(listening_port "$1" authors)"
  bcast="$(listening_port "$1" subscribers)"
  http="$(listening_port "$1" http)"
}
