#!/usr/bin/env bash
# Boots the built image in QEMU and checks the promise "flash, plug in, open the page" from the
# host. arm64: -M virt booting Debian's qemu_arm64 U-Boot, which runs the image's own boot.scr
# (the Pi's slot choice) from the disk and starts the chosen slot's kernel. amd64:
# q35 booting the image's own boot loader from the disk, UEFI with Secure Boot on (OVMF with
# Microsoft's keys) and legacy BIOS (SeaBIOS) in turn, boot after boot. Both: the image as a
# virtio disk, user networking restricted to host port forwards on 127.0.0.1. The checks:
#
#   1. first boot of the untouched image: /metrics answers with the default probes succeeding,
#      the page answers on port 80, SSH is off; the page asks for a password first: set through
#      its JSON API with the setup code from the boot partition (refused without it; CSRF and
#      Origin rules checked on the way), then a target on 127.0.0.2 added
#      through the API is probed (success 1 in /metrics);
#   2. an authorized_keys file dropped on the boot partition turns SSH on (keys only): through
#      it, the hostname vantage-XXXX, its mDNS announcement, the root partition grown to the
#      disk, volatile journal, no failed unit; the node exporter off (nothing on port 9100),
#      switched on through the page's API: it answers on 9100 (a fourth port forward) within
#      2 minutes with a *.prom file dropped into its textfile directory over SSH, and after a
#      reboot it is still on, the file still there; switched off and the power cut at once, the
#      next boot has it off;
#   3. power cuts: QEMU killed at random moments (while booting, while probing, while the page's
#      API saves the config in a loop), booted again, --cuts times: every boot reaches /metrics
#      with its probes succeeding (the target added through the page included), the config is
#      the old or the new one (never torn) and loads, the store opens healthy with the history
#      from before the cut (GET /api/samples) and no more lost than its window
#      (commit_interval, 5 s, plus the commit's own time), the root file system mounts
#      read-write (repaired at boot if needed);
#   4. with --wear: bytes written per hour to each partition of the disk while 100 targets on
#      guest loopback addresses are probed at the default settings;
#   5. a clean shutdown, then e2fsck -fn of the root partition from the host: clean.
#   With --update (A/B image, both architectures): after 2, a bundle signed by another key is refused before
#   anything is written; the bundle (marked as the next build) is offered through the fleet
#   path: a provisioning file with `[update]` on an HTTPS server of a test CA on the host (the
#   guest reaches it at 10.0.2.100 through a QEMU guestfwd, nothing else); the daemon downloads
#   and installs it through RAUC's D-Bus API (no AccessDenied), asks for the reboot, the
#   image's path unit reboots by itself, the boot loader starts the other slot on trial, the health check
#   marks it good, with the password, the config, the stored rounds, the SSH host keys kept,
#   and the daemon does not fetch that version again; then a broken build of it (the daemon
#   exits at start) is installed: the device reboots into the good slot by itself, which says
#   so; `touch /usr/x` fails on every slot. Then the page's Settings → Update, driven through
#   its API as the page does (port 80, session cookie, X-CSRF-Token, its Origin): a bundle of
#   another signer is refused (422, nothing written, nothing left in the spool); a build of its
#   own (page.raucb) is uploaded as the raw body, answered once its signature checked out, and
#   polled through GET /api/update until installed (progress and time printed); the page does
#   not reboot, so the test reboots the guest, and the other slot starts that build, is marked
#   good, with the password, the config and the stored rounds kept, and GET /api/update shows
#   that slot, version and build and the last trial's result. Then power cuts while `rauc
#   install` writes the other slot (--install-cuts, at rising points of its progress) and while
#   an installed build boots on trial (--trial-cuts, early in the boot, once the daemon
#   answers, and right after the health check marked it good: then the same slot must start
#   again): after each the device boots a slot marked good, the password, the config and the
#   stored rounds kept. Last, the boot loader's environment torn by a cut (its file emptied
#   after an install, then garbage on a good slot): GRUB or U-Boot reads the backup copy,
#   starts the slot it names, and the file is written again.
#
#   scripts/test-image.sh [IMAGE.img.xz|IMAGE.img]   default dist/vantage-<version>-<arch>.img.xz
#     --arch A         arm64 or amd64 (default: from the image's name, else arm64)
#     --firmware F     amd64: uefi, bios, or alternate (default: BIOS on odd boots, UEFI on even)
#     --cuts N         power cuts (default 20)
#     --timeout S      seconds a boot may take to answer /metrics (default 600: TCG is slow)
#     --wear MINUTES   also measure bytes written per hour with 100 ping targets, over MINUTES
#                      (after the cuts; --cuts 0 --wear 20 for the measurement alone)
#     --update BUNDLE  the A/B update checks with this bundle (scripts/build-bundle.sh; its
#                      root file system is reused, re-signed with the development key)
#     --install-cuts N power cuts while RAUC writes the other slot, with --update (default 3)
#     --trial-cuts N   power cuts while an installed build boots on trial, with --update (default 3)
#   QEMU=path/to/qemu-system-aarch64, QEMU_ARGS="-L dir" to use another QEMU;
#   OVMF_CODE=, OVMF_VARS= other UEFI firmware (default Debian's ovmf, Secure Boot, MS keys);
#   UBOOT= another U-Boot for arm64 (default Debian's u-boot-qemu, qemu_arm64).
#   QEMU_ACCEL=tcg: amd64 emulated even where KVM works (a machine whose cores are shared).
#
# Prints one "figure:" line per measurement and a final "N passed, N failed". Takes 40-80
# minutes (each boot is 1-3 minutes under emulation): not part of scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

cuts=20 timeout=600 wear=0 image="" arch="" firmware=alternate bundle="" install_cuts=3 trial_cuts=3
while [ $# -gt 0 ]; do
  case "$1" in
    --cuts) cuts=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --wear) wear=${2:?}; shift 2 ;;
    --arch) arch=${2:?}; shift 2 ;;
    --firmware) firmware=${2:?}; shift 2 ;;
    --update) bundle=${2:?}; shift 2 ;;
    --install-cuts) install_cuts=${2:?}; shift 2 ;;
    --trial-cuts) trial_cuts=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,64p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "test-image.sh: unknown option '$1'" >&2; exit 2 ;;
    *) image=$1; shift ;;
  esac
done
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
if [ -z "$arch" ]; then
  case "$(basename "$image")" in *-amd64.img*) arch=amd64 ;; *) arch=arm64 ;; esac
fi
image=${image:-dist/vantage-$version-$arch.img.xz}
case "$arch" in
  arm64)
    QEMU=${QEMU:-qemu-system-aarch64}
    UBOOT=${UBOOT:-/usr/lib/u-boot/qemu_arm64/u-boot.bin} ;;
  amd64)
    QEMU=${QEMU:-qemu-system-x86_64}
    OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.secboot.fd}
    OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.ms.fd}
    case "$firmware" in uefi|bios|alternate) ;; *) echo "test-image.sh: --firmware must be uefi, bios or alternate" >&2; exit 2 ;; esac ;;
  *) echo "test-image.sh: --arch must be arm64 or amd64, not '$arch'" >&2; exit 2 ;;
esac
read -r -a qemu_args <<<"${QEMU_ARGS:-}"

pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
figure() { echo "figure: $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

for t in "$QEMU" mcopy mdel mtype sfdisk xz curl jq ssh ssh-keygen e2fsck losetup; do
  command -v "$t" >/dev/null || { bad "host tool missing: $t"; finish; }
done
if [ "$arch" = amd64 ]; then
  for f in "$OVMF_CODE" "$OVMF_VARS"; do [ -f "$f" ] || { bad "no UEFI firmware $f (apt install ovmf)"; finish; }; done
else
  [ -f "$UBOOT" ] || { bad "no U-Boot $UBOOT (apt install u-boot-qemu)"; finish; }
fi
# The board's partition numbers (slots, data): /dev/vdaN in the guest.
# shellcheck source=/dev/null
. "image/arch/$arch.conf"
[ -f "$image" ] || { bad "no image $image (scripts/build-image.sh --arch $arch builds it)"; finish; }
if [ -f "$image.sha256" ]; then
  (cd "$(dirname "$image")" && sha256sum -c --quiet "$(basename "$image").sha256") &&
    ok "image checksum matches" || bad "image checksum"
fi

work=$(mktemp -d)
qpid=""
cleanup() {
  [ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
  [ -n "${www_pid:-}" ] && kill "$www_pid" 2>/dev/null
  [ -n "${rootloop:-}" ] && losetup -d "$rootloop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

disk=$work/disk.img
case "$image" in *.xz) xz -dc "$image" >"$disk" ;; *) cp "$image" "$disk" ;; esac
img_bytes=$(stat -c %s "$disk")
# A bigger "card" than the image, for the first-boot expansion to fill: 3 GiB, and at least
# 2 GiB more than the image (an A/B image with its two slots is nearly 3 GiB itself).
disk_size=$((3 * 1024 * 1048576))
[ $((img_bytes + 2048 * 1048576)) -gt "$disk_size" ] && disk_size=$((img_bytes + 2048 * 1048576))
truncate -s "$disk_size" "$disk"
disk_bytes=$(stat -c %s "$disk")
sector_start() { sfdisk --json "$disk" | tr -d ' \n' | grep -o '"start":[0-9]*' | sed -n "${1}p" | cut -d: -f2; }
boot_off=$(($(sector_start 1) * 512))
root_off=$(($(sector_start 2) * 512))
export MTOOLS_SKIP_CHECK=1
fat="$disk@@$boot_off"
# The setup code the build wrote to the boot partition (scripts/flash.sh replaces it per card).
setup_code=$(mtype -i "$fat" "::$(scripts/setup-code.sh --file)" 2>/dev/null | head -n 1 | tr -d '\r')
[ -n "$setup_code" ] && ok "a setup code on the boot partition" || bad "no setup code on the boot partition"

case "$arch" in
  arm64)
    # The Pi's boot files: the firmware starts U-Boot, U-Boot runs boot.scr, which reads the slot
    # choice (vantage.env, and its backup) and cmdline.txt. The virt board skips the firmware:
    # QEMU starts Debian's qemu_arm64 U-Boot, which finds boot.scr on the disk.
    for f in config.txt u-boot.bin boot.scr vantage.env vantage.env.bak cmdline.txt; do
      mcopy -i "$fat" "::$f" "$work/$f" || { bad "no $f on the boot partition"; finish; }
    done
    grep -q '^kernel=u-boot.bin$' "$work/config.txt" && ok "boot partition: the Pi firmware starts U-Boot, boot.scr and the slot choice beside it" ||
      bad "config.txt does not start U-Boot: $(grep '^kernel' "$work/config.txt")"
    # The Pi's serial consoles become the virt board's PL011, edited in cmdline.txt on the disk
    # under test as a user with a serial cable would.
    cmdline="$(tr -s ' \n' ' ' <"$work/cmdline.txt" | sed -E 's/(^| )console=[^ ]*//g; s/^ //; s/ $//') console=ttyAMA0"
    printf '%s\n' "$cmdline" >"$work/cmdline.txt"
    mcopy -o -i "$fat" "$work/cmdline.txt" ::cmdline.txt
    ;;
  amd64)
    # The PC boots its own loaders from the disk; the command line is the menu's first entry.
    for f in EFI/BOOT/BOOTX64.EFI EFI/BOOT/grubx64.efi EFI/debian/grub.cfg; do
      mcopy -i "$fat" "::$f" "$work/$(basename "$f")" || { bad "no $f on the boot partition"; finish; }
    done
    ok "UEFI loaders (shim, GRUB) and grub.cfg on the boot partition"
    cmdline=$(sed -n 's/^[[:space:]]*linux[[:space:]]\{1,\}[^[:space:]]*[[:space:]]//p' "$work/grub.cfg" | head -1)
    # The UEFI variable store, kept from boot to boot like a PC's NVRAM.
    cp "$OVMF_VARS" "$work/efivars.fd"
    # KVM when it really runs a guest (nested setups may offer /dev/kvm and then fail), else TCG.
    accel=tcg cpu=max
    if [ "${QEMU_ACCEL:-}" != tcg ] && [ -w /dev/kvm ]; then
      (timeout 3 "$QEMU" -machine q35,accel=kvm -cpu host -display none -nodefaults -monitor none -S; exit $?) >/dev/null 2>&1
      [ $? -eq 124 ] && accel=kvm cpu=host
    fi
    if [ "$accel" = tcg ]; then
      # Pure emulation on a busy host can miss the timer interrupts of the kernel's early
      # IO-APIC check, which then panics ("IO-APIC + timer doesn't work"); under KVM the kernel
      # skips that check itself. So the disk under test (not the image) gets no_timer_check.
      sed -i 's/^\([[:space:]]*linux[[:space:]].*\)$/\1 no_timer_check/' "$work/grub.cfg"
      mcopy -o -i "$fat" "$work/grub.cfg" ::EFI/debian/grub.cfg
    fi
    echo "QEMU: q35, $accel, firmware: $firmware"
    ;;
