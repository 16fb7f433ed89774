#!/usr/bin/env bash
# Builds the ovs-egress image without a registry: a Debian root filesystem made by debootstrap
# from a pinned release (Open vSwitch, iptables, iproute2, curl from Debian's packages), plus the
# release build of `ovs-egress` and the containers' entrypoints (images/scripts/), assembled by
# buildah (vfs storage in a private directory, never the machine's container storage) into an
# OCI archive: target/image/ovs-egress-<version>.oci.tar, named ovs-egress:<version> (the
# chart's default image). Load it into a registry with, for example,
#   skopeo copy oci-archive:target/image/ovs-egress-0.1.0.oci.tar docker://REGISTRY/ovs-egress:0.1.0
#
# The root filesystem is cached per release and package list (debootstrap takes minutes):
#   cache: $OVS_EGRESS_ROOTFS_CACHE (default /var/cache/ovs-egress/rootfs)
#   --rootfs-only: build (or find) the cached root filesystem and print its path on stdout.
# Needs root, debootstrap and buildah (Debian packages).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
release=bookworm
mirror=http://deb.debian.org/debian
packages=ca-certificates,curl,iproute2,iptables,kmod,openvswitch-switch,procps
cache="${OVS_EGRESS_ROOTFS_CACHE:-/var/cache/ovs-egress/rootfs}"
fail() { echo "build-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap and buildah need it)"
for tool in debootstrap buildah; do
  command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install $tool"
done

key=$(printf '%s\n' "$release" "$mirror" "$packages" | sha256sum | cut -c1-16)
rootfs="$cache/$release-$key"
if [ ! -e "$rootfs/.complete" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock-$key"
  flock 9
  if [ ! -e "$rootfs/.complete" ]; then
    echo "build-image: debootstrap $release ($packages) into $rootfs" >&2
    tmp="$rootfs.tmp.$$"
    rm -rf "$tmp"
    debootstrap --variant=minbase --include="$packages" "$release" "$tmp" "$mirror" >&2 ||
      { rm -rf "$tmp"; fail "debootstrap of $release failed (see above)"; }
    # No package caches or lists in the image.
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    touch "$tmp/.complete"
    rm -rf "$rootfs"
    mv "$tmp" "$rootfs"
  fi
  exec 9>&-
fi
if [ "${1:-}" = "--rootfs-only" ]; then echo "$rootfs"; exit 0; fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
(cd "$root" && cargo build --release --locked -p ovs-egress --bin ovs-egress -p ovs-egress-cni --bin ovs-egress-cni) >&2
binary="$root/target/release/ovs-egress"

out="$root/target/image"
store="$out/storage"
mkdir -p "$out"
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }
ctr=$(bah from --name "ovs-egress-build-$$" scratch)
# The storage only serves this build: the archive is the result.
trap 'bah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$store"' EXIT
mnt=$(bah mount "$ctr")
cp -a "$rootfs/." "$mnt/"
rm -f "$mnt/.complete"
install -m 0755 "$binary" "$mnt/usr/local/bin/ovs-egress"
install -m 0755 "$root/target/release/ovs-egress-cni" "$mnt/usr/local/bin/ovs-egress-cni"
for script in "$root"/images/scripts/*; do
  install -m 0755 "$script" "$mnt/usr/local/bin/$(basename "$script")"
done
bah umount "$ctr" >/dev/null
bah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd '["ovs-egress", "--help"]' \
  --label "org.opencontainers.image.title=ovs-egress" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.base.name=debian:$release" \
  "$ctr"
archive="$out/ovs-egress-$version.oci.tar"
rm -f "$archive"
bah commit --quiet --format oci "$ctr" "oci-archive:$archive:ovs-egress:$version" >/dev/null
echo "build-image: $archive (ovs-egress:$version)" >&2
