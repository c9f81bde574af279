#!/usr/bin/env bash
# Builds one .deb per target into dist/: vantage_<version>_<arch>.deb.
#
#   scripts/build-deb.sh                       all three targets, dist profile (what ships)
#   scripts/build-deb.sh amd64                 one target (Debian arch, short name or triple)
#   scripts/build-deb.sh --profile ci amd64    from a `ci`-profile binary (tests)
#
# The binary comes from scripts/build-firmware.sh (run here; cargo skips what is up to date).
# The files that land on `/` come from buildroot-overlay/, as on the SD image; the default config
# is firmware/vantage/vantage.toml, the one the binary embeds; the Debian metadata and
# maintainer scripts from packaging/deb/. Only dpkg-deb is needed, no debhelper or cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dist
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    aarch64|arm64|aarch64-unknown-linux-gnu) targets+=(aarch64-unknown-linux-gnu); shift ;;
    armv7|armhf|armv7-unknown-linux-gnueabihf) targets+=(armv7-unknown-linux-gnueabihf); shift ;;
    x86_64|amd64|x86_64-unknown-linux-gnu) targets+=(x86_64-unknown-linux-gnu); shift ;;
    *) echo "build-deb.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] ||
  targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)

scripts/build-firmware.sh --profile "$profile" "${targets[@]}"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
maintainer=${DEB_MAINTAINER:-Vantage maintainers <vantage-probe@users.noreply.github.com>}
# Reproducible: file times and the changelog date come from the last commit.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

deb_arch() {
  case "$1" in
    aarch64-*) echo arm64 ;;
    armv7-*) echo armhf ;;
    x86_64-*) echo amd64 ;;
  esac
}

# Depends from what the binary links and the newest symbol versions it uses, as dpkg-shlibdeps
# would derive them (it cannot here: the foreign-arch libc6 is not installed).
depends_for() {
  local bin=$1 needed glibc gcc deps=()
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  glibc=$(readelf -W --dyn-syms "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  for lib in $needed; do
    case "$lib" in
      libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux*) ;;
      libgcc_s.so.1)
        gcc=$(readelf -W --dyn-syms "$bin" | grep -o 'GCC_[0-9][0-9.]*' | sed 's/GCC_//' | sort -V | tail -1)
        # libgcc-s1 (Debian 11+, Ubuntu 20.04+): every release with a new enough glibc has it.
        deps+=("libgcc-s1 (>= ${gcc:-3.0})") ;;
      *) echo "build-deb.sh: $bin links $lib, which has no Debian dependency mapped here" >&2; return 1 ;;
    esac
  done
  local out="libc6 (>= $glibc)" d
  for d in "${deps[@]}"; do out+=", $d"; done
  echo "$out"
}

# vantage(1) from the binary's own --help (help2man), plus packaging/deb/vantage.h2m. A foreign
# binary runs under qemu-user; without help2man or qemu the package is built without the page.
man_page() { # man_page TARGET BINARY OUT
  local t=$1 bin exe dir cmd qemu="" sysroot=""
  bin=$(realpath "$2")
  command -v help2man >/dev/null || { echo "note: help2man missing: no man page" >&2; return 0; }
  case "$t" in
    "$(uname -m)"-*) ;;
    aarch64-*) qemu=qemu-aarch64-static sysroot=/usr/aarch64-linux-gnu ;;
    armv7-*) qemu=qemu-arm-static sysroot=/usr/arm-linux-gnueabihf ;;
    x86_64-*) qemu=qemu-x86_64-static sysroot=/usr/x86_64-linux-gnu ;;
  esac
  dir=$(mktemp -d)
  exe="$dir/vantage"
  if [ -z "$qemu" ]; then
    ln -s "$bin" "$exe"
  elif command -v "$qemu" >/dev/null; then
    printf '#!/bin/sh\nexec %s -L %s %s "$@"\n' "$qemu" "$sysroot" "$bin" > "$exe"
    chmod +x "$exe"
  else
    echo "note: $qemu missing: no man page for $t" >&2
    rm -rf "$dir"
    return 0
  fi
  cp packaging/deb/vantage.h2m "$dir/include.h2m"
  # Every subcommand the binary lists, so new ones appear without editing this script.
  for cmd in $("$exe" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' | grep -vx help); do
    {
      echo "[OPTIONS OF vantage $cmd]"
      echo ".nf"
      "$exe" "$cmd" --help | sed -e 's/\\/\\e/g' -e "s/^[.']/\\\\\&&/"
      echo ".fi"
    } >> "$dir/include.h2m"
  done
  help2man --no-info --section 1 --include "$dir/include.h2m" \
    --name "network probe daemon exporting its results to Prometheus" "$exe" |
    gzip -9n > "$3"
  rm -rf "$dir"
}

for t in "${targets[@]}"; do
  arch=$(deb_arch "$t")
  bin="dist/vantage-$version-$t"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  root="$stage/root"

  # Everything that lands on `/`, with explicit modes (umask and checkout modes don't leak in).
  mkdir -p "$root"
  cp -r buildroot-overlay/. "$root/"
  # The SD image's own files (network, hostname, SSH switch, journald limits; every path has
  # "vantage-image" in it) stay out of the package: it installs onto a system that has its own.
  find "$root" -depth -name '*vantage-image*' -exec rm -rf {} +
  find "$root" -mindepth 1 -type d -empty -delete
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -type f -exec chmod 0644 {} +
  install -D -m 0755 "$bin" "$root/usr/bin/vantage"
  install -D -m 0644 firmware/vantage/vantage.toml "$root/etc/vantage/vantage.toml"
  install -D -m 0644 packaging/deb/copyright "$root/usr/share/doc/vantage/copyright"
  {
    echo "vantage ($version) unstable; urgency=medium"
    echo
    echo "  * Release $version."
    echo
    echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n > "$root/usr/share/doc/vantage/changelog.gz"
  chmod 0644 "$root/usr/share/doc/vantage/changelog.gz"
  mkdir -p "$root/usr/share/man/man1"
  man_page "$t" "$bin" "$root/usr/share/man/man1/vantage.1.gz"
  [ -s "$root/usr/share/man/man1/vantage.1.gz" ] || rm -rf "$root/usr/share/man"

  mkdir -p "$root/DEBIAN"
  for s in postinst prerm postrm; do install -m 0755 "packaging/deb/$s" "$root/DEBIAN/$s"; done
  # Every file under /etc is a conffile: dpkg keeps local edits on upgrade and remove.
  (cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
  size_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@INSTALLED_SIZE@|$size_kb|" -e "s/@DEPENDS@/$(depends_for "$bin")/" \
    packaging/deb/control.in > "$root/DEBIAN/control"

  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  out="dist/vantage_${version}_$arch.deb"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
  rm -rf "$stage"
  trap - EXIT
  printf '%-40s %10s bytes  Depends: %s\n' "$out" "$(stat -c %s "$out")" \
    "$(dpkg-deb -f "$out" Depends)"
done