esac
echo "kernel command line: $cmdline"
grep -q 'fsck.repair=yes' <<<"$cmdline" && ok "cmdline.txt repairs the root file system at boot" ||
  bad "cmdline.txt lacks fsck.repair=yes"

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}
p_metrics=$(free_port) p_http=$(free_port) p_ssh=$(free_port) p_node=$(free_port)

boot_no=0
start_qemu() {
  boot_no=$((boot_no + 1))
  console=$work/console-$boot_no.log
  local machine fw
  case "$arch" in
    arm64) machine=(-M virt -cpu cortex-a72 -bios "$UBOOT") ;;
    amd64)
      fw=$firmware
      [ "$fw" = alternate ] && { [ $((boot_no % 2)) -eq 1 ] && fw=bios || fw=uefi; }
      machine=(-machine "q35,smm=on,accel=$accel" -cpu "$cpu")
      # UEFI: OVMF with Secure Boot enforced (SMM-protected variable store), Microsoft's keys.
      [ "$fw" = uefi ] && machine+=(-global "driver=cfi.pflash01,property=secure,value=on"
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
        -drive "if=pflash,format=raw,unit=1,file=$work/efivars.fd")
      boot_fw=$fw
      echo "boot $boot_no: $fw" ;;
  esac
  # restrict=on: the guest reaches nothing but the forwarded ports (no NTP, no DNS outside),
  # and with --update the fleet server at $fleet_ip:443 (relayed to the host's 127.0.0.1).
  local fwd="hostfwd=tcp:127.0.0.1:$p_metrics-:9430,hostfwd=tcp:127.0.0.1:$p_http-:80,hostfwd=tcp:127.0.0.1:$p_ssh-:22"
  fwd="$fwd,hostfwd=tcp:127.0.0.1:$p_node-:9100"
  [ -n "${p_www:-}" ] && fwd="$fwd,guestfwd=tcp:$fleet_ip:443-cmd:$python $work/fleet/relay.py $p_www"
  "$QEMU" "${qemu_args[@]}" "${machine[@]}" -smp 2 -m 1024 \
    -drive "file=$disk,format=raw,if=none,id=d0,cache=writeback" -device virtio-blk-pci,drive=d0,bootindex=0 \
    -netdev "user,id=n0,restrict=on,$fwd" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -display none -serial "file:$console" -monitor none -no-reboot &
  qpid=$!
  qstart=$(date +%s)
}
power_cut() { kill -9 "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; qpid=""; }

# wait_metrics: until /metrics shows every target of $want succeeding; sets $waited.
want=(loopback-v4 loopback-v6)
probes_ok() {
  local t
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" >"$work/metrics" 2>/dev/null || return 1
  for t in "${want[@]}"; do
    grep -Eq "^vantage_probe_success\\{.*target=\"$t\".*\\} 1\$" "$work/metrics" || return 1
  done
}
wait_metrics() {
  while [ $(($(date +%s) - qstart)) -lt "$timeout" ]; do
    kill -0 "$qpid" 2>/dev/null || { waited=-1; return 1; }
    if probes_ok "$p_metrics"; then waited=$(($(date +%s) - qstart)); return 0; fi
    sleep 2
  done
  waited=-1
  return 1
}
ssh_key=$work/id_ed25519
ssh-keygen -q -t ed25519 -N '' -f "$ssh_key"
g() {
  ssh -i "$ssh_key" -p "$p_ssh" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=20 -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1 "$@"
}
# What only one architecture's boot path has to show, checked once SSH is on.
arch_checks() {
  local sb slot
  if [ "$arch" = arm64 ]; then
    slot=$(slot_now)
    [ -n "$slot" ] && [ "$(loader_slot)" = "$slot" ] &&
      ok "boot $boot_no: U-Boot's boot.scr started slot $slot ($(g 'grep -o "root=[^ ]*" /proc/cmdline'))" ||
      bad "boot $boot_no: slot '$slot' running, U-Boot's console says '$(loader_slot)'"
    return 0
  fi
  if [ "$boot_fw" = uefi ]; then
    sb=$(g 'od -An -tu1 -j4 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c' | tr -d ' ')
    [ "$sb" = 1 ] && ok "boot $boot_no: UEFI with Secure Boot on (shim, signed GRUB, signed kernel)" ||
      bad "boot $boot_no: UEFI, but Secure Boot is '${sb:-not reported}'"
  else
    g 'test ! -d /sys/firmware/efi' && ok "boot $boot_no: legacy BIOS (GRUB core image from the BIOS boot partition)" ||
      bad "boot $boot_no: expected a BIOS boot, the guest sees UEFI"
  fi
  g 'sfdisk --verify /dev/vda 2>&1' | grep -q 'No errors detected' &&
    ok "GPT valid after the growth (backup table moved to the end of the disk)" ||
    bad "GPT after the growth: $(g 'sfdisk --verify /dev/vda 2>&1' | tr '\n' ' ')"
}
show_console() { echo "---- console of boot $boot_no (last 30 lines)"; tail -30 "$console" | tr -d '\r'; echo "----"; }

# The page's JSON API (docs/API.md) as the page uses it: a session cookie, X-CSRF-Token on
# writes, Origin naming the page itself. api METHOD PATH [BODY [CONTENT-TYPE]] sets $code; the
# answer is in $api_out. BODY is JSON unless CONTENT-TYPE says otherwise; @FILE sends a file as
# it is. $api_port picks the port (80: the page as a user opens it; 9430 forwarded); $api_max
# the seconds a request may take (default 60).
api_out=$work/api.json jar=$work/cookies csrf="" origin=""
api() {
  local args=(-s --max-time "${api_max:-60}" -o "$api_out" -w '%{http_code}' -X "$1" -b "$jar" -c "$jar"
    -H "Origin: ${origin:-http://127.0.0.1:$api_port}")
  [ -n "$csrf" ] && args+=(-H "X-CSRF-Token: $csrf")
  [ $# -ge 3 ] && args+=(-H "Content-Type: ${4:-application/json}" --data-binary "$3")
  : >"$api_out"
  code=$(curl "${args[@]}" "http://127.0.0.1:$api_port$2" 2>/dev/null) || true
  [ -n "$code" ] || code=000
}
jqr() { jq -r "$1" "$api_out" 2>/dev/null; }
password="first-boot-$RANDOM-$RANDOM"
login() {
  local t0=$SECONDS
  csrf="" origin=""
  rm -f "$jar"
  while [ $((SECONDS - t0)) -lt 120 ]; do
    api POST /api/auth/login "{\"password\":\"$password\"}"
    [ "$code" = 200 ] && { csrf=$(jqr .csrf_token); return 0; }
    [ "$code" = 429 ] && sleep "$(jqr '.retry_after // 2')"
    sleep 2
  done
  return 1
}
# The target the page adds, and the two versions the save loop alternates between.
page_target() { # page_target [LABEL-VALUE]
  local labels=""
  [ $# -eq 0 ] || labels=",\"labels\":{\"saved\":\"$1\"}"
  printf '{"name":"page-added","host":"127.0.0.2","probes":["ping"]%s}' "$labels"
}
config_sum() { # the config file as the daemon reads it (GET /api/config), and its check
  api GET /api/config
  [ "$code" = 200 ] || { echo "GET /api/config: $code"; return; }
  if [ "$(jqr '.errors | length')" != 0 ]; then echo "errors: $(jqr -c .errors)"; return; fi
  jqr .text | sha256sum | cut -c1-16
}
# The stored rounds of loopback-v4 (GET /api/samples, needs a session) from $hist_from to $1,
# into $api_out.
stored() {
  api GET "/api/samples?target=loopback-v4&probe=ping&from=$hist_from&to=$1"
  [ "$code" = 200 ]
}
# The guest's clock minus the host's (the store's timestamps are the guest's).
clock_offset() {
  local h0 gt h1
  h0=$(date +%s.%N) gt=$(g 'date +%s.%N') h1=$(date +%s.%N)
  offset=$(awk -v a="$h0" -v g="$gt" -v b="$h1" 'BEGIN { printf "%.2f", g - (a + b) / 2 }')
}

# A/B image: the root slot is read-only, what the device writes is on /data.
ro_checks() {
  g 'touch /usr/x 2>/dev/null; test ! -e /usr/x' && g '! touch /usr/x 2>/dev/null' &&
    ok "read-only root: touch /usr/x fails ($(g 'touch /usr/x 2>&1' | head -1))" || bad "touch /usr/x succeeded on the device"
  g 'findmnt -no FSTYPE /etc; findmnt -no FSTYPE /var; findmnt -no FSTYPE /root' | tr '\n' ' ' | grep -q '^overlay overlay overlay ' &&
    ok "/etc, /var and /root are overlays (upper layers on /data)" || bad "/etc or /var not an overlay: $(g 'findmnt /etc; findmnt /var' | tr '\n' ' ')"
}
slot_now() { g 'sed -n "s/.*rauc\.slot=\([AB]\).*/\1/p" /proc/cmdline'; }
build_now() { g '. /usr/lib/vantage-image/release; echo $BUILD'; }
# The boot loader's environment (both copies) and what it says when it read the backup.
case "$arch" in
  amd64) bootenv_file=/boot/firmware/EFI/debian/grubenv loader=GRUB ;;
  arm64) bootenv_file=/boot/firmware/vantage.env loader=U-Boot ;;
esac
bootenv_backup_said="${bootenv_file##*/} unreadable, slot choice read from ${bootenv_file##*/}.bak"
# The boot loader's line naming the slot it starts (GRUB's menu entry, boot.scr's message).
loader_slot() { grep -o 'Vantage\(, slot\|: starting slot\) [AB]' "$console" | tail -1 | grep -o '[AB]$'; }
# What an install writes: the boot loader's environment and the head of the slot not running
# (compared before and after a refused bundle).
install_state() {
  local other=$SLOT_B_PART
  [ "$(slot_now)" = B ] && other=$SLOT_A_PART
  g "cat $bootenv_file $bootenv_file.bak | sha256sum; head -c 16M /dev/vda$other | sha256sum"
}
# health_wait SLOT BUILD: until vantage-image-health recorded BUILD as good in SLOT.
health_wait() {
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$timeout" ]; do
    [ "$(g "cat /var/lib/vantage-image/update/good-$1 2>/dev/null")" = "$2" ] && { health_took=$((SECONDS - t0)); return 0; }
    sleep 5
  done
  return 1
}
# A bundle from the given bundle's root file system, with its release (and more, for the
# broken one) changed with debugfs, signed by the key of $2 (rauc-keys.sh --dir).
derive_bundle() { # derive_bundle NAME KEYDIR [debugfs commands...]
  local name=$1 keydir=$2 fs=$work/$1.ext4
  shift 2
  cp --sparse=always "$work/bundle-root/root.ext4" "$fs"
  printf 'VERSION=%s\nBUILD=%s\n' "$version+$name" "$base_build-$name" >"$work/release-$name"
  { printf 'cd /usr/lib/vantage-image\nrm release\nwrite %s release\n' "$work/release-$name"; printf '%s\n' "$@"; } >"$work/debugfs-$name"
  debugfs -w -f "$work/debugfs-$name" "$fs" >/dev/null 2>&1
  (eval "$(scripts/rauc-keys.sh --env --dir "$keydir")"; export RAUC_KEY RAUC_CERT RAUC_KEYRING
    scripts/build-bundle.sh --rootfs "$fs" --version "$version+$name" --out "$work/$name.raucb") >/dev/null
  rm -f "$fs"
}
# The fleet's server for --update: HTTPS with a certificate of a test CA for $fleet_ip, on the
# host's 127.0.0.1:$p_www, serving $work/fleet/www (requests logged in server.log), stopped at
# exit and after 4 hours at most. QEMU's guestfwd starts relay.py for each connection the guest
# opens to $fleet_ip:443: it joins the connection to that port and ends when either side does
# or after 5 idle minutes.
fleet_ip=10.0.2.100
fleet_server() {
  local d=$work/fleet
  mkdir -p "$d/www"
  python=$(command -v python3) p_www=$(free_port)
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\n' "$fleet_ip" >"$d/san.ext"
  (cd "$d" && ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) &&
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj '/CN=vantage test fleet CA' &&
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=$fleet_ip" &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
      -days 2 -extfile san.ext) >"$d/openssl.log" 2>&1 || return 1
  cat >"$d/server.py" <<'EOF'
import functools, http.server, ssl, sys
d, port = sys.argv[1], int(sys.argv[2])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d + "/www")
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/server.pem", d + "/server.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
EOF
  cat >"$d/relay.py" <<'EOF'
