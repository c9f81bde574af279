#!/bin/bash -e
# The ext4 root partition, made from the root directory by mkfs.ext4 -d (no mount needed).
#   single root: a little larger than its contents; the first boot grows it to the card.
#   A/B (SLOTS=ab): the file system that goes into slot A and into update bundles, read-only at
#   run time, so only a little over its contents; the slot around it is ROOT_SLOT_MIB. Beside it
#   the data partition's empty file system (DATA_MIB; the first boot grows it to the card).
img="$WORK/root.ext4"
rm -f "$img"
used=$(du -sm "$WORK/rootfs" | cut -f1)
if [ "$SLOTS" = ab ]; then
  # Room for ext4's metadata (inode tables, journal) and nothing else.
  root_mib=$(((used * 115 / 100 + 64 + 3) / 4 * 4))
  [ "$root_mib" -le "$ROOT_SLOT_MIB" ] ||
    { echo "root file system ${root_mib} MiB does not fit a ${ROOT_SLOT_MIB} MiB slot" >&2; exit 1; }
else
  # Room for the metadata, the daemon's first samples and a package upgrade before expansion.
  root_mib=$(((used * 125 / 100 + 256 + 3) / 4 * 4))
fi
uuid=$(printf '%08x-0000-4000-8000-%012x' $((SOURCE_DATE_EPOCH & 0xffffffff)) "$SOURCE_DATE_EPOCH")
mkfs.ext4 -q -F -L "$ROOT_LABEL" -U "$uuid" -m 1 -E root_owner=0:0 \
  -d "$WORK/rootfs" "$img" "${root_mib}M"
e2fsck -fn "$img" >/dev/null
echo "    root file system: ${root_mib} MiB, ${used} MiB used"
if [ "$SLOTS" = ab ]; then
  echo "$ROOT_SLOT_MIB" >"$WORK/root.mib"
  data="$WORK/data.ext4"
  rm -f "$data"
  duuid=$(printf '%08x-0000-4000-8000-%012x' $((SOURCE_DATE_EPOCH & 0xffffffff)) $((SOURCE_DATE_EPOCH + 1)))
  mkfs.ext4 -q -F -L "$DATA_LABEL" -U "$duuid" -m 1 -E root_owner=0:0 "$data" "${DATA_MIB}M"
  echo "    root slots: 2 x ${ROOT_SLOT_MIB} MiB; data partition: ${DATA_MIB} MiB (grows at first boot)"
else
  echo "$root_mib" >"$WORK/root.mib"
fi
