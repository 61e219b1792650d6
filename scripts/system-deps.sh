#!/usr/bin/env bash
# System packages the tests need: podman (+runc, debootstrap) for Molecule and
# the e2e fleet, PostgreSQL for the collector tests. Idempotent and quiet.
set -euo pipefail
need=()
for pkg in podman runc debootstrap postgresql uidmap slirp4netns gnupg; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