import os, select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.settimeout(None)
inputs = [0, s]
while True:
    ready, _, _ = select.select(inputs, [], [], 300)
    if not ready:
        break
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            s.sendall(data)
        else:
            inputs.remove(0)
            s.shutdown(socket.SHUT_WR)
    if s in ready:
        data = s.recv(65536)
        if not data:
            break
        while data:
            data = data[os.write(1, data):]
EOF
  timeout 4h "$python" "$d/server.py" "$d" "$p_www" 2>"$d/server.log" &
  www_pid=$!
  for _ in $(seq 50); do
    ss -Htln "sport = :$p_www" | grep -q . && return 0
    kill -0 "$www_pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
# Reboot the guest: with -no-reboot QEMU exits; the next start is the machine coming back.
guest_reboot() {
  g 'systemctl reboot' >/dev/null 2>&1
  for _ in $(seq 300); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
  power_cut
}
# The three bundles of the update checks, made while the first boots run (in the background).
prepare_bundles() {
  rm -rf "$work/bundle-root"
  unsquashfs -q -n -d "$work/bundle-root" "$bundle" >/dev/null 2>&1 && [ -s "$work/bundle-root/root.ext4" ] || return 1
  base_build=$(debugfs -R 'cat /usr/lib/vantage-image/release' "$work/bundle-root/root.ext4" 2>/dev/null | sed -n 's/^BUILD=//p')
  [ -n "$base_build" ] || return 1
  derive_bundle next build/rauc-dev
  derive_bundle again build/rauc-dev
  derive_bundle page build/rauc-dev
  derive_bundle foreign "$work/other-key"
  printf '#!/bin/sh\necho "this build is broken on purpose: it exits at start" >&2\nexit 1\n' >"$work/broken-vantage"
  printf 'TRIAL_SECONDS=90\n' >"$work/broken-health"
  derive_bundle broken build/rauc-dev 'cd /usr/bin' 'rm vantage' "write $work/broken-vantage vantage" 'sif vantage mode 0100755' \
    'cd /etc/default' "write $work/broken-health vantage-image-health"
  echo "$base_build" >"$work/base-build"
}
# The next build through the fleet path: the device's config gets [provisioning] naming a file
# on the fleet server (the test CA as its ca_file), that file an [update] offer of next.raucb
# with a window open now; the daemon downloads, checks and installs it through RAUC's D-Bus
# API, writes reboot-request, and the image's path unit reboots (QEMU exits: -no-reboot). The
# journal is in RAM, so it is copied to the host every few seconds until the guest goes.
fleet_offer() {
  local d=$work/fleet sha window
  cp "$work/next.raucb" "$d/www/next.raucb"
  sha=$(sha256sum "$work/next.raucb" | cut -d' ' -f1)
  window="$(g 'date -u -d "-10 min" +%H:%M')-$(g 'date -u -d "+3 hours" +%H:%M')"
  printf '[update]\nurl = "https://%s/next.raucb"\nversion = "%s"\nsha256 = "%s"\nwindow = "%s"\n' \
    "$fleet_ip" "$version+next" "$sha" "$window" >"$d/www/fleet.toml"
  printf '\n[provisioning]\nurl = "https://%s/fleet.toml"\nca_file = "/etc/vantage/fleet-ca.pem"\nrefresh = "10s"\n' \
    "$fleet_ip" >"$d/provisioning.toml"
  g 'cat >/etc/vantage/fleet-ca.pem' <"$d/ca.pem"
  g "cat >>'$cfg_path'" <"$d/provisioning.toml"
  g 'systemctl reload vantage'
  fleet_t0=$SECONDS
  echo "fleet: offered $version+next (window $window UTC) at https://$fleet_ip/fleet.toml"
}
fleet_update() {
  local d=$work/fleet t0=$fleet_t0 j t_dl t_req
  while kill -0 "$qpid" 2>/dev/null && [ $((SECONDS - t0)) -lt $((timeout + 900)) ]; do
    timeout 60 ssh -i "$ssh_key" -p "$p_ssh" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=10 -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1 \
      'journalctl -b -o short-unix --no-pager -u vantage -u rauc -u vantage-image-reboot -u dbus
       echo "AccessDenied lines: $(journalctl -b --no-pager | grep -c AccessDenied)"' >"$d/journal.new" 2>/dev/null &&
      mv "$d/journal.new" "$d/journal"
    sleep 3
  done
  fleet_took=$((SECONDS - t0))
  j=$d/journal
  if kill -0 "$qpid" 2>/dev/null; then
    bad "fleet update: the guest did not reboot by itself within $fleet_took s: $(grep -i 'update\|rauc\|reboot' "$j" | tail -8 | tr '\n' ' ')"
    power_cut
    return 1
  fi
  wait "$qpid" 2>/dev/null
  qpid=""
  ok "fleet update: the guest rebooted by itself $fleet_took s after the offer"
  grep -E 'provisioning|fleet update|rauc|reboot-request|AccessDenied|denied' "$j" | grep -v '^AccessDenied lines' | tail -25 | sed 's/^/  journal: /'
  grep -q "GET /next.raucb HTTP/1.1\" 200" "$d/server.log" && ok "the daemon downloaded next.raucb from the fleet server (private CA)" ||
    bad "no download of next.raucb: $(tail -5 "$d/server.log" | tr '\n' ' ')"
  grep -q 'fleet update: downloading' "$j" && ok "the daemon started the fleet update itself" || bad "no 'fleet update: downloading' in the journal"
  grep -q '^AccessDenied lines: 0$' "$j" && ! grep -qi 'org.freedesktop.DBus.Error.AccessDenied' "$j" &&
    ok "RAUC accepted the daemon's D-Bus calls: no AccessDenied in the journal" || bad "AccessDenied in the journal: $(grep -i accessdenied "$j" | head -3 | tr '\n' ' ')"
  grep -q 'reboot-request: Vantage asks for a reboot' "$j" && ok "vantage-image-reboot.service took the request: $(grep -o 'Vantage asks for a reboot.*' "$j" | head -1)" ||
    echo "note: the reboot unit's journal line was not copied before the guest went (it rebooted by itself all the same)"
  t_dl=$(grep 'fleet update: downloading' "$j" | tail -1 | cut -d' ' -f1)
  t_req=$(grep -m1 'fleet update: reboot requested' "$j" | cut -d' ' -f1)
  if [ -n "$t_dl" ] && [ -n "$t_req" ]; then
    fleet_install_s=$(awk -v a="$t_dl" -v b="$t_req" 'BEGIN { printf "%.0f", b - a }')
    figure "fleet update by the daemon: download, check and install of a $(($(stat -c %s "$work/next.raucb") / 1048576)) MiB bundle $fleet_install_s s; offer to the guest's reboot $fleet_took s"
  else
    # The journal is copied every few seconds; the reboot can beat the last copy.
    figure "fleet update by the daemon: offer to the guest's reboot $fleet_took s (the journal copy ended before the daemon's $([ -n "$t_dl" ] && echo '"reboot requested"' || echo '"downloading"') line: no install time this run)"
  fi
  return 0
}
# After the boot into the fleet's build: one attempt per version. The daemon has looked at the
# offer again (it does every minute) and fetched nothing; the server saw one download.
daemon_age() { # seconds since the daemon started, on the guest
  g 'awk -v s="$(systemctl show -p ExecMainStartTimestampMonotonic --value vantage)" "{ printf \"%d\", \$1 - s / 1000000 }" /proc/uptime'
}
fleet_once() {
  local d=$work/fleet n
  [ "$(g 'cat /var/lib/private/vantage/update-attempted')" = "$version+next" ] &&
    ok "update-attempted records $version+next" || bad "update-attempted: '$(g 'cat /var/lib/private/vantage/update-attempted')'"
  g 'test ! -e /var/lib/private/vantage/reboot-request' && ok "no reboot-request left behind" || bad "reboot-request still there"
  # The daemon's first look is at its start, the next a minute later: wait past both.
  for _ in $(seq 40); do [ "$(daemon_age)" -ge 100 ] 2>/dev/null && break; sleep 5; done
  n=$(grep -c 'GET /next.raucb ' "$d/server.log")
  [ "$n" = 1 ] && ! g 'journalctl -b -u vantage --no-pager' | grep -q 'fleet update: downloading' &&
    ok "the daemon does not fetch $version+next again (one download in all, none in the new slot's first $(daemon_age) s)" ||
    bad "the same version fetched again: $n downloads; $(g 'journalctl -b -u vantage --no-pager' | grep 'fleet update' | tail -3 | tr '\n' ' ')"
}
# The boot after a power cut of the update checks: /metrics, a slot marked good, the password,
# the config and the stored rounds of before the updates. Uses update_checks' sum0 and
# before_rounds.
cut_check() { # cut_check WHAT
  local what=$1 s b n
  start_qemu
  wait_metrics || { bad "$what: no /metrics in $timeout s"; show_console; power_cut; return 1; }
  ssh_wait || { bad "$what: no SSH"; power_cut; return 1; }
  s=$(slot_now) b=$(build_now)
  health_wait "$s" "$b" || { bad "$what: slot $s (build $b) not marked good"; return 1; }
  login || { bad "$what: no login"; return 1; }
  [ "$(config_sum)" = "$sum0" ] || { bad "$what: config changed: $(config_sum)"; return 1; }
  stored "$(($(date +%s) + 60))"
  n=$(jqr '.samples | length')
  [ "${n:-0}" -ge "$before_rounds" ] || { bad "$what: stored rounds lost: $n now, $before_rounds before"; return 1; }
  grep -Eq '^vantage_store_healthy(\{[^}]*\})? 1$' "$work/metrics" || { bad "$what: store not healthy"; return 1; }
  ok "$what: boot $boot_no on slot $s (build $b) marked good, /metrics after $waited s, login, config and $n stored rounds kept"
  cut_slots+=("$s:$b")
}
# A power cut while `rauc install` writes the other slot, once its progress reached PERCENT
# (or, if it prints none, once that share of $1's reference time has passed).
install_cut() { # install_cut PERCENT REFERENCE-SECONDS
  local pct=$1 ref=$2 t0 seen=0 line
  g 'rm -f /data/install.log; nohup rauc install /data/again.raucb >/data/install.log 2>&1 </dev/null &'
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt 900 ]; do
    line=$(timeout 30 ssh -i "$ssh_key" -p "$p_ssh" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=10 -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1 'tail -c 400 /data/install.log' 2>/dev/null)
    seen=$(grep -o '[0-9]\{1,3\}%' <<<"$line" | tail -1 | tr -d %)
    seen=${seen:-0}
    [ "$seen" -ge "$pct" ] && break
    [ "$seen" = 0 ] && [ $((SECONDS - t0)) -ge $((ref * pct / 100)) ] && break
    grep -q 'Installing done\|failed' <<<"$line" && break
    sleep 1
  done
  power_cut
  echo "install cut at ${seen}% of RAUC's progress, $((SECONDS - t0)) s into the install: '$(tail -1 <<<"$line" | tr -d '\r')'"
}
# A power cut while the installed build boots on trial: N=1 early (GRUB, the kernel, the first
# units), N=2 the moment the daemon first answers (before the health check's next look), N=3
# right after the health check marked the slot good (sets $trial_slot: the next boot must
# start it again); then again from 1.
trial_cut() { # trial_cut N
  local t0 at
  start_qemu
  t0=$SECONDS trial_slot=""
  case $((($1 - 1) % 3)) in
    0) at=$((15 + RANDOM % 30)); sleep "$at" ;;
    1)
      while [ $((SECONDS - t0)) -lt "$timeout" ] && kill -0 "$qpid" 2>/dev/null; do
        curl -sf --max-time 3 "http://127.0.0.1:$p_metrics/-/ready" >/dev/null 2>&1 && break
        sleep 1
      done ;;
    2) ssh_wait && trial_slot=$(slot_now) && health_wait "$trial_slot" "$(build_now)" || trial_slot="" ;;
  esac
  at=$((SECONDS - t0))
  power_cut
  echo "trial cut $1: ${at} s into boot $boot_no (slot $(loader_slot || true))${trial_slot:+, after slot $trial_slot was marked good}"
}
# The boot loader's environment torn by a power cut (its file empty, or garbage), once right
# after an install (the file said: the installed slot next, on trial) and once on a good slot.
# GRUB or U-Boot must read the backup (it says so on the console and with vantage.bootenv= on
# the kernel command line) and boot the slot the backup names; the health check writes the
# file again.
torn_env_cut() { # torn_env_cut WHAT SHELL-COMMAND-THAT-TEARS-IT EXPECTED-SLOT
  local what=$1 env=$bootenv_file name=${bootenv_file##*/}
  g "$2 $env && sync" || { bad "$what: could not tear $env"; return 1; }
  power_cut
  cut_check "$what" || return 1
  [ "$(slot_now)" = "$3" ] && ok "$what: $loader started slot $3, as the backup says" || bad "$what: slot $(slot_now), expected $3"
  grep -q "$bootenv_backup_said" "$console" && g "grep -q 'vantage.bootenv=$name.bak' /proc/cmdline" &&
    ok "$what: $loader read $name.bak (console and kernel command line)" || bad "$what: no sign that $loader read the backup"
  g "/usr/lib/vantage-image/bootenv list 2>&1 | grep -q '^ORDER=' && cmp $env $env.bak" &&
    ok "$what: $name written again, equal to its backup" ||
    bad "$what: $name after the boot: $(g "/usr/lib/vantage-image/bootenv list 2>&1; ls -l $env $env.bak" | tr '\n' ' ')"
}
torn_env_cuts() {
  local before out target
  before=$(slot_now)
  target=A
  [ "$before" = A ] && target=B
  out=$(g 'rauc install /data/again.raucb 2>&1; echo "rc=$?"')
  grep -q 'rc=0' <<<"$out" || { bad "torn ${bootenv_file##*/}: rauc install: $(tail -3 <<<"$out" | tr '\n' ' ')"; return; }
  torn_env_cut "${bootenv_file##*/} emptied after an install" ': >' "$target" || return
  torn_env_cut "${bootenv_file##*/} garbage on a good slot" 'head -c 1024 /dev/urandom >' "$target"
}
# Power cuts during installs and trials (--install-cuts, --trial-cuts), with the build "again".
update_cuts() {
  local k pct out ref=${fleet_install_s:-120} cut_slots=()
  [ $((install_cuts + trial_cuts)) -gt 0 ] || return 0
  g 'cat >/data/again.raucb && sync' <"$work/again.raucb"
  for k in $(seq 1 "$install_cuts"); do
    # Rising points of the install: 10 % ... 95 % (the slot written, then the boot env).
    pct=50
    [ "$install_cuts" -gt 1 ] && pct=$((10 + (k - 1) * 85 / (install_cuts - 1)))
    install_cut "$pct" "$ref"
    cut_check "install cut $k (at $pct %)" || return
  done
  for k in $(seq 1 "$trial_cuts"); do
    out=$(g 'rauc install /data/again.raucb 2>&1; echo "rc=$?"')
    grep -q 'rc=0' <<<"$out" || { bad "trial cut $k: rauc install: $(tail -3 <<<"$out" | tr '\n' ' ')"; return; }
    guest_reboot
    trial_cut "$k"
    cut_check "trial cut $k" || return
    if [ -n "$trial_slot" ]; then
      [ "$(slot_now)" = "$trial_slot" ] && ok "trial cut $k: the mark survived the cut, slot $trial_slot started again" ||
        bad "trial cut $k: slot $trial_slot was marked good before the cut, but slot $(slot_now) booted"
    fi
  done
  torn_env_cuts
  g 'rm -f /data/again.raucb /data/install.log'
  ok "$install_cuts power cuts during an install and $trial_cuts during a trial boot: every next boot came up on a good slot ($(printf '%s ' "${cut_slots[@]}"))"
}
# The page's Settings → Update, driven as its card drives it (web/app.js): the bundle file as
# the raw body (application/octet-stream) with the session cookie, X-CSRF-Token and the page's
# own Origin, through port 80 as a user opens the page. Nothing but the answer and GET
# /api/update tell the page what happened.
page_post() { # page_post BUNDLE-FILE: the upload, within the daemon's own 30 min limit
  local api_port=$p_http
  api_max=1800 api POST /api/update "@$1" application/octet-stream
}
# Files in the daemon's spool; nothing printed without the spool (the first upload makes it).
spool_files() { g 'cd /var/lib/private/vantage/update-spool && find . -type f | wc -l'; }
# Another signer's bundle: 422 naming the signature, the boot environment and the other slot as
# before, the status "failed" with the reason, nothing left in the spool.
page_foreign() {
  local env0 env1 msg
  env0=$(install_state)
  page_post "$work/foreign.raucb"
  msg=$(jqr .error)
  env1=$(install_state)
  if [ "$code" = 422 ] && grep -qi 'signature' <<<"$msg" && [ -n "$env0" ] && [ "$env0" = "$env1" ]; then
    ok "page: a bundle signed by another key is refused (422), nothing written: $msg"
  else bad "page: bundle of another signer: $code $(head -c 300 "$api_out") (slot or env changed: $([ "$env0" = "$env1" ] && echo no || echo yes))"; fi
  api GET /api/update
  if [ "$(jqr .phase)" = failed ] && [ "$(jqr .message)" = "$msg" ] && [ "$(spool_files)" = 0 ]; then
    ok "page: GET /api/update says failed with the same reason, the spool is empty"
  else bad "page: after the refusal: $(head -c 300 "$api_out"), $(spool_files) files in the spool"; fi
}
# GET /api/update every 2 s, as the card polls, until the install ends (at most 30 min); sets
# $phase and $seen, the progress values in the order seen.
page_poll() {
  local t0=$SECONDS pct last=""
  seen=""
  for _ in $(seq 900); do
    [ $((SECONDS - t0)) -lt 1800 ] || break
    api GET /api/update
    phase=$(jqr .phase) pct=$(jqr '.percent // empty')
    [ -n "$pct" ] && [ "$pct" != "$last" ] && { seen="$seen $pct"; last=$pct; }
    [ "$phase" = installed ] || [ "$phase" = failed ] && break
    sleep 2
  done
}
# The page's build: 202 once the signature checked out (the status then names its version),
# then polled until installed. The page does not reboot: the same slot still runs afterwards.
page_upload() {
  local t0=$SECONDS t1 t2 phase seen slot
  slot=$(slot_now)
  page_post "$work/page.raucb"
  t1=$SECONDS
  if [ "$code" = 202 ] && [ "$(jqr .version)" = "$version+page" ] && [ "$(jqr .source)" = upload ]; then
    ok "page: upload answered 202 after $((t1 - t0)) s, signature checked first (phase $(jqr .phase), version $(jqr .version))"
  else bad "page: upload of page.raucb: $code $(head -c 300 "$api_out")"; return 1; fi
  page_poll
  t2=$SECONDS
  if [ "$phase" = installed ] && [ "$(jqr .percent)" = 100 ] && tr ' ' '\n' <<<"${seen# }" | sort -n -c 2>/dev/null; then
    ok "page: installed $((t2 - t1)) s after the answer, progress seen:$seen ($(jqr .message))"
  else bad "page: install ended '$phase' after $((t2 - t1)) s, progress seen:$seen: $(head -c 300 "$api_out")"; return 1; fi
  figure "page update: upload and signature check of a $(($(stat -c %s "$work/page.raucb") / 1048576)) MiB bundle $((t1 - t0)) s, install $((t2 - t1)) s, $((t2 - t0)) s in all"
  sleep 5
  if kill -0 "$qpid" 2>/dev/null && [ "$(slot_now)" = "$slot" ] && g 'test ! -e /var/lib/private/vantage/reboot-request' &&
    [ "$(spool_files)" = 0 ]; then
    ok "page: no reboot by itself (still slot $slot, no reboot-request), the spool empty"
  else bad "page: after the install: slot $(slot_now) (was $slot), $(spool_files) files in the spool"; fi
}
# What Settings → Update shows after the reboot: the slot and build running, marked good, and
# the last trial's result for that slot and build.
page_shows() { # page_shows SLOT
  local expect="$1 $version+page $base_build-page good good $1 $base_build-page"
  api GET /api/update
  if [ "$(jqr '[.image.booted, .image.version, .image.build, .image.state, .image.last.result, .image.last.slot, .image.last.build] | join(" ")')" = "$expect" ]; then
    ok "page: GET /api/update shows slot $1, $version+page ($base_build-page) marked good, last trial good"
  else bad "page: GET /api/update after the reboot: $(jqr -c .image)"; fi
}
# After the reboot: the other slot with the page's build, marked good, the password, the config
# and the stored rounds kept. Uses update_checks' sum0 and before_rounds.
page_kept() { # page_kept FROM-SLOT
  local slot n
  slot=$(slot_now)
  if [ -n "$slot" ] && [ "$slot" != "$1" ] && [ "$(build_now)" = "$base_build-page" ]; then
    ok "page: the reboot started the other slot: $1 -> $slot, build $(build_now)"
  else bad "page: after the reboot slot '$slot' (was $1), build $(build_now)"; fi
  if health_wait "$slot" "$base_build-page"; then ok "page: slot $slot marked good by the health check"
  else bad "page: slot $slot not marked good: $(g 'journalctl -b -u vantage-image-health --no-pager | tail -5' | tr '\n' ' ')"; fi
  if login; then ok "page: the password survives the update (login)"; else bad "page: no login after the update"; return; fi
  if [ "$(config_sum)" = "$sum0" ]; then ok "page: the config survives the update"; else bad "page: config changed by the update"; fi
  stored "$(($(date +%s) + 60))"
  n=$(jqr '.samples | length')
  if [ "${n:-0}" -ge "$before_rounds" ]; then ok "page: stored rounds kept: $n now, $before_rounds before"
  else bad "page: stored rounds lost: $n now, $before_rounds before"; fi
  page_shows "$slot"
}
# Issue #18: on version N, install N+1 from the page, reboot as a person would; after it N+1
# runs with everything kept.
page_update() {
  local from
  page_foreign
  from=$(slot_now)
  page_upload || return
  guest_reboot
  start_qemu
  wait_metrics || { bad "page: after the reboot no /metrics"; show_console; return; }
  ssh_wait || { bad "page: after the reboot no SSH"; return; }
  page_kept "$from"
}
update_checks() {
  local before_rounds sum0 hostkey0 slot0 slot1 t0 out
  [ "$ab" = 1 ] || { bad "--update: the image has no data partition (not an A/B image)"; return; }
  wait "$prep_pid"
  base_build=$(cat "$work/base-build" 2>/dev/null)
  [ -n "$base_build" ] && [ -s "$work/next.raucb" ] && [ -s "$work/foreign.raucb" ] && [ -s "$work/broken.raucb" ] &&
    [ -s "$work/page.raucb" ] ||
    { bad "--update: no bundles made from $bundle: $(tail -3 "$work/prepare.log" | tr '\n' ' ')"; return; }
  figure "bundle size: $(stat -c %s "$work/next.raucb") bytes ($(($(stat -c %s "$work/next.raucb") / 1048576)) MiB), root file system image $(stat -c %s "$work/bundle-root/root.ext4") bytes"

  slot0=$(slot_now)
  health_wait "$slot0" "$(build_now)" && ok "slot $slot0 marked good by the health check ($health_took s after SSH)" ||
    bad "slot $slot0 never marked good: $(g 'journalctl -b -u vantage-image-health --no-pager | tail -5')"
  sum0=$(config_sum) hostkey0=$(g 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')
  hist_from=$((t_begin - 300))
  stored "$(($(date +%s) + 60))"; before_rounds=$(jqr '.samples | length')

  # Another signer: refused, the other slot and the boot environment untouched.
  g 'cat >/data/foreign.raucb' <"$work/foreign.raucb"
  env0=$(install_state)
  out=$(g 'rauc install /data/foreign.raucb 2>&1; echo "rc=$?"')
  env1=$(install_state)
  if grep -q 'rc=[1-9]' <<<"$out" && [ -n "$env0" ] && [ "$env0" = "$env1" ]; then
    ok "a bundle signed by another key is refused, nothing written: $(grep -i -m1 'error\|fail' <<<"$out")"
  else bad "bundle of another signer: $(tail -3 <<<"$out" | tr '\n' ' ') (slot or env changed: $([ "$env0" = "$env1" ] && echo no || echo yes))"; fi
  g 'rm -f /data/foreign.raucb'

  # The next build through the fleet path: installed by the daemon, the path unit reboots, the
  # other slot boots, everything kept.
  # (Offered only now: RAUC runs one install at a time, and the daemon tries a version once.)
  fleet_offer
  sum0=$(config_sum)
  fleet_update || return
  start_qemu
  wait_metrics && { ok "after the update: /metrics after $waited s"; figure "update: boot of the new slot to /metrics: $waited s"; } ||
    { bad "after the update: no /metrics"; show_console; return; }
  ssh_wait || { bad "after the update: no SSH"; return; }
  slot1=$(slot_now)
  [ -n "$slot1" ] && [ "$slot1" != "$slot0" ] && [ "$(build_now)" = "$base_build-next" ] &&
    ok "$loader started the other slot: $slot0 -> $slot1, build $(build_now)" ||
    bad "after the update: slot '$slot1' (was $slot0), build $(build_now)"
  # (GRUB's menu reaches the serial console on a BIOS boot only.)
  case "$(loader_slot)" in
    "$slot1") ok "the console shows $loader choosing slot $slot1" ;;
    "") [ "$arch" = amd64 ] || bad "the console shows no slot chosen by $loader" ;;
    *) bad "the console shows $loader choosing slot $(loader_slot), not $slot1" ;;
  esac
  t0=$SECONDS
  health_wait "$slot1" "$base_build-next" && { ok "slot $slot1 on trial marked good"
    figure "update: trial to good: $(g 'journalctl -b -u vantage-image-health --no-pager' | grep -o 'ready after [0-9]* s' | head -1) from the health check's start (early boot)"; } ||
    bad "slot $slot1 not marked good: $(g 'journalctl -b -u vantage-image-health --no-pager | tail -5' | tr '\n' ' ')"
  login && ok "the password survives the update (login)" || bad "no login after the update"
  [ "$(config_sum)" = "$sum0" ] && ok "the config survives the update" || bad "config changed by the update"
  stored "$(($(date +%s) + 60))"
  [ "$(jqr '.samples | length')" -ge "$before_rounds" ] && ok "stored rounds kept: $(jqr '.samples | length') now, $before_rounds before" ||
    bad "stored rounds lost: $(jqr '.samples | length') now, $before_rounds before"
  [ "$(g 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')" = "$hostkey0" ] && ok "SSH host key kept" || bad "SSH host key changed"
  [ "$(g hostname)" = "$host" ] && ok "host name kept ($host)" || bad "host name now $(g hostname)"
  ro_checks
  fleet_once

  # A broken build: the daemon exits at start; the device must come back on the good slot.
  g 'cat >/data/broken.raucb' <"$work/broken.raucb"
  out=$(g 'rauc install /data/broken.raucb 2>&1; echo "rc=$?"')
  grep -q 'rc=0' <<<"$out" && ok "rauc install of a broken build" || { bad "rauc install (broken): $(tail -3 <<<"$out" | tr '\n' ' ')"; return; }
  g 'rm -f /data/broken.raucb'
  guest_reboot
  start_qemu
  t0=$SECONDS
  # The broken slot boots, is not ready within its trial, and reboots by itself (QEMU exits).
  while kill -0 "$qpid" 2>/dev/null && [ $((SECONDS - t0)) -lt $((timeout + 300)) ]; do sleep 2; done
  if kill -0 "$qpid" 2>/dev/null; then bad "the broken slot did not reboot by itself in $((SECONDS - t0)) s"; show_console; power_cut
  else ok "the broken slot rebooted by itself after $((SECONDS - t0)) s"; qpid=""; fi
  [ "$(loader_slot)" = "$slot0" ] && ok "boot $boot_no was the broken slot $slot0" || echo "note: slot choice of boot $boot_no not seen on the console"
  start_qemu
  wait_metrics && ok "after the fallback: /metrics after $waited s" || { bad "after the fallback: no /metrics"; show_console; return; }
  ssh_wait
  [ "$(slot_now)" = "$slot1" ] && [ "$(build_now)" = "$base_build-next" ] &&
    ok "back on slot $slot1 (build $(build_now)) by itself" || bad "after the fallback: slot $(slot_now), build $(build_now)"
  out=$(g 'cat /var/lib/vantage-image/update/last')
  grep -q "rollback slot=$slot0 .*build=$base_build-broken" <<<"$out" && ok "the device says so: $out" || bad "update state: '$out'"
  grep -qP "^vantage_update_last_trial_timestamp_seconds\\{(?=[^}]*result=\"rollback\")(?=[^}]*slot=\"$slot0\")(?=[^}]*build=\"$base_build-broken\")" "$work/metrics" &&
    grep -qP "^vantage_update_slot_info\\{(?=[^}]*booted=\"true\")(?=[^}]*slot=\"$slot1\")" "$work/metrics" &&
    ok "/metrics says so too (the rollback, and slot $slot1 booted)" || bad "no rollback in /metrics: $(grep '^vantage_update' "$work/metrics" | tr '\n' ' ')"
  echo "rauc status: $(g 'rauc status 2>&1' | tr -s ' \n' ' ' | head -c 600)"
  login && ok "the password survives the rollback" || bad "no login after the rollback"
  [ "$(config_sum)" = "$sum0" ] && ok "the config survives the rollback" || bad "config changed by the rollback"
  stored "$(($(date +%s) + 60))"
  [ "$(jqr '.samples | length')" -ge "$before_rounds" ] && ok "stored rounds kept after the rollback: $(jqr '.samples | length')" ||
    bad "stored rounds lost in the rollback: $(jqr '.samples | length') now, $before_rounds before"
  page_update
  update_cuts
  clock_offset
}

