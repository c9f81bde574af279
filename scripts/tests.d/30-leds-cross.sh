#!/usr/bin/env bash
# The status-LED crate, GPIO backend (rppal) included, type-checks for the Raspberry Pi's
# 64-bit (Pi 3-5) and 32-bit (Pi 2-4 on armhf) targets. `cargo check` needs no cross linker.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0
failed=0
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "FAIL $target: the Rust target is not installed (scripts/setup.sh adds it)"
    failed=$((failed + 1))
    continue
  fi
  if cargo check --locked -q -p vantage-leds --all-targets --target "$target"; then
    echo "ok   cargo check -p vantage-leds --target $target"
    passed=$((passed + 1))
  else
    echo "FAIL cargo check -p vantage-leds --target $target"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
