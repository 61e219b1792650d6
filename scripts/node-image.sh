#!/usr/bin/env bash
# Build the Podman image that plays a fleet node in Molecule and the e2e tests:
#   localhost/inferfleet-node:<release>   (default release: bookworm)
# debootstrap --variant=minbase + `podman import`, systemd as PID 1.
#
# Cached: the image carries a label with the hash of this script and
# scripts/containers.conf; it is rebuilt only when that hash changes (or with
# --force). Safe to run concurrently (flock).
#
# usage: scripts/node-image.sh [bookworm|jammy|noble] [--force] [--print-name]
# env:   INFERFLEET_NODE_MIRROR  Debian/Ubuntu mirror for debootstrap
#        INFERFLEET_NODE_CACHE   debootstrap .deb cache (default /var/cache/inferfleet/debootstrap)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

release=bookworm force=0 print_name=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --print-name) print_name=1 ;;
    bookworm|jammy|noble) release=$arg ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "node-image.sh: unknown argument '$arg' (expected bookworm|jammy|noble, --force, --print-name)" >&2; exit 2 ;;
  esac
done

image=localhost/inferfleet-node:$release
if ((print_name)); then echo "$image"; exit 0; fi

case $release in
  bookworm) mirror=${INFERFLEET_NODE_MIRROR:-http://deb.debian.org/debian}
            keyring=/usr/share/keyrings/debian-archive-keyring.gpg
            components=main extra="libpython3.11" ;;
  jammy|noble) mirror=${INFERFLEET_NODE_MIRROR:-http://archive.ubuntu.com/ubuntu}
            keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
            components=main,universe
            if [[ $release == jammy ]]; then extra="libpython3.10"; else extra="libpython3.12"; fi ;;
esac

# what a node needs before Ansible touches it: python for Ansible (+python3-apt
# for the apt modules), venv for the agent, systemd as init, sudo, lspci/kmod for
# GPU detection, gnupg/ca-certificates for repository keys, curl for health checks
packages=python3,python3-apt,python3-venv,python3-pip,$extra,systemd,systemd-sysv,dbus,sudo,ca-certificates,gnupg,curl,pciutils,kmod,iproute2,procps,less

hash=$(cat "$0" "$here/containers.conf" | sha256sum | cut -c1-16)
label=io.inferfleet.node-image.hash

lockdir=/var/lock
[[ -w $lockdir ]] || lockdir=${TMPDIR:-/tmp}
exec 9>"$lockdir/inferfleet-node-image-$release.lock"
flock 9

current=$(podman image inspect --format "{{index .Labels \"$label\"}}" "$image" 2>/dev/null || true)
if [[ $force -eq 0 && $current == "$hash" ]]; then
  echo "node-image: $image is up to date ($hash)"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "node-image: debootstrap is missing: run 'make system-deps'" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "node-image: debootstrap needs root" >&2; exit 1; }
if [[ ! -r $keyring ]]; then
  echo "node-image: $keyring is missing (apt-get install ubuntu-keyring / debian-archive-keyring)" >&2; exit 1
fi
if ! curl -fsS -m 15 -o /dev/null "$mirror/dists/$release/Release"; then
  echo "node-image: $mirror/dists/$release/Release is not reachable: set INFERFLEET_NODE_MIRROR to a reachable mirror" >&2
  exit 1
fi

cache=${INFERFLEET_NODE_CACHE:-/var/cache/inferfleet/debootstrap-$release}
mkdir -p "$cache"
rootfs=$(mktemp -d /var/tmp/inferfleet-node-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$rootfs"' EXIT

echo "node-image: debootstrap $release into $rootfs (takes about 2 minutes)"
start=$SECONDS
debootstrap --variant=minbase --components="$components" --keyring="$keyring" \
  --cache-dir="$cache" --include="$packages" "$release" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# container-friendly systemd: no getty, no udev, no time sync, empty machine-id
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-timesyncd.service \
            systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
: >"$rootfs/etc/machine-id"
echo inferfleet-node >"$rootfs/etc/hostname"
# don't let dpkg start services in a chroot-like context half-way; the roles
# handle services themselves
rm -f "$rootfs/usr/sbin/policy-rc.d"
# keep the package lists (apt works without an update) but not the .debs
rm -rf "$rootfs"/var/cache/apt/archives/*.deb

old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
tar -C "$rootfs" --numeric-owner -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL=SIGRTMIN+3' \
  --change 'ENV container=podman' \
  --change "LABEL $label=$hash" \
  --message "inferfleet node ($release, debootstrap minbase)" \
  - "$image" >/dev/null
# drop the previous build of this tag only (never other images)
if [[ -n $old_id ]]; then podman rmi "$old_id" >/dev/null 2>&1 || true; fi
echo "node-image: built $image in $((SECONDS - start)) s"
