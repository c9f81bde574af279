# shellcheck shell=bash
# The tally of a scripts/tests.d suite: an "ok ..." or "FAIL ..." line per check, then
# "N passed, N failed". Sourced from the repository root: . scripts/lib/checks.sh
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# The tally, and the exit status: 0 when nothing failed.
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }
# verify_units TMPDIR UNIT...: `systemd-analyze verify` of buildroot-overlay's units, with their
# ExecStart= pointed into the overlay (verify wants the program to exist); one check.
verify_units() {
  local tmp=$1 overlay=$PWD/buildroot-overlay u files=()
  shift
  mkdir -p "$tmp/units"
  for u; do
    sed "s|^ExecStart=/usr/lib/vantage-image/|ExecStart=$overlay/usr/lib/vantage-image/|" \
      "$overlay/usr/lib/systemd/system/$u" >"$tmp/units/$u"
    files+=("$tmp/units/$u")
  done
  if systemd-analyze verify --man=no "${files[@]}" >"$tmp/verify.log" 2>&1 && ! grep -q . "$tmp/verify.log"; then
    ok "systemd-analyze verify $*"
  else
    bad "systemd-analyze verify $*: $(cat "$tmp/verify.log")"
  fi
}