if [ -n "$bundle" ]; then
  for t in rauc unsquashfs mksquashfs debugfs openssl python3 sha256sum; do command -v "$t" >/dev/null || { bad "host tool missing for --update: $t"; finish; }; done
  [ -f "$bundle" ] || { bad "no bundle $bundle (scripts/build-bundle.sh)"; finish; }
  prepare_bundles >"$work/prepare.log" 2>&1 &
  prep_pid=$!
  fleet_server && ok "fleet server: HTTPS on 127.0.0.1:$p_www (a test CA), $fleet_ip:443 for the guest" ||
    { bad "fleet server did not start: $(tail -3 "$work/fleet/server.log" "$work/fleet/openssl.log" 2>/dev/null | tr '\n' ' ')"; finish; }
fi

# Local metrics: Debian's node exporter, off on a fresh image, switched on through the page's
# API (the daemon writes its request, the image's root path unit applies it). Ends with the
# guest rebooted, /metrics answering and a session open again.
node_scrape() { curl -sf --max-time 10 "http://127.0.0.1:$p_node/metrics" -o "$work/node-metrics" 2>/dev/null; }
node_wait() { # node_wait SECONDS: until the exporter answers; sets $node_took
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$1" ]; do node_scrape && { node_took=$((SECONDS - t0)); return 0; }; sleep 2; done
  return 1
}
node_units() { g 'systemctl status --no-pager vantage-image-node-exporter.service prometheus-node-exporter.service 2>&1 | tail -20' | tr '\n' ' '; }
node_exporter_checks() {
  local dir=/var/lib/prometheus/node-exporter line='vantage_image_test_textfile{from="ssh"} 42' when
  if g 'ss -Htln "sport = :9100"' | grep -q . || node_scrape; then
    bad "node exporter listening on a fresh image"
  else ok "node exporter off on a fresh image (nothing on port 9100)"; fi
  api GET /api/node-exporter
  [ "$code" = 200 ] && [ "$(jqr .available)" = true ] && [ "$(jqr .enabled)" = false ] && [ "$(jqr .textfile_directory)" = "$dir" ] &&
    ok "the page offers local metrics, off ($dir, port $(jqr .port))" || bad "GET /api/node-exporter: $code $(head -c 300 "$api_out")"
  api PUT /api/node-exporter '{"enabled":true}'
  [ "$code" = 202 ] && ok "local metrics switched on through the page's API (202)" || bad "PUT /api/node-exporter: $code $(head -c 300 "$api_out")"
  node_wait 120 && ok "the node exporter answers on port 9100 after $node_took s" ||
    bad "nothing on port 9100 2 minutes after the switch: $(node_units)"
  api GET /api/node-exporter
  [ "$(jqr .enabled)" = true ] && [ "$(jqr .active)" = active ] && [ "$(jqr .pending)" = null ] &&
    ok "the page sees it on and running" || bad "GET /api/node-exporter after the switch: $(head -c 300 "$api_out")"
  # A local script's file, written whole (temp file, then rename) as the textfile collector wants.
  g "printf '# TYPE vantage_image_test_textfile gauge\n%s\n' '$line' >$dir/test.prom.tmp && mv $dir/test.prom.tmp $dir/test.prom"
  node_scrape && grep -qxF "$line" "$work/node-metrics" && ok "a .prom file dropped into $dir shows in the exporter's /metrics" ||
    bad "the .prom file is not in the exporter's /metrics: $(grep -c . "$work/node-metrics" 2>/dev/null) lines, $(grep textfile "$work/node-metrics" | head -3 | tr '\n' ' ')"
  if [ "$ab" = 1 ]; then
    g "test -L /data/overlay/etc/upper/systemd/system/multi-user.target.wants/prometheus-node-exporter.service && test -f /data/overlay/var/upper${dir#/var}/test.prom" &&
      ok "the switch (its unit link in /etc) and the file are on the data partition" || bad "the switch or the .prom file is not on /data"
  fi
  guest_reboot
  start_qemu
  wait_metrics || { bad "boot $boot_no after the switch: no /metrics"; show_console; }
  ssh_wait || bad "boot $boot_no: no SSH"
  login || bad "login after the reboot: $code"
  node_wait 120 && grep -qxF "$line" "$work/node-metrics" && ok "after a reboot the node exporter is still on, with the file" ||
    bad "after a reboot: nothing on port 9100 or no file: $(node_units)"
  api GET /api/node-exporter
  [ "$(jqr .enabled)" = true ] && ok "the page sees it on after the reboot" || bad "GET /api/node-exporter after the reboot: $(head -c 300 "$api_out")"
  # Switched off, and the power cut right after the answer: whether the helper ran before the
  # cut, was cut halfway or never started, the next boot has it off.
  api PUT /api/node-exporter '{"enabled":false}'
  local put=$code
  power_cut
  [ "$put" = 202 ] && ok "switched off through the page's API (202), power cut at once" || bad "PUT off: $put $(head -c 300 "$api_out")"
  start_qemu
  wait_metrics || { bad "boot $boot_no after the cut: no /metrics"; show_console; }
  ssh_wait || bad "boot $boot_no: no SSH"
  login || bad "login after the cut: $code"
  # The boot's own run of the switch comes after the exporter's start, and on a slow boot after
  # SSH and the page: the state the page shows once the boot is done.
  g 'timeout 300 systemctl is-system-running --wait' >/dev/null
  api GET /api/node-exporter
  if [ "$(jqr .enabled)" = false ] && [ "$(jqr .pending)" = null ] && ! g 'systemctl is-enabled --quiet prometheus-node-exporter' &&
    ! g 'ss -Htln "sport = :9100"' | grep -q .; then
    when=$(g 'journalctl -b -o cat --no-pager -u vantage-image-node-exporter' | grep -q 'switched off' && echo 'at this boot' || echo 'before the cut')
    ok "after the cut the switch off is applied ($when): nothing on port 9100, the page says off"
  else bad "after the cut: $(head -c 300 "$api_out"), $(node_units)"; fi
  clock_offset
}

