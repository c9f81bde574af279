#!/bin/bash -e
# mmdebstrap essential hook: runs after Debian's essential packages, before the rest. $1 is the
# new root.
root=$1
# A small initramfs: the modules that find the root partition on a Pi (SD, USB) or a VM
# (virtio), not every driver Debian has (MODULES=most takes minutes under emulation and ~30 MB).
# A PC image (INITRAMFS_MODULES=most in its board file) keeps Debian's set: PCs' disk
# controllers are too many to list.
install -D -m 0644 "$SRC_DIR/image/files/initramfs.conf" \
  "$root/etc/initramfs-tools/conf.d/vantage-image.conf"
if [ "$INITRAMFS_MODULES" = list ]; then
  install -D -m 0644 "$SRC_DIR/image/files/initramfs-modules" \
    "$root/usr/share/initramfs-tools/modules.d/vantage-image"
else
  sed -i -e "s/^MODULES=.*/MODULES=$INITRAMFS_MODULES/" \
    -e "1s/.*/# MODULES from the board file (image\/arch\/$DEB_ARCH.conf), not a short list./" \
    "$root/etc/initramfs-tools/conf.d/vantage-image.conf"
fi
# Build the initramfs once, at the end (chroot/50-initramfs.sh), instead of at every package
# trigger: it is the slowest step under emulation.
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# diverted while the image is built\nexit 0\n' >"$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
