#!/bin/bash -e
# The root file system: Debian trixie minbase plus image/packages, the board's kernel and
# firmware, then the chroot steps (image/steps/chroot/) from mmdebstrap's customize hook, which
# mounts /proc, /sys and /dev for them.
rm -rf "${WORK:?}/rootfs"
mkdir -p "$WORK/rootfs"
pkgs=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SRC_DIR/image/packages" | tr '\n' ',')
pkgs="$pkgs$KERNEL_PKG,$(echo "$BOARD_PKGS" | tr ' ' ',')"
mmdebstrap --mode=root --variant=minbase --architectures="$DEB_ARCH" \
  --components=main,non-free-firmware \
  --include="$pkgs" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --essential-hook="bash -euo pipefail '$SRC_DIR/image/steps/chroot-essential.sh' \"\$1\"" \
  --customize-hook="bash -euo pipefail '$SRC_DIR/image/steps/chroot-customize.sh' \"\$1\"" \
  "$SUITE" "$WORK/rootfs" "$MIRROR"
du -sh "$WORK/rootfs" | sed 's/^/    root file system: /'
