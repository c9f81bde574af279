#!/usr/bin/env bash
# The store's crash (kill -9 loop) and corruption suites on the sled backend too, so the
# comparison in docs/STORE.md stays measured, not remembered. fjall, the shipped backend, runs
# them in the normal `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/../.."
passed=0 failed=0
for suite in crash corruption; do
  if VANTAGE_STORE_BACKEND=sled cargo test --locked -p vantage-store --features sled --test "$suite" -- --test-threads 1; then
    passed=$((passed + 1))
  else
    echo "FAILED: sled $suite"
    failed=$((failed + 1))
  fi
done
echo "store-sled: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
