#!/usr/bin/env bash
# Installs everything the build and the tests need on a Debian 12 machine (run as root).
# Debian packages are listed in scripts/deps.d/*.apt, Rust targets in scripts/deps.d/*.rust-targets,
# one per line, so each part of the project declares its own needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

# The words of all files matching a glob, comments removed, deduplicated.
list() {
  local files=(scripts/deps.d/$1)
  [ -e "${files[0]}" ] || return 0
  sed 's/#.*//' "${files[@]}" | xargs -r -n1 | sort -u | xargs
}

pkgs=$(list '*.apt')
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services some packages start on install are not wanted: tests start their own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

targets=$(list '*.rust-targets')
if [ -n "$targets" ]; then
  installed=$(rustup target list --installed)
  for t in $targets; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
echo "==> setup done"
