#!/usr/bin/env bash
# GRUB's slot choice on the PC image, written by /usr/lib/vantage-image/grubenv (RAUC's custom
# boot-loader backend there), checked without an image:
#   - the same RAUC commands through the real RAUC service leave the same environment and the
#     same slot states as RAUC's own GRUB backend, step by step (RAUC on a private bus, the
#     booted slot overridden);
#   - every change is written to grubenv.bak, then to grubenv, in place (never truncated);
#   - a power cut at any point of a change (before, inside or after either write) leaves the
#     state GRUB reads (grubenv, else grubenv.bak, as image/files/grub.cfg does) equal to the
#     state before or after the change;
#   - an unreadable grubenv (empty, garbage) is read from the backup and rewritten by the next
#     change or `repair`; an unreadable backup likewise; both unreadable: rebuilt with the
#     running slot as the only good one; bad arguments are refused with a message.
# What GRUB itself does with the two files is checked on an image (scripts/test-image.sh
# --update, "torn grubenv"). Needs rauc, grub-editenv and dbus-daemon; a few seconds.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
for t in rauc grub-editenv dbus-daemon; do
  command -v "$t" >/dev/null || { bad "$t missing (apt install rauc grub-common dbus-daemon)"; finish; }
done

tmp=$(mktemp -d)
busd=""
trap '[ -n "$busd" ] && kill "$busd" 2>/dev/null; rm -rf "$tmp"' EXIT
backend=$PWD/buildroot-overlay/usr/lib/vantage-image/bootenv
export TMPDIR=$tmp

fresh() { # fresh DIR: the image's first environment (image/steps/chroot/45-grub.sh), both copies
  mkdir -p "$1"
  rm -f "$1/grubenv" "$1/grubenv.bak"
  grub-editenv "$1/grubenv" create
  grub-editenv "$1/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
  cp "$1/grubenv" "$1/grubenv.bak"
}
env_of() { grub-editenv "$1" list 2>/dev/null | sort | tr '\n' ' '; }
# What GRUB boots from: grubenv when readable, else the backup (grub.cfg).
grub_reads() {
  if grub-editenv "$1/grubenv" list 2>/dev/null | grep -q '^ORDER='; then env_of "$1/grubenv"; else env_of "$1/grubenv.bak"; fi
}
be() { GRUBENV=$tmp/be/grubenv GRUBENV_CMDLINE=$tmp/cmdline "$backend" "$@"; }
echo 'BOOT_IMAGE=/vmlinuz root=PARTLABEL=vantage-a rauc.slot=A vantage.grubenv=grubenv ro' >"$tmp/cmdline"

# --- Real RAUC: its GRUB backend on one environment, this backend on another.
private_bus "$tmp" '  <policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_type="*"/></policy>' ||
  { bad "no private bus: $(cat "$tmp/bus.log")"; finish; }
busd=$bus_pid
export DBUS_SYSTEM_BUS_ADDRESS
DBUS_SYSTEM_BUS_ADDRESS=$(head -1 "$tmp/address")
conf() { # conf NAME: a system.conf with two slots on files and NAME's boot-loader backend
  local d=$tmp/$1 loader
  if [ "$1" = grub ]; then loader="bootloader=grub
grubenv=$d/grubenv"; else loader="bootloader=custom
[handlers]
bootloader-custom-backend=$backend"; fi
  touch "$d/slot-a" "$d/slot-b"
  printf '[system]\ncompatible=vantage-test\nstatusfile=%s/status.raucs\n%s\n[keyring]\npath=%s/none.pem\n' \
    "$d" "$loader" "$d" >"$d/system.conf"
  printf '[slot.rootfs.%s]\ndevice=%s/slot-%s\ntype=ext4\nbootname=%s\n' 0 "$d" a A 1 "$d" b B >>"$d/system.conf"
}
# rauc_run NAME STEPS...: RAUC's service on NAME's config, booted from A; each step is a `rauc
# status` command, or try-X (GRUB starting slot X: X_TRY=1). Logs the environment after each.
rauc_run() {
  local name=$1 d=$tmp/$1 svc step
  shift
  fresh "$d"
  conf "$name"
  GRUBENV=$d/grubenv GRUBENV_CMDLINE=$tmp/cmdline rauc -c "$d/system.conf" service --override-boot-slot=A \
    >"$d/service.log" 2>&1 &
  svc=$!
  for _ in $(seq 100); do (rauc status >/dev/null 2>&1) 2>/dev/null && break; sleep 0.1; done
  : >"$d/steps"
  for step in "$@"; do
    case "$step" in
      try-*) grub-editenv "$d/grubenv" set "${step#try-}_TRY=1"; cp "$d/grubenv" "$d/grubenv.bak" ;;
      *) # shellcheck disable=SC2086 # "mark-good other": a command and its argument
        timeout 30 rauc status $step >/dev/null 2>&1 || echo "rauc status $step failed" >>"$d/steps" ;;
    esac
    echo "$step: $(env_of "$d/grubenv")" >>"$d/steps"
    [ "$name" = grub ] || cmp -s "$d/grubenv" "$d/grubenv.bak" || echo "$step: the backup differs" >>"$d/steps"
  done
  timeout 30 rauc status --output-format=json 2>/dev/null |
    grep -o '"bootname":"[AB]"\|"boot_status":"[a-z]*"\|"booted":"[^"]*"\|"boot_primary":"[^"]*"' | tr '\n' ' ' >>"$d/steps"
  kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null
}
# An install of B (RAUC: mark B bad, write, mark it active), its trial (GRUB), marked good; the
# same again with a failed trial (marked bad), and A marked good again.
steps=("mark-bad other" "mark-active other" try-B "mark-good other" "mark-bad other" "mark-active other"
  try-B "mark-bad other" "mark-good booted" "mark-active booted")
