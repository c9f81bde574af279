#!/bin/bash -e
# dist/<name>.img.xz and its checksum, in the format `sha256sum -c` and scripts/flash.sh read.
img="$WORK/$IMAGE_NAME.img"
raw=$(stat -c %s "$img")
# -3: far quicker than the default -6 on a 1 GB image, for a slightly larger download.
xz -T0 -3 --keep --force --stdout "$img" >"$DIST/$IMAGE_NAME.img.xz.tmp"
mv "$DIST/$IMAGE_NAME.img.xz.tmp" "$DIST/$IMAGE_NAME.img.xz"
(cd "$DIST" && sha256sum "$IMAGE_NAME.img.xz" >"$IMAGE_NAME.img.xz.sha256")
xzsize=$(stat -c %s "$DIST/$IMAGE_NAME.img.xz")
echo "    $IMAGE_NAME.img: $((raw / 1048576)) MiB; .img.xz: $((xzsize / 1048576)) MiB"
echo "    $(cat "$DIST/$IMAGE_NAME.img.xz.sha256")"