# 1. First boot of the untouched image.
# 1. First boot of the untouched image.
t_begin=$(date +%s)
start_qemu
if wait_metrics; then
  ok "first boot: /metrics with both default probes succeeding after $waited s"
  figure "first boot to /metrics with probes succeeding: $waited s"
else bad "first boot: no successful /metrics within $timeout s"; show_console; finish; fi
# Port 80: the kernel redirects it to the daemon (vantage-image-port80.service).
curl -sf --retry 3 --retry-all-errors --max-time 60 "http://127.0.0.1:$p_http/" -o "$work/page" &&
  ok "the page answers on port 80 ($(wc -c <"$work/page") bytes)" || bad "nothing on port 80"
curl -sf --retry 3 --retry-all-errors --max-time 60 "http://127.0.0.1:$p_http/metrics" -o "$work/metrics80" &&
  grep -q '^vantage_build_info' "$work/metrics80" &&
  ok "port 80 reaches the daemon" || bad "port 80 does not reach the daemon"
if g true 2>/dev/null; then bad "SSH answers on a fresh image"; else ok "SSH is off on a fresh image"; fi

# The page on a fresh device, through port 80 as a user opens it: a password first, then a
# target added through the API and probed.
api_port=$p_http
api GET /api/auth/state
[ "$code" = 200 ] && [ "$(jqr .setup_required)" = true ] &&
  ok "the page asks for a password first (setup_required: true, $(jqr .password_min_chars) characters at least)" ||
  bad "GET /api/auth/state: $code $(head -c 300 "$api_out")"
