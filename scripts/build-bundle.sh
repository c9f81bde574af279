#!/usr/bin/env bash
# Builds a signed RAUC update bundle of the A/B image's root file system:
#   dist/vantage-<version>-<arch>.raucb
#
#   scripts/build-bundle.sh --arch amd64|arm64      the image steps up to the root file system,
#                                                   then the bundle (root, like build-image.sh)
#   scripts/build-bundle.sh --rootfs FILE           a root file system already built (the
#                                                   root.ext4 of `build-image.sh --keep`); its
#                                                   /etc/rauc/system.conf names the architecture
#     --version V     the bundle's version (default: the workspace's)
#     --out FILE      another output file
#   RAUC_KEY=... RAUC_CERT=... [RAUC_KEYRING=...]   the production key (a file or PKCS#11 URI,
#                                                   outside the tree); default: the development
#                                                   key of scripts/rauc-keys.sh
#
# `scripts/build-image.sh --arch amd64 --bundle` makes the image and the bundle of one build.
# The bundle is a verity bundle: one root file system image for the slot class "rootfs",
# compatible "vantage-<arch>". Host needs: rauc, squashfs-tools, e2fsprogs (debugfs).
# Design and key handling: docs/IMAGE.md, "Updates".
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
arch="" rootfs="" version="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --rootfs) rootfs=${2:?--rootfs needs a file}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-bundle.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "${arch:-arm64}" in
  amd64 | arm64) ;;
  *) echo "build-bundle.sh: --arch must be amd64 or arm64, not '$arch'" >&2; exit 2 ;;
esac
for t in rauc mksquashfs debugfs; do
  command -v "$t" >/dev/null || { echo "build-bundle.sh: $t missing (apt install rauc squashfs-tools e2fsprogs)" >&2; exit 1; }
done
[ -n "$version" ] || version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
if [ -n "$rootfs" ] && [ -s "$rootfs" ]; then
  # The bundle's compatible string is the one the root file system's RAUC expects, so a bundle
  # can only ever be made for the image it was built for.
  compatible=$(debugfs -R 'cat /etc/rauc/system.conf' "$rootfs" 2>/dev/null | sed -n 's/^compatible=//p' | head -1)
  [ -n "$compatible" ] || { echo "build-bundle.sh: $rootfs has no /etc/rauc/system.conf: not an A/B root" >&2; exit 1; }
  [ -z "$arch" ] || [ "$compatible" = "vantage-$arch" ] ||
    { echo "build-bundle.sh: $rootfs is for $compatible, not vantage-$arch (--arch)" >&2; exit 1; }
  arch=${compatible#vantage-}
fi
arch=${arch:-arm64}
out=${out:-dist/vantage-$version-$arch.raucb}

if [ -z "$rootfs" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "build-bundle.sh: run as root (it runs the image steps)" >&2; exit 1; }
  work=${WORK_DIR:-$PWD/build/image-$arch}
  # The same steps as the image, stopping once the root file system is made.
  WORK_DIR=$work STOP_AFTER=40-root-partition scripts/build-image.sh --arch "$arch" --keep
  rootfs=$work/root.ext4
fi
[ -s "$rootfs" ] || { echo "build-bundle.sh: no root file system $rootfs" >&2; exit 1; }
release=$(debugfs -R 'cat /usr/lib/vantage-image/release' "$rootfs" 2>/dev/null)
build=$(sed -n 's/^BUILD=//p' <<<"$release")
[ -n "$build" ] || { echo "build-bundle.sh: $rootfs has no /usr/lib/vantage-image/release: not an A/B root" >&2; exit 1; }

eval "$(scripts/rauc-keys.sh --env)"
content=$(mktemp -d)
trap 'rm -rf "$content"' EXIT
cp --sparse=always "$rootfs" "$content/root.ext4"
cat >"$content/manifest.raucm" <<MANIFEST
[update]
compatible=vantage-$arch
version=$version
build=$build
description=Vantage $version ($arch)

[bundle]
format=verity

[image.rootfs]
filename=root.ext4
MANIFEST
mkdir -p "$(dirname "$out")"
rm -f "$out"
t0=$(date +%s)
rauc bundle --cert="$RAUC_CERT" --key="$RAUC_KEY" --keyring="$RAUC_KEYRING" "$content" "$out" >/dev/null
echo "build-bundle.sh: $out: $(($(stat -c %s "$out") / 1048576)) MiB, version $version, build $build, in $(($(date +%s) - t0)) s"
