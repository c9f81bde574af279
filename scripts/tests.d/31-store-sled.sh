#!/usr/bin/env bash
# The store's crash (kill -9 loop) and corruption suites on the sled backend too, so the
# comparison in docs/STORE.md stays measured, not remembered. fjall, the shipped backend, runs
# them in the normal `cargo test`.
#
# sled 0.34 is not deterministic under the corruption suite (docs/STORE.md, "fjall or sled"):
# about one run in five, a write flushed after reopening is missing at the next open, or sled
# panics in its own snapshot code after a file was deleted. That suite gets up to three tries,
# and every failed try is reported; a break in the store's own handling fails all three.
set -uo pipefail
cd "$(dirname "$0")/../.."
passed=0 failed=0
for suite in crash corruption; do
  tries=1
  [ "$suite" = corruption ] && tries=3
  ok=no
  for try in $(seq "$tries"); do
    if VANTAGE_STORE_BACKEND=sled cargo test --locked -p vantage-store --features sled --test "$suite" -- --test-threads 1; then
      ok=yes
      [ "$try" -gt 1 ] && echo "note: sled $suite passed on try $try of $tries (sled's nondeterminism, docs/STORE.md)"
      break
    fi
    echo "note: sled $suite failed on try $try of $tries"
  done
  if [ "$ok" = yes ]; then
    passed=$((passed + 1))
  else
    echo "FAILED: sled $suite"
    failed=$((failed + 1))
  fi
done
echo "store-sled: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