[ "$(jqr .setup_code_required)" = true ] && ok "the page asks for the setup code (setup_code_required: true)" ||
  bad "setup_code_required is not true: $(head -c 300 "$api_out")"
api GET /api/targets
[ "$code" = 401 ] && ok "no password yet: everything else refused (GET /api/targets: 401)" ||
  bad "GET /api/targets before a password is set: $code"
api POST /api/auth/setup "{\"password\":\"$password\"}"
[ "${code:0:1}" = 4 ] && ok "setup without the setup code refused ($code)" || bad "setup without the code: $code"
api POST /api/auth/setup "{\"password\":\"$password\",\"setup_code\":\"0000-$setup_code\"}"
[ "${code:0:1}" = 4 ] && ok "setup with a wrong setup code refused ($code)" || bad "setup with a wrong code: $code"
api POST /api/auth/setup "{\"password\":\"short\",\"setup_code\":\"$setup_code\"}"
[ "${code:0:1}" = 4 ] && ok "a too short password refused ($code)" || bad "a 5-character password: $code"
origin=http://attacker.example
api POST /api/auth/setup "{\"password\":\"$password\",\"setup_code\":\"$setup_code\"}"
[ "$code" = 403 ] && ok "setup from a foreign Origin refused (403)" || bad "setup with a foreign Origin: $code"
origin=""
api POST /api/auth/setup "{\"password\":\"$password\",\"setup_code\":\"$setup_code\"}"
if [ "$code" = 201 ] && grep -q vantage_session "$jar"; then
  ok "password set through the page with the setup code (201, session cookie)"
else bad "POST /api/auth/setup: $code $(head -c 300 "$api_out")"; fi
api POST /api/auth/setup "{\"password\":\"$password-2\"}"
[ "$code" = 409 ] && ok "a second setup refused (409)" || bad "a second setup: $code"
api POST /api/auth/logout
rm -f "$jar"
api POST /api/auth/login "{\"password\":\"$password-wrong\"}"
[ "$code" = 401 ] && ok "a wrong password refused (401)" || bad "login with a wrong password: $code"
login && ok "login with the password set on first boot" || bad "login: $code $(head -c 300 "$api_out")"
# Port 80 keeps each client's address: what the daemon allows clients on the device itself
# without a session (GET /api/samples, POST /-/reload, ...) stays closed to the network.
token=$csrf csrf="" jar=$work/no-session
api GET "/api/samples?target=loopback-v4"
a=$code
api POST /-/reload
[ "$a" = 401 ] && [ "$code" = 401 ] && ok "through port 80 a client without a session is not taken for a local one (401, 401)" ||
  bad "through port 80 without a session: GET /api/samples $a, POST /-/reload $code (401 expected)"
jar=$work/cookies
api POST /api/targets "$(page_target)"
[ "$code" = 403 ] && ok "a save without X-CSRF-Token refused (403)" || bad "a save without the CSRF token: $code"
csrf=$token origin=http://attacker.example
api POST /api/targets "$(page_target)"
[ "$code" = 403 ] && ok "a save from a foreign Origin refused (403)" || bad "a save with a foreign Origin: $code"
origin=""
api POST /api/targets "$(page_target)"
if [ "$code" = 201 ]; then
  cfg_path=$(jqr .path)
  ok "target page-added (127.0.0.2) added through the page's API, saved to $cfg_path"
else bad "POST /api/targets: $code $(head -c 400 "$api_out")"; fi
want+=(page-added)
added=$SECONDS
if wait_metrics; then
  ok "the added target is probed: vantage_probe_success{target=\"page-added\"} 1 after $((SECONDS - added)) s"
