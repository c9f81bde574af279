#!/bin/bash -e
# The ext4 root partition, made from the root directory by mkfs.ext4 -d (no mount needed). It
# is only a little larger than its contents: the first boot grows it to the card.
img="$WORK/root.ext4"
rm -f "$img"
used=$(du -sm "$WORK/rootfs" | cut -f1)
# Room for the metadata, the daemon's first samples and a package upgrade before expansion.
root_mib=$(((used * 125 / 100 + 256 + 3) / 4 * 4))
uuid=$(printf '%08x-0000-4000-8000-%012x' $((SOURCE_DATE_EPOCH & 0xffffffff)) "$SOURCE_DATE_EPOCH")
mkfs.ext4 -q -F -L "$ROOT_LABEL" -U "$uuid" -m 1 -E root_owner=0:0 \
  -d "$WORK/rootfs" "$img" "${root_mib}M"
e2fsck -fn "$img" >/dev/null
echo "    root partition: ${root_mib} MiB, ${used} MiB used"
echo "$root_mib" >"$WORK/root.mib"
