#!/usr/bin/env bash
# Make sure tansu, a Kafka-protocol broker from crates.io (Apache-2.0), is built: the Kafka
# bridge tests run it on loopback with its in-memory storage. Idempotent and non-interactive;
# prints the path of the tansu binary on its last line.
#
# Apache Kafka itself cannot be installed on these machines (not in Debian, no download site
# reachable); tansu speaks the protocol and installs from crates.io. Its build compiles about
# 400 crates (20-35 minutes on 2 cores), so the binary is cached outside the clone, keyed by
# version:
#
#   VTP_CACHE_DIR   cache root (default: $XDG_CACHE_HOME/vtp, else ~/.cache/vtp)
#   VTP_TANSU       a tansu binary to use instead (nothing is built)
#
# The `dynostore` feature is what lets `--storage-engine memory://...` start.
set -euo pipefail

version=0.6.0
if [[ -n "${VTP_TANSU:-}" ]]; then
  [[ -x "$VTP_TANSU" ]] || { echo "setup_tansu.sh: VTP_TANSU=$VTP_TANSU is not executable" >&2; exit 1; }
  echo "$VTP_TANSU"
  exit 0
fi
cache="${VTP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vtp}/tansu-$version"
bin="$cache/bin/tansu"
if [[ ! -x "$bin" ]]; then
  echo "building tansu $version into $cache (once per machine; about 20-35 minutes on 2 cores)" >&2
  mkdir -p "$cache"
  # A lock, so two test runs on one machine do not build it twice at once.
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -x "$bin" ]]; then
    CARGO_TARGET_DIR="$cache/build" cargo install tansu --version "$version" --locked \
      --features dynostore --root "$cache" >&2
    rm -rf "$cache/build"
  fi
fi
echo "tansu: $("$bin" --version 2>&1 | head -n 1)" >&2
echo "$bin"
