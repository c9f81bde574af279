#!/usr/bin/env bash
# shellcheck disable=SC2015 # "check && ok ... || bad ...": ok never fails
# The boot loader's slot choice on the A/B images, written by /usr/lib/vantage-image/bootenv
# (RAUC's custom boot-loader backend there), checked without an image in both its formats,
# grub (GRUB's grubenv, the PC) and uboot (U-Boot's vantage.env, the Pi):
#   - the same RAUC commands through the real RAUC service leave the same variables and the
#     same slot states as RAUC's own GRUB backend, step by step, in either format (RAUC on a
#     private bus, the booted slot overridden; the boot loader's trial marks written as GRUB's
#     save_env or U-Boot's `env export -c` would: uboot's sorted by name, padded with \0);
#   - uboot: every block written is byte for byte what `mkenvimage -s 4096` makes of its entries
#     in the block's order (as `list` prints them), and libubootenv's fw_printenv reads the same
#     values; blocks mkenvimage or U-Boot made are accepted;
#   - every change is written to FILE.bak, then to FILE, in place (never truncated);
#   - a power cut at any point of a change (before, inside or after either write) leaves the
#     state the boot loader reads (FILE, else FILE.bak, as image/files/grub.cfg and boot.cmd do)
#     equal to the state before or after the change;
#   - an unreadable FILE (empty, garbage; uboot: a wrong CRC, a wrong size, malformed entries
#     under a right CRC) is read from the backup and rewritten by the next change or `repair`;
#     an unreadable backup likewise; both unreadable: rebuilt with the running slot as the only
#     good one; bad arguments and an unknown format are refused with a message.
# What the boot loaders themselves do with the two files is checked on an image
# (scripts/test-image.sh --update). Needs rauc, grub-editenv, dbus-daemon, mkenvimage and
# fw_printenv; a few seconds.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
for t in rauc grub-editenv dbus-daemon mkenvimage fw_printenv; do
  command -v "$t" >/dev/null ||
    { bad "$t missing (apt install rauc grub-common dbus-daemon u-boot-tools libubootenv-tool)"; finish; }
done

tmp=$(mktemp -d)
busd=""
trap '[ -n "$busd" ] && kill "$busd" 2>/dev/null; rm -rf "$tmp"' EXIT
backend=$PWD/buildroot-overlay/usr/lib/vantage-image/bootenv
export TMPDIR=$tmp BOOTENV_CONF=$tmp/no.conf BOOTENV_CMDLINE=$tmp/cmdline
echo 'BOOT_IMAGE=/vmlinuz root=PARTLABEL=vantage-a rauc.slot=A vantage.bootenv=grubenv ro' >"$tmp/cmdline"

