#!/bin/bash -e
# The disk: the boot partition at 4 MiB (erase-block aligned), the root partition (slot A) right
# after it, always partitions 1 and 2 (fstab and the first-boot growth go by label and by "the
# partition / is on", but grub.cfg and boot.cmd name the slots' partitions).
#   dos (Pi): an MBR; every Pi boots from it, GPT only the Pi 4 and later.
#   gpt (PC): the boot partition typed as the EFI system partition, the root partition as
#   "Linux root (x86-64)", and a BIOS boot partition (number 3, in the gap at 1-4 MiB) for the
#   GRUB core image that image/steps/55-bios-boot.sh writes. 1 MiB at the end holds the backup
#   GPT; the first boot's growpart moves it to the end of the real disk.
img="$WORK/$IMAGE_NAME.img"
boot_mib=$(cat "$WORK/boot.mib")
root_mib=$(cat "$WORK/root.mib")
start_mib=4
total_mib=$((start_mib + boot_mib + root_mib))
rm -f "$img"
case "$PARTITION_TABLE" in
  dos)
    diskid=$(printf '0x%08x' $((SOURCE_DATE_EPOCH & 0xffffffff)))
    tail=""
    if [ "$SLOTS" = ab ]; then
      # A/B on an MBR: slot B and the data partition are primary partitions 3 and 4 (the data
      # partition last, so that it can grow). The disk id is fixed: RAUC's system.conf names
      # the slots by partition UUID (DISK_ID-NN), and a bundle of another build must name the
      # same ones.
      [ "$SLOT_A_PART/$SLOT_B_PART/$DATA_PART" = 2/3/4 ] ||
        { echo "an MBR A/B disk has its slots on 2 and 3 and data on 4" >&2; exit 1; }
      diskid=$DISK_ID
      b_start=$(((start_mib + boot_mib + root_mib) * 2048))
      tail="start=$b_start, size=$((ROOT_SLOT_MIB * 2048)), type=83
start=$((b_start + ROOT_SLOT_MIB * 2048)), size=$((DATA_MIB * 2048)), type=83"
      total_mib=$((total_mib + ROOT_SLOT_MIB + DATA_MIB))
    fi
    truncate -s "${total_mib}M" "$img"
    sfdisk --quiet "$img" <<SFDISK
label: dos
label-id: $diskid
unit: sectors
start=$((start_mib * 2048)), size=$((boot_mib * 2048)), type=c, bootable
start=$(((start_mib + boot_mib) * 2048)), size=$((root_mib * 2048)), type=83
$tail
SFDISK
    ;;
  gpt)
    p2_name=$ROOT_LABEL
    if [ "$SLOTS" = ab ]; then
      total_mib=$((total_mib + ROOT_SLOT_MIB + DATA_MIB))
      p2_name=$SLOT_A_NAME
    fi
    truncate -s "$((total_mib + 1))M" "$img"
    # Disk and partition GUIDs from the commit time too: two builds lay out the same disk.
    guid() { printf '%08x-%04x-4%03x-8000-%012x' $((SOURCE_DATE_EPOCH & 0xffffffff)) "$1" "$1" "$SOURCE_DATE_EPOCH"; }
    sfdisk --quiet "$img" <<SFDISK
label: gpt
label-id: $(guid 0)
unit: sectors
${img}1 : start=$((start_mib * 2048)), size=$((boot_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(guid 1), name="$BOOT_LABEL"
${img}2 : start=$(((start_mib + boot_mib) * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$(guid 2), name="$p2_name"
${img}3 : start=2048, size=$(((start_mib - 1) * 2048)), type=21686148-6449-6E6F-744E-656564454649, uuid=$(guid 3), name="BIOS boot"
SFDISK
    if [ "$SLOTS" = ab ]; then
      # A/B: partition 2 is slot A, 4 slot B (empty until the first update), 5 the data
      # partition, last so that it can grow. GRUB, RAUC and the initramfs go by these names.
      b_start=$(((start_mib + boot_mib + root_mib) * 2048))
      d_start=$((b_start + ROOT_SLOT_MIB * 2048))
      sfdisk --quiet --no-reread --append "$img" <<SFDISK
${img}4 : start=$b_start, size=$((ROOT_SLOT_MIB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$(guid 4), name="$SLOT_B_NAME"
${img}5 : start=$d_start, size=$((DATA_MIB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$(guid 5), name="$DATA_NAME"
SFDISK
    fi
    ;;
  *) echo "PARTITION_TABLE must be dos or gpt, not '$PARTITION_TABLE'" >&2; exit 1 ;;
esac
dd if="$WORK/boot.vfat" of="$img" bs=1M seek=$start_mib conv=notrunc,fsync status=none
dd if="$WORK/root.ext4" of="$img" bs=1M seek=$((start_mib + boot_mib)) conv=notrunc,fsync status=none
if [ "$SLOTS" = ab ]; then
  dd if="$WORK/data.ext4" of="$img" bs=1M seek=$((total_mib - DATA_MIB)) conv=notrunc,fsync status=none
fi
sfdisk --list "$img" | sed 's/^/    /'
