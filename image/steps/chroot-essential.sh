#!/bin/bash -e
# mmdebstrap essential hook: runs after Debian's essential packages, before the rest. $1 is the
# new root.
root=$1
# A small initramfs: the modules that find the root partition on a Pi (SD, USB) or a VM
# (virtio), not every driver Debian has (MODULES=most takes minutes under emulation and ~30 MB).
install -D -m 0644 "$SRC_DIR/image/files/initramfs-modules" \
  "$root/usr/share/initramfs-tools/modules.d/vantage-image"
install -D -m 0644 "$SRC_DIR/image/files/initramfs.conf" \
  "$root/etc/initramfs-tools/conf.d/vantage-image.conf"
# Build the initramfs once, at the end (chroot/50-initramfs.sh), instead of at every package
# trigger: it is the slowest step under emulation.
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# diverted while the image is built\nexit 0\n' >"$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