else bad "target page-added not probed successfully within $timeout s"; grep page-added "$work/metrics" | head -5; fi
# The first power cut: right after the first boot.
sleep $((RANDOM % 10))
power_cut

# 2. SSH on with a key on the boot partition.
mcopy -i "$fat" "$ssh_key.pub" ::authorized_keys
start_qemu
wait_metrics && ok "boot with authorized_keys: /metrics after $waited s" || { bad "boot $boot_no: no /metrics"; show_console; }
# The first start of sshd makes its host keys: slow under emulation.
ssh_wait() {
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$timeout" ]; do g true 2>/dev/null && return 0; sleep 3; done
  return 1
}
if ssh_wait; then ok "SSH with the key from the boot partition"; else bad "SSH with the key"; show_console; finish; fi
g 'test -e /boot/firmware/authorized_keys' && bad "authorized_keys left on the boot partition" ||
  ok "authorized_keys consumed from the boot partition"
if ssh -p "$p_ssh" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
  -o PreferredAuthentications=password,keyboard-interactive -o ConnectTimeout=20 root@127.0.0.1 true 2>/dev/null; then
  bad "SSH lets someone in without a key"; else ok "SSH refuses anything but keys"; fi
g 'sshd -T' | grep -qx 'passwordauthentication no' && ok "sshd: PasswordAuthentication no" || bad "sshd allows passwords"
g 'passwd -S root' | grep -q ' L ' && ok "root has no usable password" || bad "root has a password: $(g 'passwd -S root')"
host=$(g hostname)
[ "$host" = vantage-3456 ] && ok "hostname $host (from the MAC 52:54:00:12:34:56)" || bad "hostname is '$host'"
g "journalctl -b -u avahi-daemon --no-pager" | grep -q "Host name is $host.local" &&
  ok "avahi announces $host.local" || bad "avahi does not announce $host.local"
# The image's config turns on what a device on a LAN wants: the daemon's own mDNS announcement
# and the gateway watch. The page's first save (stage 1) started from that file.
g "grep -qx '\[uplink\]' /etc/vantage/vantage.toml && ! grep -qx '\[discovery\]' /etc/vantage/vantage.toml" &&
  ok "the image's /etc/vantage/vantage.toml has [uplink] on, [discovery] left to avahi" || bad "/etc/vantage/vantage.toml: [uplink] off or [discovery] on"
g "grep -qx '\[uplink\]' '$cfg_path'" &&
  ok "the page's first save started from it ($cfg_path)" || bad "$cfg_path lacks [uplink]"
# QEMU's restricted network hands out no IPv4 default route, so the watch has no IPv4 gateway
# (it exports a family once it has seen a route); a route via QEMU's own address, which QEMU
# answers itself (nothing leaves the process), must show the gateway up.
g 'ip route add default via 10.0.2.2'
for _ in $(seq 30); do
  curl -sf --max-time 5 "http://127.0.0.1:$p_metrics/metrics" -o "$work/metrics" 2>/dev/null &&
    grep -Eq '^vantage_uplink_gateway_up\{family="ipv4"\} 1$' "$work/metrics" && break
  sleep 2
done
grep -Eq '^vantage_uplink_gateway_up\{family="ipv4"\} 1$' "$work/metrics" &&
  ok "uplink: gateway 10.0.2.2 answers once routed: $(grep -E '^vantage_uplink_gateway_(info|rtt)' "$work/metrics" | tr '\n' ' ')" ||
  bad "uplink with a default route: $(grep -E '^vantage_uplink_gateway' "$work/metrics" | tr '\n' ' ')"
# Browsing from the device itself: multicast stays inside the guest.
found=$(g 'vantage discover --timeout 5s' 2>&1)
grep -q "$host" <<<"$found" && ok "vantage discover on the device finds $host's _vantage._tcp announcement" ||
  bad "vantage discover on the device: $(head -5 <<<"$found" | tr '\n' ' ')"
g "journalctl -b -u avahi-daemon --no-pager" | grep -qi 'conflict' &&
  bad "avahi reports a name conflict: $(g "journalctl -b -u avahi-daemon --no-pager" | grep -i conflict | head -2)" ||
  ok "avahi announces the host and _vantage._tcp without a name conflict"
g 'test -f /etc/avahi/services/vantage-image.service && systemctl is-active --quiet avahi-daemon' &&
  ok "avahi publishes the _http._tcp service" || bad "avahi service file or daemon missing"
# An A/B image grows its data partition (the last one), others their root partition.
ab=0
g 'mountpoint -q /data' && ab=1
if [ "$ab" = 1 ]; then
  datasize=$(g 'df -B1 --output=size /data | tail -1' | tr -d ' ')
  [ "${datasize:-0}" -gt $((1536 * 1048576)) ] &&
    ok "data partition grown to the disk: $((datasize / 1048576)) MiB of a $((disk_bytes / 1048576)) MiB disk" ||
    bad "data partition not grown: ${datasize:-?} bytes on a $disk_bytes-byte disk"
  ro_checks
else
  rootsize=$(g 'df -B1 --output=size / | tail -1' | tr -d ' ')
  if [ "${rootsize:-0}" -gt $((img_bytes + 1024 * 1048576)) ]; then
    ok "root file system grown to the disk: $((rootsize / 1048576)) MiB of a $((disk_bytes / 1048576)) MiB disk"
  else bad "root file system not grown: ${rootsize:-?} bytes on a $disk_bytes-byte disk"; fi
fi
g 'journalctl --header | grep -q "^File path: /run/log/journal" && ! ls /var/log/journal/*/system.journal' >/dev/null 2>&1 &&
  ok "journal in RAM only" || bad "journal writes to the card"
g 'sysctl -n net.ipv4.ping_group_range' | grep -Eq '^0[[:space:]]+2147483647$' &&
  ok "unprivileged ICMP open" || bad "ping_group_range: $(g 'sysctl -n net.ipv4.ping_group_range')"
state=$(g 'timeout 300 systemctl is-system-running --wait')
[ "$state" = running ] && ok "systemctl is-system-running: running" ||
  bad "system state '$state': $(g 'systemctl --failed --no-legend --plain' | tr '\n' ';')"
g 'test -s /etc/ssh/ssh_host_ed25519_key' && ok "SSH host keys made on the device" || bad "no SSH host key"
arch_checks

# What the page set up survived the first power cut (the added target is in $want, so the
# boot above already saw it probed).
api_port=$p_metrics
api GET /api/auth/state
[ "$(jqr .setup_required)" = false ] && ok "the password survives a power cut (setup_required: false)" ||
  bad "after a power cut the page asks for a password again: $code $(head -c 200 "$api_out")"
login || bad "login after a power cut: $code"
g "vantage check-config '$cfg_path' >/dev/null" && ok "$cfg_path loads (vantage check-config)" ||
  bad "$cfg_path does not load: $(g "vantage check-config '$cfg_path'" 2>&1 | head -3)"
clock_offset

node_exporter_checks

[ -n "$bundle" ] && update_checks

# 3. Power cuts. The page's API saves the config in a loop (a PUT of page-added, its label
# alternating between two values: the daemon writes a temp file, fsyncs, renames, fsyncs the
# directory) while some of the cuts happen. Before each cut the stored rounds are read; after
# the next boot those at least 10 s older than the newest one read must all be there, and the
# newest stored round must be at most the store's window before the cut.
api PUT /api/targets/page-added "$(page_target a)"
sum_a=$(config_sum)
api PUT /api/targets/page-added "$(page_target b)"
sum_b=$(config_sum)
if [ ${#sum_a} = 16 ] && [ ${#sum_b} = 16 ] && [ "$sum_a" != "$sum_b" ]; then
  ok "config saved through the page's API: versions $sum_a and $sum_b"
else bad "saves through the API: '$sum_a' '$sum_b'"; fi
save_loop() { # in the background until killed (at most 2000 saves)
  local api_out=$work/loop.json code n
  for n in $(seq 1000); do
    api PUT /api/targets/page-added "$(page_target a)"
    echo "a $code" >>"$work/saves"
    api PUT /api/targets/page-added "$(page_target b)"
    echo "b $code" >>"$work/saves"
  done
}
window=5 slack=5 lpid="" q_upto="" cut_host="" losses=()
before_cut() { # the stored history just before a cut
  stored "$(($(date +%s) + 60))" || { bad "boot $boot_no: GET /api/samples: $code $(head -c 200 "$api_out")"; return; }
  q_last=$(jqr '[.samples[].timestamp] | max // 0')
  q_lim=$(awk -v l="$q_last" 'BEGIN { printf "%.3f", l - 10 }')
  q_upto=$(jq -r --argjson lim "$q_lim" '[.samples[] | select(.timestamp <= $lim)] | length' "$api_out")
  q_offset=$offset
}
pull_plug() { # pull_plug WHAT
  cut_host=$(date +%s.%N) cut_what=$1
  power_cut
  if [ -n "$lpid" ]; then
    kill "$lpid" 2>/dev/null
    wait "$lpid" 2>/dev/null
    lpid=""
    # What the save loop got: 200 per finished save; 000 for the one the cut interrupted.
    cut_what="$cut_what: $(grep -c ' 200$' "$work/saves") saves answered 200, the last one '$(tail -1 "$work/saves")'"
    while read -r n v c; do
      bad "a save through the API answered $c ($n times, version $v)"
    done < <(grep -Ev ' (200|000)$' "$work/saves" | sort | uniq -c)
    rm -f "$work/saves"
  fi
}
after_boot() { # cut NUMBER: the config, the store and / after the boot that followed a cut
  local i=$1 sum cfg fsck cut_guest last lost n
  sum=$(config_sum)
  case "$sum" in
    "$sum_a") cfg="config a" ;;
    "$sum_b") cfg="config b" ;;
    *) cfg="torn config"; bad "cut $i: config torn or unreadable ($sum)"; cut_fail=$((cut_fail + 1)) ;;
  esac
  g "vantage check-config '$cfg_path' >/dev/null" || { bad "cut $i: $cfg_path does not load"; cut_fail=$((cut_fail + 1)); }
  if [ "$ab" = 1 ]; then
    g 'findmnt -no OPTIONS / | grep -q "^ro" && findmnt -no OPTIONS /data | grep -q "^rw"' ||
      { bad "cut $i: / not read-only or /data not read-write"; cut_fail=$((cut_fail + 1)); }
  else
    g 'findmnt -no OPTIONS / | grep -q "^rw"' || { bad "cut $i: / not mounted read-write"; cut_fail=$((cut_fail + 1)); }
  fi
  fsck=$(g 'cat /run/initramfs/fsck.log 2>/dev/null | grep -Eo "clean|recovering journal|FIXED|fixed|Deleted|Clearing" | sort -u | tr "\n" " "')
  grep -Eq '^vantage_store_healthy(\{[^}]*\})? 1$' "$work/metrics" ||
    { bad "cut $i: store not healthy: $(grep '^vantage_store_healthy' "$work/metrics")"; cut_fail=$((cut_fail + 1)); }
  grep -Eq '^vantage_store_(quarantined_total|corrupt_blocks_total)(\{[^}]*\})? [1-9]' "$work/metrics" &&
    { bad "cut $i: store damaged: $(grep -E '^vantage_store_(quarantined|corrupt)' "$work/metrics" | tr '\n' ' ')"; cut_fail=$((cut_fail + 1)); }
  store_note="store: no reading before the cut"
  if [ -n "$q_upto" ] && [ -n "$cut_host" ]; then
    cut_guest=$(awk -v c="$cut_host" -v o="$q_offset" 'BEGIN { printf "%.3f", c + o }')
    if stored "$(awk -v c="$cut_guest" 'BEGIN { printf "%.3f", c + 1 }')"; then
      n=$(jq -r --argjson lim "$q_lim" '[.samples[] | select(.timestamp <= $lim)] | length' "$api_out")
      last=$(jqr '[.samples[].timestamp] | max // 0')
      lost=$(awk -v c="$cut_guest" -v l="$last" 'BEGIN { printf "%.1f", c - l }')
      losses+=("$lost")
      store_note="store: $n of $q_upto older rounds kept, newest round ${lost} s before the cut"
      [ "$n" = "$q_upto" ] && [ "$q_upto" -gt 0 ] ||
        { bad "cut $i: stored history lost: $n of $q_upto rounds older than $q_lim remain"; cut_fail=$((cut_fail + 1)); }
      awk -v l="$lost" -v w=$((window + slack)) 'BEGIN { exit !(l <= w) }' ||
        { bad "cut $i: the store lost ${lost} s before the cut (window ${window} s + ${slack} s for the commit)"; cut_fail=$((cut_fail + 1)); }
    else
      bad "cut $i: GET /api/samples after the boot: $code"; cut_fail=$((cut_fail + 1))
    fi
  fi
  echo "cut $i: boot $boot_no reached /metrics in $waited s after a cut while $cut_what; $cfg, $store_note, fsck: ${fsck:-no log}"
}
hist_from=$((t_begin - 300))
cut_fail=0 boot_times=()
before_cut
sleep $((RANDOM % 10))
pull_plug "probing (end of boot $boot_no)"
for i in $(seq 1 "$cuts"); do
  start_qemu
  if [ $((i % 5)) -eq 3 ]; then
    # While booting: kernel, fsck, first writes of the units.
    at=$((3 + RANDOM % 40))
    sleep "$at"
    power_cut
    echo "cut $i: power cut ${at} s into boot $boot_no"
    cut_what="${cut_what% (and*} (and ${at} s into boot $boot_no)"
    continue
  fi
  if ! wait_metrics; then
    bad "cut $i: boot $boot_no reached no successful /metrics in $timeout s"; show_console
    cut_fail=$((cut_fail + 1)); power_cut; continue
  fi
  boot_times+=("$waited")
  ssh_wait
  login || { bad "cut $i: no login after the boot"; cut_fail=$((cut_fail + 1)); }
  clock_offset
  after_boot "$i"
  what="probing"
  if [ $((i % 2)) -eq 0 ]; then
    save_loop >/dev/null 2>&1 &
    lpid=$!
    what="the page's API saved the config"
  fi
  sleep $((1 + RANDOM % 5))
  before_cut
  sleep $((1 + RANDOM % 10))
  pull_plug "$what"
