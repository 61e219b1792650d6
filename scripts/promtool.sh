#!/usr/bin/env bash
# promtool (Prometheus's configuration and rules checker) from Debian's `prometheus`
# package, unpacked under build/promtool: nothing is installed, no service starts.
# Prints the binary's path. Idempotent.
set -euo pipefail
dest=${1:-build/promtool}
bin="$dest/usr/bin/promtool"
if [[ -x $bin ]]; then echo "$bin"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >/dev/null
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1)
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p "$dest/usr/bin"
cp "$tmp/x/usr/bin/promtool" "$bin"
echo "$bin"