# The format under test: use grub|uboot sets $fmt, the file's name, a block's size, and where
# a write cut in the middle of the backup splits old from new (grub: half the block; uboot:
# the new CRC and a few bytes of the new entries over the old block).
use() {
  fmt=$1
  case "$fmt" in
    grub) name=grubenv size=1024 split=512 ;;
    uboot) name=vantage.env size=4096 split=16 ;;
  esac
}
mkblock() { # mkblock FILE ENTRY...: a block of the format with those entries, in that order
  if [ "$fmt" = grub ]; then
    rm -f "$1" && grub-editenv "$1" create && grub-editenv "$1" set "${@:2}"
  else
    printf '%s\n' "${@:2}" | mkenvimage -s 4096 -o "$1" -
  fi
}
first=("ORDER=A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0)
fresh() { # fresh DIR: the image's first environment (as image/steps build it), both copies
  mkdir -p "$1"
  rm -f "$1/$name" "$1/$name.bak"
  mkblock "$1/$name" "${first[@]}"
  cp "$1/$name" "$1/$name.bak"
}
# The variables the boot loader finds in FILE, sorted: GRUB's own tool, or libubootenv's.
vars() {
  if [ "$fmt" = grub ]; then grub-editenv "$1" list; else
    echo "$1 0x0 0x1000" >"$1.fw"
    fw_printenv -c "$1.fw"
    rm -f "$1.fw"
  fi 2>/dev/null | sort
}
env_of() { vars "$1" | tr '\n' ' '; }
# What the boot loader boots from: FILE when readable, else the backup (grub.cfg, boot.cmd).
loader_reads() {
  if vars "$1/$name" | grep -q '^ORDER='; then env_of "$1/$name"; else env_of "$1/$name.bak"; fi
}
be() { BOOTENV_FORMAT=$fmt BOOTENV=$tmp/be/$name "$backend" "$@"; }
# sign FILE: a uboot block's CRC made right again, whatever its entries (for malformed blocks
# mkenvimage would not make; the same CRC as mkenvimage's, checked below).
sign() {
  local crc
  crc=$(tail -c +5 "$1" | gzip -c -n | tail -c 8 | head -c 4 | od -An -tx1 | tr -d ' \n' | sed 's/../\\x&/g')
  # shellcheck disable=SC2059 # the CRC's bytes as \x escapes
  printf "$crc" | dd of="$1" conv=notrunc status=none
}
# trial SLOT DIR: the boot loader starting SLOT: its X_TRY=1 saved to the backup, then the file.
# U-Boot's `env export -c` writes the entries sorted by name and pads with \0.
trial() {
  if [ "$fmt" = grub ]; then
    grub-editenv "$2/$name" set "${1}_TRY=1"
  else
    vars "$2/$name" | sed "s/^${1}_TRY=.*/${1}_TRY=1/" | mkenvimage -p 0 -s 4096 -o "$2/$name" -
  fi
  cp "$2/$name" "$2/$name.bak"
}

# A dd that logs where it writes ($DD_LOG) and keeps a copy of each block it writes ($DD_KEEP).
mkdir -p "$tmp/bin"
cat >"$tmp/bin/dd" <<'DD'
#!/bin/sh
for a; do
  case "$a" in
    if=*) [ -z "${DD_KEEP:-}" ] || cp "${a#if=}" "$DD_KEEP/$(cat "$DD_LOG" 2>/dev/null | wc -l)" ;;
    of=*) echo "${a#of=} $*" >>"$DD_LOG" ;;
  esac
done
exec /bin/dd "$@"
DD
chmod +x "$tmp/bin/dd"
export DD_LOG=$tmp/dd.log

# --- Real RAUC: its GRUB backend on one environment, this backend on another in each format.
private_bus "$tmp" '  <policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_type="*"/></policy>' ||
  { bad "no private bus: $(cat "$tmp/bus.log")"; finish; }
