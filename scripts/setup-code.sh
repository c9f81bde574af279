#!/usr/bin/env bash
# The image's one-time setup code: the first-boot page asks for it before it lets anyone set the
# admin password (docs/WEB.md). Written to the boot partition by scripts/build-image.sh (a
# fallback shared by every copy of that build) and replaced by scripts/flash.sh with a fresh one
# for each card, which it prints like the Wi-Fi password on a router's label.
#
#   scripts/setup-code.sh           prints a fresh code: 16 hex digits in groups of 4 (64 bits)
#   scripts/setup-code.sh --file    prints the file's name on the boot partition
set -euo pipefail
case "${1:-}" in
  --file) echo setup-code.txt ;;
  "") od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | sed 's/\(....\)\(....\)\(....\)\(....\)/\1-\2-\3-\4\n/' ;;
  *) echo "setup-code.sh: unknown argument '$1' (--file or nothing)" >&2; exit 2 ;;
esac