rauc_run grub "${steps[@]}"
rauc_run custom "${steps[@]}"
if [ -s "$tmp/grub/steps" ] && diff "$tmp/grub/steps" "$tmp/custom/steps" >"$tmp/diff" && ! grep -q failed "$tmp/grub/steps" &&
  grep -q 'boot_status' "$tmp/grub/steps"; then
  ok "real RAUC through this backend leaves GRUB's environment and slot states as its own GRUB backend does, in ${#steps[@]} steps, the backup equal after each"
else
  bad "RAUC's GRUB backend and this one differ: $(cat "$tmp/diff" "$tmp/custom/service.log" | tail -12 | tr '\n' ' ')"
fi
grep -q 'activated slot rootfs.1' "$tmp/custom/service.log" && ok "RAUC called the backend (its log: activated slot rootfs.1)" ||
  bad "no activation in RAUC's log: $(tail -5 "$tmp/custom/service.log" | tr '\n' ' ')"
kill "$busd" 2>/dev/null; wait "$busd" 2>/dev/null; busd=""

# --- The write order, through a dd that logs where it writes.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nfor a; do case "$a" in of=*) echo "${a#of=} $*" >>"%s/dd.log" ;; esac; done\nexec /bin/dd "$@"\n' "$tmp" >"$tmp/bin/dd"
chmod +x "$tmp/bin/dd"
fresh "$tmp/be"
PATH="$tmp/bin:$PATH" be set-primary B
order=$(cut -d' ' -f1 "$tmp/dd.log" | sed "s|$tmp/be/||" | tr '\n' ' ')
[ "$order" = "grubenv.bak grubenv " ] && ! grep -v 'conv=notrunc,fsync' "$tmp/dd.log" | grep -q . &&
  ok "a change is written to grubenv.bak, then grubenv, in place and flushed (dd conv=notrunc,fsync)" ||
  bad "writes: $(cat "$tmp/dd.log")"
rm -f "$tmp/dd.log"
PATH="$tmp/bin:$PATH" be set-state B good
[ ! -e "$tmp/dd.log" ] && ok "a change that changes nothing writes nothing" || bad "an idle change wrote: $(cat "$tmp/dd.log")"