busd=$bus_pid
export DBUS_SYSTEM_BUS_ADDRESS
DBUS_SYSTEM_BUS_ADDRESS=$(head -1 "$tmp/address")
conf() { # conf DIR: a system.conf with two slots on files and DIR's boot-loader backend
  local d=$1 loader
  if [ "$(basename "$d")" = rauc-grub ]; then loader="bootloader=grub
grubenv=$d/grubenv"; else loader="bootloader=custom
[handlers]
bootloader-custom-backend=$backend"; fi
  touch "$d/slot-a" "$d/slot-b"
  printf '[system]\ncompatible=vantage-test\nstatusfile=%s/status.raucs\n%s\n[keyring]\npath=%s/none.pem\n' \
    "$d" "$loader" "$d" >"$d/system.conf"
  printf '[slot.rootfs.%s]\ndevice=%s/slot-%s\ntype=ext4\nbootname=%s\n' 0 "$d" a A 1 "$d" b B >>"$d/system.conf"
}
# rauc_run DIR STEPS...: RAUC's service on DIR's config, booted from A, the backend writing in
# $fmt; each step is a `rauc status` command, or try-X (the boot loader starting slot X). Logs
# the variables after each; this backend's blocks are kept in DIR/written.
rauc_run() {
  local d=$1 svc step
  shift
  fresh "$d"
  conf "$d"
  mkdir -p "$d/written"
  BOOTENV_FORMAT=$fmt BOOTENV=$d/$name PATH="$tmp/bin:$PATH" DD_LOG=$d/dd.log DD_KEEP=$d/written \
    rauc -c "$d/system.conf" service --override-boot-slot=A >"$d/service.log" 2>&1 &
  svc=$!
  for _ in $(seq 100); do (rauc status >/dev/null 2>&1 && exit; exit 1) 2>/dev/null && break; sleep 0.1; done
  : >"$d/steps"
  for step in "$@"; do
    case "$step" in
      try-*) trial "${step#try-}" "$d" ;;
      *) # shellcheck disable=SC2086 # "mark-good other": a command and its argument
        timeout 30 rauc status $step >/dev/null 2>&1 || echo "rauc status $step failed" >>"$d/steps" ;;
    esac
    echo "$step: $(env_of "$d/$name")" >>"$d/steps"
    [[ $d == */rauc-grub ]] || cmp -s "$d/$name" "$d/$name.bak" || echo "$step: the backup differs" >>"$d/steps"
  done
  timeout 30 rauc status --output-format=json 2>/dev/null |
    grep -o '"bootname":"[AB]"\|"boot_status":"[a-z]*"\|"booted":"[^"]*"\|"boot_primary":"[^"]*"' | tr '\n' ' ' >>"$d/steps"
  kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null
}
# written_as_mkenvimage DIR: each uboot block the backend wrote in DIR/written is what
# mkenvimage makes of its `list`, and fw_printenv reads the same values. Prints the count.
written_as_mkenvimage() {
  local b n=0
  for b in "$1"/written/*; do
    [ -e "$b" ] || continue
    BOOTENV_FORMAT=uboot BOOTENV=$b "$backend" list >"$b.list" 2>&1 &&
      mkenvimage -s 4096 -o "$b.mk" "$b.list" && cmp -s "$b" "$b.mk" &&
      [ "$(vars "$b")" = "$(sort "$b.list")" ] || { echo "block $(basename "$b") differs"; return 1; }
    n=$((n + 1))
  done
  echo "$n"
}
# An install of B (RAUC: mark B bad, write, mark it active), its trial (the boot loader),
# marked good; the same again with a failed trial (marked bad), and A marked good again.
steps=("mark-bad other" "mark-active other" try-B "mark-good other" "mark-bad other" "mark-active other"
  try-B "mark-bad other" "mark-good booted" "mark-active booted")
use grub
rauc_run "$tmp/rauc-grub" "${steps[@]}"
for f in grub uboot; do
  use "$f"
  d=$tmp/rauc-bootenv-$f
  rauc_run "$d" "${steps[@]}"
  if [ -s "$tmp/rauc-grub/steps" ] && diff "$tmp/rauc-grub/steps" "$d/steps" >"$d/diff" &&
    ! grep -q failed "$tmp/rauc-grub/steps" && grep -q 'boot_status' "$tmp/rauc-grub/steps"; then
    ok "[$f] real RAUC through this backend leaves the variables and slot states RAUC's own GRUB backend does, in ${#steps[@]} steps, the backup equal after each"
  else
    bad "[$f] RAUC's GRUB backend and this one differ: $(cat "$d/diff" "$d/service.log" | tail -12 | tr '\n' ' ')"
  fi
  grep -q 'activated slot rootfs.1' "$d/service.log" && ok "[$f] RAUC called the backend (its log: activated slot rootfs.1)" ||
    bad "[$f] no activation in RAUC's log: $(tail -5 "$d/service.log" | tr '\n' ' ')"
done
n=$(written_as_mkenvimage "$tmp/rauc-bootenv-uboot") && [ "$n" -gt 5 ] &&
  ok "[uboot] each of the $n blocks written under RAUC is what mkenvimage -s 4096 makes of its entries, and fw_printenv reads them" ||
  bad "[uboot] blocks written under RAUC: $n"
kill "$busd" 2>/dev/null; wait "$busd" 2>/dev/null; busd=""

# --- The rest, in each format.
scenario() {
  use "$1"
  write_order
  cuts
  unreadable
  refused
}

# The write order, through the logging dd.
write_order() {
  local order
  fresh "$tmp/be"
  rm -f "$DD_LOG"
  PATH="$tmp/bin:$PATH" be set-primary B
  order=$(cut -d' ' -f1 "$DD_LOG" | sed "s|$tmp/be/||" | tr '\n' ' ')
  [ "$order" = "$name.bak $name " ] && ! grep -v 'conv=notrunc,fsync' "$DD_LOG" | grep -q . &&
    ok "[$fmt] a change is written to $name.bak, then $name, in place and flushed (dd conv=notrunc,fsync)" ||
    bad "[$fmt] writes: $(cat "$DD_LOG")"
  rm -f "$DD_LOG"
  PATH="$tmp/bin:$PATH" be set-state B good
  [ ! -e "$DD_LOG" ] && ok "[$fmt] a change that changes nothing writes nothing" || bad "[$fmt] an idle change wrote: $(cat "$DD_LOG")"
}

# A power cut at every point of a change: the boot loader reads the state before or after it.
cut_at() { # cut_at POINT: the change "set-primary B" interrupted there; prints what is read
  local d=$tmp/be
  fresh "$d"
  case "$1" in
    backup-empty) : >"$d/$name.bak" ;;
    backup-half) head -c $((size / 2)) "$tmp/new" >"$d/$name.bak" ;;
    backup-mixed) { head -c "$split" "$tmp/new"; tail -c +$((split + 1)) "$d/$name"; } >"$d/$name.bak" ;;
    backup-done) cp "$tmp/new" "$d/$name.bak" ;;
    primary-empty) cp "$tmp/new" "$d/$name.bak"; : >"$d/$name" ;;
    primary-half) cp "$tmp/new" "$d/$name.bak"; head -c 100 "$tmp/new" >"$d/$name" ;;
    primary-garbage) cp "$tmp/new" "$d/$name.bak"; head -c "$size" /dev/urandom >"$d/$name" ;;
    after) cp "$tmp/new" "$d/$name.bak"; cp "$tmp/new" "$d/$name" ;;
  esac
  loader_reads "$d"
}
cuts() {
  local old new point got
  mkblock "$tmp/old" "${first[@]}"
  mkblock "$tmp/new" "ORDER=B A" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
  old=$(env_of "$tmp/old") new=$(env_of "$tmp/new")
  for point in backup-empty backup-half backup-mixed backup-done primary-empty primary-half primary-garbage after; do
    got=$(cut_at "$point")
    if [ "$got" = "$old" ] || [ "$got" = "$new" ]; then
      ok "[$fmt] cut at $point: the boot loader reads the state $([ "$got" = "$old" ] && echo before || echo after) the change"
    else bad "[$fmt] cut at $point: the boot loader reads '$got' (before: '$old', after: '$new')"; fi
    be repair 2>/dev/null
    if [ "$(env_of "$tmp/be/$name")" = "$got" ] && cmp -s "$tmp/be/$name" "$tmp/be/$name.bak"; then
      [ "$point" = after ] || ok "[$fmt]   ... and repair makes both copies that state again"
    else bad "[$fmt] cut at $point: after repair $name is '$(env_of "$tmp/be/$name")', backup '$(env_of "$tmp/be/$name.bak")'"; fi
  done
}

# Unreadable copies on the device side.
unreadable() {
  local f=$tmp/be/$name msg
  fresh "$tmp/be"
  be set-primary B
  : >"$f"
  [ "$(be get-primary)" = B ] && [ "$(be get-state B)" = good ] && ok "[$fmt] an empty $name: the state is read from the backup" ||
    bad "[$fmt] empty $name: primary '$(be get-primary 2>&1)'"
  be set-state B bad
  [ "$(stat -c %s "$f")" = "$size" ] && [ "$(env_of "$f")" = "$(env_of "$f.bak")" ] && [ "$(be get-state B)" = bad ] &&
    ok "[$fmt] the next change writes $name again, whole ($size bytes), equal to the backup" ||
    bad "[$fmt] after a change: $name '$(env_of "$f")' ($(stat -c %s "$f") bytes)"
  head -c 3000 /dev/urandom >"$f"
  be repair
  [ "$(stat -c %s "$f")" = "$size" ] && cmp -s "$f" "$f.bak" &&
    ok "[$fmt] 3000 bytes of garbage in $name: repair writes it again at $size bytes" || bad "[$fmt] garbage $name: $(stat -c %s "$f") bytes after repair"
  [ "$fmt" = grub ] || malformed
  : >"$f"
  : >"$f.bak"
  msg=$(be get-primary 2>&1 >/dev/null)
  [ "$(be get-primary 2>/dev/null)" = A ] && [ "$(be get-state B 2>/dev/null)" = bad ] && grep -q 'rebuilt with slot A' <<<"$msg" &&
    ok "[$fmt] both copies unreadable: rebuilt with the running slot (A) as the only good one, and said so" ||
    bad "[$fmt] both unreadable: primary '$(be get-primary 2>&1)', state of B '$(be get-state B 2>&1)'"
  be repair 2>/dev/null
  [ "$(env_of "$f")" = "A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 ORDER=A B " ] && cmp -s "$f" "$f.bak" &&
    ok "[$fmt]   ... and repair writes that state to both" || bad "[$fmt] rebuilt: '$(env_of "$f")'"
  [ "$(be get-current)" = A ] && ok "[$fmt] get-current: the slot on the kernel command line" || bad "[$fmt] get-current: $(be get-current 2>&1)"
}

# uboot: blocks U-Boot would refuse, or that are not ours to trust, each over a backup that says
# slot B; each block would say slot A if it were read.
malformed() {
  local f=$tmp/be/$name what
  mkblock "$tmp/m.crc" "${first[@]}"
  cp "$tmp/m.crc" "$tmp/m.sign" && sign "$tmp/m.sign"
  cmp -s "$tmp/m.crc" "$tmp/m.sign" && ok "[$fmt] the test's CRC is mkenvimage's" || bad "[$fmt] the test's CRC differs from mkenvimage's"
  printf '\0\0\0\0' | dd of="$tmp/m.crc" conv=notrunc status=none
  head -c 4095 "$tmp/m.sign" >"$tmp/m.short"
  { cat "$tmp/m.sign"; printf '\377'; } >"$tmp/m.long"
  cp "$tmp/m.sign" "$tmp/m.noend"
  # Over the end mark (after B_TRY=0\0) and the padding: one more entry that never ends.
  { printf 'Y='; head -c 4050 /dev/zero | tr '\0' x; } | dd of="$tmp/m.noend" bs=1 seek=44 conv=notrunc status=none
  sign "$tmp/m.noend"
  mkblock "$tmp/m.newline" "${first[@]}" "X=a\\" b
  mkblock "$tmp/m.noequal" "${first[@]}" garbage
  mkblock "$tmp/m.noorder" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
  mkblock "$tmp/m.twice" "${first[@]}" "ORDER=A B"
  for what in crc short long noend newline noequal noorder twice; do
    fresh "$tmp/be"
    be set-primary B
    cp "$tmp/m.$what" "$f"
    [ "$(be get-primary 2>&1)" = B ] && be repair && cmp -s "$f" "$f.bak" &&
      ok "[$fmt] $name $(describe "$what"): read from the backup, and repair writes it again" ||
      bad "[$fmt] $name $(describe "$what"): primary '$(be get-primary 2>&1)'"
  done
  accepted
}
describe() {
  case "$1" in
    crc) echo "with a wrong CRC over a valid body" ;;
    short) echo "a byte short (4095)" ;;
    long) echo "a byte too long (4097)" ;;
    noend) echo "with a right CRC but no end mark" ;;
    newline) echo "with a right CRC but a newline in a value" ;;
    noequal) echo "with a right CRC but an entry without '='" ;;
    noorder) echo "with a right CRC but no ORDER" ;;
    twice) echo "with a right CRC but ORDER twice" ;;
  esac
}
# uboot: a block as U-Boot's `env export -c` writes it (sorted, \0 padding, the board's own
# variables beside ours) is read; a change keeps every entry in its place.
accepted() {
  local f=$tmp/be/$name
  printf '%s\n' A_OK=1 A_TRY=0 B_OK=1 B_TRY=0 'ORDER=B A' 'bootcmd=run vantage' 'fdtfile=broadcom/bcm2711-rpi-4-b.dtb' |
    sort | mkenvimage -p 0 -s 4096 -o "$f" -
  cp "$f" "$f.bak"
  [ "$(be get-primary)" = B ] && be set-state B bad && be list >"$tmp/list" &&
    [ "$(cut -d= -f1 "$tmp/list" | tr '\n' ' ')" = "A_OK A_TRY B_OK B_TRY ORDER bootcmd fdtfile " ] &&
    mkenvimage -s 4096 -o "$tmp/mk" "$tmp/list" && cmp -s "$f" "$tmp/mk" && cmp -s "$f" "$f.bak" &&
    [ "$(env_of "$f")" = "A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 ORDER=B A bootcmd=run vantage fdtfile=broadcom/bcm2711-rpi-4-b.dtb " ] &&
    ok "[$fmt] a block as U-Boot exports it (sorted, \\0 padding, other variables) is read; a change keeps each entry in its place, as mkenvimage would write it" ||
    bad "[$fmt] U-Boot's block: $(be list 2>&1 | tr '\n' ' ')"
}

# Bad arguments: refused, nothing written.
refused() {
  local sum args msg
  fresh "$tmp/be"
  sum=$(cat "$tmp/be/$name" "$tmp/be/$name.bak" | sha256sum)
  for args in "set-state C good" "set-state A maybe" "set-primary" "frobnicate" ""; do
    # shellcheck disable=SC2086
    if ! msg=$(be $args 2>&1) && grep -q '^bootenv: ' <<<"$msg"; then :; else bad "[$fmt] '$args' accepted: $msg"; fi
  done
  [ "$(cat "$tmp/be/$name" "$tmp/be/$name.bak" | sha256sum)" = "$sum" ] &&
    ok "[$fmt] an unknown slot, state or command is refused with a message, nothing written" || bad "[$fmt] a refused command wrote"
}

scenario grub
scenario uboot

# --- The format and the file from bootenv.conf; the environment wins; an unknown format.
use uboot
fresh "$tmp/conf"
printf 'FORMAT=uboot\nFILE=%s\n' "$tmp/conf/$name" >"$tmp/no.conf"
"$backend" set-primary B && cmp -s "$tmp/conf/$name" "$tmp/conf/$name.bak" &&
  [ "$(env_of "$tmp/conf/$name")" = "A_OK=1 A_TRY=0 B_OK=1 B_TRY=0 ORDER=B A " ] &&
  ok "the format and the file from bootenv.conf (FORMAT=uboot, FILE=)" || bad "bootenv.conf: $(env_of "$tmp/conf/$name")"
use grub
fresh "$tmp/be"
be set-primary B && [ "$(env_of "$tmp/be/$name")" = "A_OK=1 A_TRY=0 B_OK=1 B_TRY=0 ORDER=B A " ] &&
  ok "BOOTENV_FORMAT and BOOTENV win over bootenv.conf" || bad "the environment over bootenv.conf: $(env_of "$tmp/be/$name")"
printf 'FORMAT=lilo\n' >"$tmp/no.conf"
sum=$(cat "$tmp/be/$name" "$tmp/be/$name.bak" | sha256sum)
! msg=$(BOOTENV=$tmp/be/$name "$backend" get-primary 2>&1) && grep -q "^bootenv: unknown format 'lilo'" <<<"$msg" &&
  [ "$(cat "$tmp/be/$name" "$tmp/be/$name.bak" | sha256sum)" = "$sum" ] && ok "an unknown format is refused: $msg" ||
  bad "format lilo: $msg"
finish
