#!/bin/bash -e
# A/B images (SLOTS=ab in the board file): RAUC's system config, the keyring bundles are
# checked against, and the release file that names this root file system (the health check
# and the bundle read it). docs/IMAGE.md, "Updates".
[ "$SLOTS" = ab ] || exit 0
install -d -m 0755 "$ROOT/etc/rauc" "$ROOT/usr/lib/vantage-image/rauc"
# The slots' devices: by GPT name on a PC, by the MBR's fixed partition UUIDs on a Pi.
case "$PARTITION_TABLE" in
  gpt) a_dev=/dev/disk/by-partlabel/$SLOT_A_NAME b_dev=/dev/disk/by-partlabel/$SLOT_B_NAME ;;
  dos)
    a_dev=/dev/disk/by-partuuid/$(printf '%08x-%02x' "$DISK_ID" "$SLOT_A_PART")
    b_dev=/dev/disk/by-partuuid/$(printf '%08x-%02x' "$DISK_ID" "$SLOT_B_PART") ;;
esac
sed -e "s|@COMPATIBLE@|vantage-$IMAGE_ARCH|g" -e "s|@SLOT_A_DEV@|$a_dev|g" \
  -e "s|@SLOT_B_DEV@|$b_dev|g" "$SRC_DIR/image/files/rauc-system.conf" >"$ROOT/etc/rauc/system.conf"
# Which boot loader's environment the backend writes (/usr/lib/vantage-image/bootenv).
case "$BOOTLOADER" in
  grub) printf 'FORMAT=grub\nFILE=/boot/firmware/EFI/debian/grubenv\n' ;;
  uboot) printf 'FORMAT=uboot\nFILE=/boot/firmware/vantage.env\n' ;;
  *) echo "no A/B slot choice for boot loader $BOOTLOADER" >&2; exit 1 ;;
esac >"$ROOT/usr/lib/vantage-image/bootenv.conf"
install -m 0644 "$RAUC_KEYRING" "$ROOT/usr/lib/vantage-image/rauc/keyring.pem"
install -m 0644 "$SRC_DIR/image/files/rauc-tmpfiles.conf" "$ROOT/usr/lib/tmpfiles.d/vantage-image-rauc.conf"
# Which build this root file system is: an installed slot is on trial until this build was
# marked good once (vantage-image-health).
build=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%dT%H%M%SZ)-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
printf 'VERSION=%s\nBUILD=%s\n' "$VERSION" "$build" >"$ROOT/usr/lib/vantage-image/release"
echo "       compatible vantage-$IMAGE_ARCH, keyring $(openssl x509 -noout -subject -in "$RAUC_KEYRING" 2>/dev/null | sed 's/^subject=//'), build $build"
# Only vantage-image-health marks a slot good: a unit that marks every boot good would defeat
# the fallback (older RAUC packages ship one).
if [ -e "$ROOT/usr/lib/systemd/system/rauc-mark-good.service" ]; then
  chroot "$ROOT" systemctl mask rauc-mark-good.service
fi
chroot "$ROOT" systemctl is-enabled --quiet vantage-image-health.service ||
  { echo "vantage-image-health.service is not enabled" >&2; exit 1; }
