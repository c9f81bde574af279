#!/usr/bin/env bash
# Builds the flashable image (SD card, USB stick or disk) from Debian 13 (trixie) packages:
#   dist/vantage-<version>-<arch>.img.xz and dist/vantage-<version>-<arch>.img.xz.sha256
#
#   scripts/build-image.sh                   arm64 (Raspberry Pi 3/4/Zero 2 W, 64-bit)
#   scripts/build-image.sh --arch amd64      PCs and virtual machines (UEFI or BIOS)
#   scripts/build-image.sh --deb FILE        use this vantage .deb instead of building one
#   scripts/build-image.sh --keep            keep the work directory (build/image-<arch>/)
#   scripts/build-image.sh --bundle          also the update bundle of the same root file
#                                            system (scripts/build-bundle.sh), signed
#   MIRROR=http://host/debian scripts/build-image.sh   another Debian mirror
#   WORK_DIR=dir scripts/build-image.sh                another work directory
#   SETUP_CODE=code scripts/build-image.sh             this build's setup code (default: random)
#
# Runs as root (mmdebstrap --mode=root). The steps are image/steps/NN-*.sh, run in order with
# one progress line each; the ones that work inside the new root file system are
# image/steps/chroot/NN-*.sh, run by mmdebstrap's hooks. Design: docs/IMAGE.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

arch=arm64
deb=""
keep=0 bundle=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="${2:?--arch needs a value: arm64 or amd64}"; shift 2 ;;
    --arch=*) arch="${1#*=}"; shift ;;
    --deb) deb="${2:?--deb needs a file}"; shift 2 ;;
    --deb=*) deb="${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    --bundle) bundle=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$arch" in
  arm64|amd64) ;;
  armhf) echo "build-image.sh: no armhf image any more (the armhf .deb stays; why: docs/IMAGE.md)" >&2; exit 2 ;;
  *) echo "build-image.sh: --arch must be arm64 or amd64, not '$arch'" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "build-image.sh: run as root (mmdebstrap --mode=root, mkfs)" >&2; exit 1; }

# Everything the steps read, in one place.
export IMAGE_ARCH=$arch
# shellcheck source=/dev/null
. "image/arch/$arch.conf"
export DEB_ARCH KERNEL_PKG BOARD_PKGS CONSOLES BOOTLOADER PARTITION_TABLE INITRAMFS_MODULES
export SLOTS ROOT_SLOT_MIB DATA_MIB SLOT_A_PART SLOT_B_PART DATA_PART
export DISK_ID=${DISK_ID:-}
export SRC_DIR=$PWD
export VERSION
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
export WORK=${WORK_DIR:-$PWD/build/image-$arch}
export DIST=$PWD/dist
export IMAGE_NAME=vantage-$VERSION-$arch
export VANTAGE_DEB=$deb
export MIRROR=${MIRROR:-http://deb.debian.org/debian}
export SUITE=trixie
# File times, the FAT volume id and the disk id follow the last commit, so two builds of one
# commit lay out the same partitions.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
# Filesystem labels: the kernel command line, fstab and the expansion service find the
# partitions by them (FAT labels are at most 11 characters).
export BOOT_LABEL=VANTAGEBOOT ROOT_LABEL=VANTAGEROOT DATA_LABEL=VANTAGEDATA
# GPT partition names of the A/B layout: GRUB's kernel command line (root=PARTLABEL=...), RAUC's
# slots and the initramfs find the partitions by them, since both slots carry the same file
# system (and label). An MBR (the Pi) has no names: DISK_ID and the partition numbers instead.
export SLOT_A_NAME=vantage-a SLOT_B_NAME=vantage-b DATA_NAME=vantage-data
# The RAUC keyring the image trusts (docs/IMAGE.md, "Keys"): RAUC_CERT= names the production
# certificate; without it the development key in build/rauc-dev/ (made on first use) signs.
if [ "$SLOTS" = ab ]; then
  eval "$(scripts/rauc-keys.sh --env)"
  export RAUC_KEY RAUC_CERT RAUC_KEYRING
fi

mkdir -p "$WORK" "$DIST"
if [ "$keep" = 0 ]; then
  trap 'rm -rf "$WORK"' EXIT
fi

start=$(date +%s)
steps=(image/steps/[0-9][0-9]-*.sh)
n=${#steps[@]}
i=0
for step in "${steps[@]}"; do
  i=$((i + 1))
  t0=$(date +%s)
  echo "==> [$i/$n] $(basename "$step" .sh)"
  bash -euo pipefail "$step"
  echo "    [$i/$n] done in $(($(date +%s) - t0)) s"
  # scripts/build-bundle.sh needs the root file system only.
  [ "$(basename "$step" .sh)" = "${STOP_AFTER:-}" ] && { echo "==> stopped after $STOP_AFTER"; exit 0; }
done
if [ "$bundle" = 1 ]; then
  scripts/build-bundle.sh --arch "$arch" --rootfs "$WORK/root.ext4"
fi
echo "==> built $DIST/$IMAGE_NAME.img.xz in $(($(date +%s) - start)) s"