# --- A power cut at every point of a change: GRUB reads the state before or after it.
cut_at() { # cut_at POINT: the change "set-primary B" interrupted there; prints what GRUB reads
  local d=$tmp/be
  fresh "$d"
  cp "$d/grubenv" "$tmp/old"
  grub-editenv "$tmp/old" set ORDER="B A" B_OK=1 B_TRY=0 && mv "$tmp/old" "$tmp/new"
  case "$1" in
    backup-empty) : >"$d/grubenv.bak" ;;
    backup-half) head -c 512 "$tmp/new" >"$d/grubenv.bak" ;;
    backup-mixed) { head -c 512 "$tmp/new"; tail -c 512 "$d/grubenv"; } >"$d/grubenv.bak" ;;
    backup-done) cp "$tmp/new" "$d/grubenv.bak" ;;
    primary-empty) cp "$tmp/new" "$d/grubenv.bak"; : >"$d/grubenv" ;;
    primary-half) cp "$tmp/new" "$d/grubenv.bak"; head -c 100 "$tmp/new" >"$d/grubenv" ;;
    primary-garbage) cp "$tmp/new" "$d/grubenv.bak"; head -c 1024 /dev/urandom >"$d/grubenv" ;;
    after) cp "$tmp/new" "$d/grubenv.bak"; cp "$tmp/new" "$d/grubenv" ;;
  esac
  grub_reads "$d"
}
fresh "$tmp/ref"
old=$(env_of "$tmp/ref/grubenv")
grub-editenv "$tmp/ref/grubenv" set ORDER="B A" B_OK=1 B_TRY=0
new=$(env_of "$tmp/ref/grubenv")
for point in backup-empty backup-half backup-mixed backup-done primary-empty primary-half primary-garbage after; do
  got=$(cut_at "$point")
  if [ "$got" = "$old" ] || [ "$got" = "$new" ]; then
    ok "cut at $point: GRUB reads the state $([ "$got" = "$old" ] && echo before || echo after) the change"
  else bad "cut at $point: GRUB reads '$got' (before: '$old', after: '$new')"; fi
  be repair 2>/dev/null
  if [ "$(env_of "$tmp/be/grubenv")" = "$got" ] && cmp -s "$tmp/be/grubenv" "$tmp/be/grubenv.bak"; then
    [ "$point" = after ] || ok "  ... and repair makes both copies that state again"
  else bad "cut at $point: after repair grubenv is '$(env_of "$tmp/be/grubenv")', backup '$(env_of "$tmp/be/grubenv.bak")'"; fi
done

# --- Unreadable copies on the device side.
fresh "$tmp/be"
be set-primary B
: >"$tmp/be/grubenv"
[ "$(be get-primary)" = B ] && [ "$(be get-state B)" = good ] && ok "an empty grubenv: the state is read from the backup" ||
  bad "empty grubenv: primary '$(be get-primary 2>&1)'"
be set-state B bad
[ "$(stat -c %s "$tmp/be/grubenv")" = 1024 ] && [ "$(env_of "$tmp/be/grubenv")" = "$(env_of "$tmp/be/grubenv.bak")" ] &&
  [ "$(be get-state B)" = bad ] && ok "the next change writes grubenv again, whole (1024 bytes), equal to the backup" ||
  bad "after a change: grubenv '$(env_of "$tmp/be/grubenv")' ($(stat -c %s "$tmp/be/grubenv") bytes)"
head -c 3000 /dev/urandom >"$tmp/be/grubenv"
be repair
[ "$(stat -c %s "$tmp/be/grubenv")" = 1024 ] && cmp -s "$tmp/be/grubenv" "$tmp/be/grubenv.bak" &&
  ok "3000 bytes of garbage in grubenv: repair writes it again at 1024 bytes" || bad "garbage grubenv: $(stat -c %s "$tmp/be/grubenv") bytes after repair"
: >"$tmp/be/grubenv"
: >"$tmp/be/grubenv.bak"
msg=$(be get-primary 2>&1 >/dev/null)
[ "$(be get-primary 2>/dev/null)" = A ] && [ "$(be get-state B 2>/dev/null)" = bad ] && grep -q 'rebuilt with slot A' <<<"$msg" &&
  ok "both copies unreadable: rebuilt with the running slot (A) as the only good one, and said so" ||
  bad "both unreadable: primary '$(be get-primary 2>&1)', state of B '$(be get-state B 2>&1)'"
be repair 2>/dev/null
[ "$(env_of "$tmp/be/grubenv")" = "A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 ORDER=A B " ] && cmp -s "$tmp/be/grubenv" "$tmp/be/grubenv.bak" &&
  ok "  ... and repair writes that state to both" || bad "rebuilt: '$(env_of "$tmp/be/grubenv")'"
[ "$(be get-current)" = A ] && ok "get-current: the slot on the kernel command line" || bad "get-current: $(be get-current 2>&1)"

# --- Bad arguments: refused, nothing written.
fresh "$tmp/be"
sum=$(cat "$tmp/be/grubenv" "$tmp/be/grubenv.bak" | sha256sum)
for args in "set-state C good" "set-state A maybe" "set-primary" "frobnicate" ""; do
  # shellcheck disable=SC2086
  if ! msg=$(be $args 2>&1) && grep -q '^grubenv: ' <<<"$msg"; then :; else bad "'$args' accepted: $msg"; fi
done
[ "$(cat "$tmp/be/grubenv" "$tmp/be/grubenv.bak" | sha256sum)" = "$sum" ] &&
  ok "an unknown slot, state or command is refused with a message, nothing written" || bad "a refused command wrote"
finish
