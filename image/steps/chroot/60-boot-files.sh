#!/bin/bash -e
# /boot/firmware is the FAT partition's mount point: its files go to the boot partition
# (30-boot-partition.sh), the directory stays empty in the root file system.
rm -rf "${WORK:?}/boot"
mkdir -p "$WORK/boot"
cp -r "$ROOT/boot/firmware/." "$WORK/boot/"
find "$ROOT/boot/firmware" -mindepth 1 -delete
# Package lists and caches: the device fetches fresh ones before it installs anything.
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log
