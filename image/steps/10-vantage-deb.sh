#!/bin/bash -e
# The vantage package that goes on the image: the one given with --deb, else built here by
# scripts/build-deb.sh (dist profile; cargo only rebuilds what changed).
mkdir -p "$WORK"
if [ -z "$VANTAGE_DEB" ]; then
  "$SRC_DIR/scripts/build-deb.sh" "$DEB_ARCH"
  VANTAGE_DEB="$DIST/vantage_${VERSION}_${DEB_ARCH}.deb"
fi
[ -f "$VANTAGE_DEB" ] || { echo "no such package: $VANTAGE_DEB" >&2; exit 1; }
got=$(dpkg-deb -f "$VANTAGE_DEB" Architecture)
[ "$got" = "$DEB_ARCH" ] || { echo "$VANTAGE_DEB is for $got, not $DEB_ARCH" >&2; exit 1; }
cp "$VANTAGE_DEB" "$WORK/vantage.deb"
echo "    $(dpkg-deb -f "$VANTAGE_DEB" Package) $(dpkg-deb -f "$VANTAGE_DEB" Version) ($DEB_ARCH)"