done
if [ "$cuts" -gt 0 ]; then
  [ "$cut_fail" -eq 0 ] && ok "$cuts power cuts: every boot reached /metrics with every probe succeeding, config old or new, store healthy with its history, / read-write" ||
    bad "$cut_fail problems in $cuts power cuts"
fi
if [ ${#losses[@]} -gt 0 ]; then
  figure "store after a power cut: newest kept round $(printf '%s\n' "${losses[@]}" | sort -n | tail -1) s before the cut at most (median $(printf '%s\n' "${losses[@]}" | sort -n | sed -n "$(((${#losses[@]} + 1) / 2))p") s, ${#losses[@]} cuts; window ${window} s)"
fi

# One more boot: the last cut's check, then the wear measurement if asked, then a clean shutdown
# and an offline fsck.
start_qemu
if wait_metrics; then
  ok "boot after the last cut: /metrics after $waited s"
  boot_times+=("$waited")
  ssh_wait
  login || bad "no login after the last cut"
  cut_fail=0
  after_boot "$((cuts + 1))"
  [ "$cut_fail" -eq 0 ] && ok "after the last cut: config, store history and / intact"
else bad "boot after the last cut: no /metrics"; show_console; fi

# 4. Wear: bytes written per hour with 100 targets on guest loopback addresses (127.0.0.0/8
# all answers inside the guest), default settings, added through the API. Counted by the
# guest's block layer per partition (/sys/class/block/*/stat, sectors written), after a
# minute for the new targets to settle; the daemon's own share from /proc/PID/io and ext4's
# journal share from jbd2 are printed next to it.
if [ "$wear" -gt 0 ]; then
  api GET /api/targets
  have=$(jqr '.targets | length')
  added=0
  for n in $(seq 10 250); do
    [ $((have + added)) -ge 100 ] && break
    api POST /api/targets "{\"name\":\"wear-$n\",\"host\":\"127.0.0.$n\",\"probes\":[\"ping\"]}"
    [ "$code" = 201 ] && added=$((added + 1)) || { bad "wear: POST /api/targets wear-$n: $code $(head -c 200 "$api_out")"; break; }
  done
  want=(loopback-v4 loopback-v6 page-added wear-10 "wear-$((9 + added))")
  qstart=$(date +%s)
  wait_metrics || true
  targets=$(grep -c '^vantage_probe_success{' "$work/metrics")
  succeeding=$(grep -c '^vantage_probe_success{.*} 1$' "$work/metrics")
  echo "wear: $targets targets probed ($added added through the API), $succeeding succeeding"
  [ "$targets" -ge 100 ] && ok "wear: $targets targets probed" || bad "wear: only $targets targets"
  # One line of counters: per partition "name sectors-written", then the daemon's write_bytes,
  # then ext4's and jbd2's writes of the file system the store is on (if the kernel lists
  # them): the root partition, or /data under a read-only A/B slot.
  wear_fs=/
  [ "${ab:-0}" = 1 ] && wear_fs=/data
  counters() {
    g 'disk=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")
       for p in /sys/class/block/$disk/$disk*/; do echo "part:$(basename $p) $(awk "{print \$7}" $p/stat)"; done
       echo "daemon $(awk "/^write_bytes/ {print \$2}" /proc/$(systemctl show -p MainPID --value vantage)/io)"
       echo "store $(du -sb /var/lib/vantage/ /var/lib/private/vantage/ 2>/dev/null | sort -n | tail -1 | cut -f1)"
       dev=$(basename $(readlink -f $(findmnt -no SOURCE '"$wear_fs"')))
       echo "ext4 $(cat /sys/fs/ext4/$dev/lifetime_write_kbytes)"
       awk "/ transactions/ {t = \$1} / logged blocks per transaction/ {b = \$1} END {print \"jbd2 \" t, b}" /proc/fs/jbd2/$dev-*/info' 2>/dev/null
    curl -sf --max-time 10 "http://127.0.0.1:$p_metrics/metrics" | grep -E '^vantage_store_(samples|commits_total|written_bytes_total) ' |
      sed 's/^vantage_store_//'
  }
  sleep 60
  c0=$(counters) t0=$(date +%s)
  sleep $((wear * 60))
  c1=$(counters) t1=$(date +%s)
  probes_ok "$p_metrics" || true
  secs=$((t1 - t0))
  per_hour() { # per_hour KEY: (after - before) * unit scaled to one hour, in bytes
    local unit=$2
    awk -v k="$1" -v s="$secs" -v u="$unit" 'FNR == NR { if ($1 == k) a = $2; next } $1 == k { printf "%.0f", ($2 - a) * u * 3600 / s }' \
      <(echo "$c0") <(echo "$c1")
  }
  mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
  echo "wear counters before:"; echo "$c0" | sed 's/^/  /'; echo "wear counters after $secs s:"; echo "$c1" | sed 's/^/  /'
  total=0 parts=""
  for p in $(echo "$c1" | awk '$1 ~ /^part:/ {print $1}'); do
    b=$(per_hour "$p" 512)
    total=$((total + b)) parts="$parts, ${p#part:} $(mb "$b") MB/h"
  done
  daemon=$(per_hour daemon 1) ext4=$(per_hour ext4 1024)
  # The journal: commits in the window times the average logged blocks of a commit (4 KiB).
  jbd2=$(awk -v s="$secs" 'FNR == NR { if ($1 == "jbd2") a = $2; next } $1 == "jbd2" { printf "%.0f", ($2 - a) * $3 * 4096 * 3600 / s }' \
    <(echo "$c0") <(echo "$c1"))
  rounds=$(per_hour samples 1) commits=$(per_hour commits_total 1) stored=$(per_hour written_bytes_total 1)
  succeeding=$(grep -c '^vantage_probe_success{.*} 1$' "$work/metrics")
  figure "wear: $(mb "$total") MB/hour written to the disk with $targets targets at default settings ($succeeding succeeding), over $((secs / 60)) min${parts}"
  figure "wear breakdown per hour: the daemon's writes (/proc/PID/io) $(mb "$daemon") MB, all of ext4 on $wear_fs $(mb "$ext4") MB, of it its journal about $(mb "${jbd2:-0}") MB; the store committed $(mb "$stored") MB of encoded rounds ($rounds rounds, $commits commits)"
  [ "$total" -lt 50000000 ] && ok "wear: $(mb "$total") MB/hour, under the 50 MB/hour goal" ||
    bad "wear: $(mb "$total") MB/hour, over the 50 MB/hour goal"
fi

g 'systemctl poweroff' >/dev/null 2>&1
for _ in $(seq 120); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
if kill -0 "$qpid" 2>/dev/null; then bad "no clean shutdown in 120 s"; power_cut; else wait "$qpid"; qpid=""; ok "clean shutdown"; fi
rootloop=$(losetup --find --show --read-only --offset "$root_off" "$disk")
if e2fsck -fn "$rootloop" >"$work/fsck.out" 2>&1; then
  ok "root file system clean after $cuts power cuts: $(tail -1 "$work/fsck.out")"
else bad "root file system has errors:"; tail -20 "$work/fsck.out"; fi
losetup -d "$rootloop"
if [ "${ab:-0}" = 1 ]; then
  rootloop=$(losetup --find --show --read-only --offset "$(($(sector_start "$DATA_PART") * 512))" "$disk")
  if e2fsck -fn "$rootloop" >"$work/fsck.out" 2>&1; then
    ok "data file system clean: $(tail -1 "$work/fsck.out")"
  else bad "data file system has errors:"; tail -20 "$work/fsck.out"; fi
fi

if [ ${#boot_times[@]} -gt 0 ]; then
  sorted=$(printf '%s\n' "${boot_times[@]}" | sort -n)
  figure "later boots to /metrics: min $(head -1 <<<"$sorted") s, median $(sed -n "$(((${#boot_times[@]} + 1) / 2))p" <<<"$sorted") s, max $(tail -1 <<<"$sorted") s over ${#boot_times[@]} boots"
fi
finish
