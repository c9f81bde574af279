#!/bin/bash -e
# Every host tool the build needs, checked before anything is written; each missing one is
# named with the Debian package that brings it.
missing=()
need() { command -v "$1" >/dev/null || missing+=("$1 (apt install $2)"); }
need mmdebstrap mmdebstrap
need mkfs.ext4 e2fsprogs
need e2fsck e2fsprogs
need mkfs.vfat dosfstools
need mcopy mtools
need mmd mtools
need sfdisk fdisk
need xz xz-utils
need sha256sum coreutils
need arch-test arch-test
need dpkg-deb dpkg
[ "$BOOTLOADER" = uboot ] && need mkimage u-boot-tools
[ "$SLOTS" = ab ] && need gzip gzip
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing host tool: %s\n' "${missing[@]}" >&2
  exit 1
fi
# Foreign packages' maintainer scripts run under qemu-user through binfmt_misc.
if ! arch-test "$DEB_ARCH" >/dev/null 2>&1; then
  echo "this host cannot run $DEB_ARCH binaries: apt install qemu-user-static binfmt-support" >&2
  echo "(and mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc if it is not mounted)" >&2
  exit 1
fi
echo "    host tools present; $DEB_ARCH binaries run here"
