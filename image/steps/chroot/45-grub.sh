#!/bin/bash -e
# A PC starts from the FAT partition, which is also its EFI system partition, whatever its
# firmware; the binaries come from the image's own Debian packages (image/arch/amd64.conf).
#   UEFI: EFI/BOOT/BOOTX64.EFI, the removable-media path every UEFI firmware tries with no boot
#         entry in its NVRAM (none can be written when flashing). It is Debian's shim, signed by
#         the Microsoft UEFI CA that PCs trust, so Secure Boot may stay on; shim starts
#         grubx64.efi beside it (Debian's signed GRUB, which checks the signed kernel through
#         shim) and mmx64.efi when keys are to be enrolled. No fbx64.efi: shim would then try to
#         write NVRAM boot entries instead of starting GRUB.
#   BIOS: boot.img in the MBR and a GRUB core image with every module it needs in the BIOS
#         boot partition (both written by image/steps/55-bios-boot.sh).
# Both read EFI/debian/grub.cfg (image/files/grub.cfg), which boots root slot A or B as
# EFI/debian/grubenv says. On the device only that environment changes (RAUC, the health check);
# kernels come with the slot's root file system.
[ "$BOOTLOADER" = grub ] || exit 0
efi=$ROOT/boot/firmware/EFI
install -d -m 0755 "$efi/BOOT" "$efi/debian"
install -m 0644 "$ROOT/usr/lib/shim/shimx64.efi.signed" "$efi/BOOT/BOOTX64.EFI"
install -m 0644 "$ROOT/usr/lib/shim/mmx64.efi.signed" "$efi/BOOT/mmx64.efi"
install -m 0644 "$ROOT/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$efi/BOOT/grubx64.efi"
consoles=$(for c in $CONSOLES; do printf 'console=%s ' "$c"; done)
sed -e "s|@SLOT_A_NAME@|$SLOT_A_NAME|g" -e "s|@SLOT_B_NAME@|$SLOT_B_NAME|g" \
  -e "s|@CONSOLES@|${consoles% }|g" "$SRC_DIR/image/files/grub.cfg" >"$efi/debian/grub.cfg"
# The slot choice (grub.cfg's header): slot A good and first, slot B empty until an update.
# grub-editenv makes the 1 KiB block GRUB's save_env rewrites in place; the device keeps a
# second copy, written one after the other (/usr/lib/vantage-image/bootenv).
rm -f "$efi/debian/grubenv" "$efi/debian/grubenv.bak"
chroot "$ROOT" grub-editenv /boot/firmware/EFI/debian/grubenv create
chroot "$ROOT" grub-editenv /boot/firmware/EFI/debian/grubenv set \
  ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
cp "$efi/debian/grubenv" "$efi/debian/grubenv.bak"

# The BIOS core image. Its prefix names partition 1 of the disk the BIOS started from, so no
# search by label can pick another disk's copy; every module grub.cfg uses is built in (there
# are no module files on the disk to load).
rm -rf "${WORK:?}/bios"
mkdir -p "$WORK/bios"
chroot "$ROOT" grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -o /tmp/vantage-core.img \
  -p '(,gpt1)/EFI/debian' \
  biosdisk part_gpt part_msdos fat ext2 normal configfile linux echo test regexp serial \
  terminal search search_label search_fs_uuid ls cat halt reboot loadenv
mv "$ROOT/tmp/vantage-core.img" "$WORK/bios/core.img"
cp "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/bios/boot.img"
echo "       EFI/BOOT/BOOTX64.EFI (shim $(chroot "$ROOT" dpkg-query -W -f '${Version}' shim-signed))," \
  "grubx64.efi, BIOS core image $(($(stat -c %s "$WORK/bios/core.img") / 1024)) KiB"
