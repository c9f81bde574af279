#!/usr/bin/env bash
# Boots the built image in QEMU and checks the promise "flash, plug in, open the page" from the
# host. arm64: -M virt, the kernel and initramfs taken from the image's boot partition. amd64:
# q35 booting the image's own boot loader from the disk, UEFI with Secure Boot on (OVMF with
# Microsoft's keys) and legacy BIOS (SeaBIOS) in turn, boot after boot. Both: the image as a
# virtio disk, user networking restricted to host port forwards on 127.0.0.1. The checks:
#
#   1. first boot of the untouched image: /metrics answers with the default probes succeeding,
#      the page answers on port 80, SSH is off;
#   2. an authorized_keys file dropped on the boot partition turns SSH on (keys only): through
#      it, the hostname vantage-XXXX, its mDNS announcement, the root partition grown to the
#      disk, volatile journal, no failed unit;
#   3. power cuts: QEMU killed at random moments (while booting, while probing, while the
#      config is being saved), booted again, --cuts times: every boot reaches /metrics with
#      its probes succeeding, the config is the old or the new one (never torn), the root file
#      system mounts (repaired at boot if needed);
#   4. a clean shutdown, then e2fsck -fn of the root partition from the host: clean.
#
#   scripts/test-image.sh [IMAGE.img.xz|IMAGE.img]   default dist/vantage-<version>-<arch>.img.xz
#     --arch A         arm64 or amd64 (default: from the image's name, else arm64)
#     --firmware F     amd64: uefi, bios, or alternate (default: BIOS on odd boots, UEFI on even)
#     --cuts N         power cuts (default 20)
#     --timeout S      seconds a boot may take to answer /metrics (default 600: TCG is slow)
#     --wear MINUTES   also measure bytes written to the disk per hour with 100 ping targets
#                      (not yet run: see docs/BENCHMARKS.md)
#   QEMU=path/to/qemu-system-aarch64, QEMU_ARGS="-L dir" to use another QEMU;
#   OVMF_CODE=, OVMF_VARS= other UEFI firmware (default Debian's ovmf, Secure Boot, MS keys).
#
# Prints one "figure:" line per measurement and a final "N passed, N failed". Takes 15-40
# minutes (each boot is 1-2 minutes under emulation): not part of scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

cuts=20 timeout=600 wear=0 image="" arch="" firmware=alternate
while [ $# -gt 0 ]; do
  case "$1" in
    --cuts) cuts=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --wear) wear=${2:?}; shift 2 ;;
    --arch) arch=${2:?}; shift 2 ;;
    --firmware) firmware=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  arm64) QEMU=${QEMU:-qemu-system-aarch64} ;;
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

for t in "$QEMU" mcopy mdel sfdisk xz curl ssh ssh-keygen e2fsck losetup; do
  command -v "$t" >/dev/null || { bad "host tool missing: $t"; finish; }
done
if [ "$arch" = amd64 ]; then
  for f in "$OVMF_CODE" "$OVMF_VARS"; do [ -f "$f" ] || { bad "no UEFI firmware $f (apt install ovmf)"; finish; }; done
fi
[ -f "$image" ] || { bad "no image $image (scripts/build-image.sh --arch $arch builds it)"; finish; }
if [ -f "$image.sha256" ]; then
  (cd "$(dirname "$image")" && sha256sum -c --quiet "$(basename "$image").sha256") &&
    ok "image checksum matches" || bad "image checksum"
fi

work=$(mktemp -d)
qpid=""
cleanup() {
  [ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
  [ -n "${rootloop:-}" ] && losetup -d "$rootloop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

disk=$work/disk.img
case "$image" in *.xz) xz -dc "$image" >"$disk" ;; *) cp "$image" "$disk" ;; esac
img_bytes=$(stat -c %s "$disk")
# A bigger "card" than the image, for the first-boot expansion to fill.
truncate -s 3G "$disk"
disk_bytes=$(stat -c %s "$disk")
sector_start() { sfdisk --json "$disk" | tr -d ' \n' | grep -o '"start":[0-9]*' | sed -n "${1}p" | cut -d: -f2; }
boot_off=$(($(sector_start 1) * 512))
root_off=$(($(sector_start 2) * 512))
export MTOOLS_SKIP_CHECK=1
fat="$disk@@$boot_off"

case "$arch" in
  arm64)
    # Kernel, initramfs and command line from the boot partition, as the Pi's firmware reads them.
    mcopy -i "$fat" ::cmdline.txt "$work/cmdline.txt"
    kernel=$(mdir -b -i "$fat" :: | sed 's|^::/||' | grep -m1 '^vmlinuz-')
    initrd=$(mdir -b -i "$fat" :: | sed 's|^::/||' | grep -m1 '^initrd.img-')
    mcopy -i "$fat" "::$kernel" "$work/vmlinuz" && mcopy -i "$fat" "::$initrd" "$work/initrd" &&
      ok "kernel $kernel and $initrd on the boot partition" || { bad "no kernel or initramfs on the boot partition"; finish; }
    # The Pi's serial consoles become the virt board's PL011.
    cmdline="$(tr -s ' \n' ' ' <"$work/cmdline.txt" | sed -E 's/(^| )console=[^ ]*//g') console=ttyAMA0"
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
    if [ -w /dev/kvm ]; then
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
p_metrics=$(free_port) p_http=$(free_port) p_ssh=$(free_port)

boot_no=0
start_qemu() {
  boot_no=$((boot_no + 1))
  console=$work/console-$boot_no.log
  local machine fw
  case "$arch" in
    arm64) machine=(-M virt -cpu cortex-a72 -kernel "$work/vmlinuz" -initrd "$work/initrd" -append "$cmdline") ;;
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
  # restrict=on: the guest reaches nothing but the forwarded ports (no NTP, no DNS outside).
  "$QEMU" "${qemu_args[@]}" "${machine[@]}" -smp 2 -m 1024 \
    -drive "file=$disk,format=raw,if=none,id=d0,cache=writeback" -device virtio-blk-pci,drive=d0,bootindex=0 \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$p_metrics-:9430,hostfwd=tcp:127.0.0.1:$p_http-:80,hostfwd=tcp:127.0.0.1:$p_ssh-:22" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -display none -serial "file:$console" -monitor none -no-reboot &
  qpid=$!
  qstart=$(date +%s)
}
power_cut() { kill -9 "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; qpid=""; }

# wait_metrics: until /metrics shows both default targets succeeding; sets $waited.
probes_ok() {
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" >"$work/metrics" 2>/dev/null || return 1
  grep -Eq '^vantage_probe_success\{.*target="loopback-v4".*\} 1$' "$work/metrics" &&
    grep -Eq '^vantage_probe_success\{.*target="loopback-v6".*\} 1$' "$work/metrics"
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
  [ "$arch" = amd64 ] || return 0
  local sb
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

# 1. First boot of the untouched image.
start_qemu
if wait_metrics; then
  ok "first boot: /metrics with both default probes succeeding after $waited s"
  figure "first boot to /metrics with probes succeeding: $waited s"
else bad "first boot: no successful /metrics within $timeout s"; show_console; finish; fi
# Port 80 is socket-activated: the first connection starts the proxy, slow under emulation.
curl -sf --retry 3 --retry-all-errors --max-time 60 "http://127.0.0.1:$p_http/" -o "$work/page" &&
  ok "the page answers on port 80 ($(wc -c <"$work/page") bytes)" || bad "nothing on port 80"
curl -sf --retry 3 --retry-all-errors --max-time 60 "http://127.0.0.1:$p_http/metrics" | grep -q '^vantage_build_info' &&
  ok "port 80 reaches the daemon" || bad "port 80 does not reach the daemon"
if g true 2>/dev/null; then bad "SSH answers on a fresh image"; else ok "SSH is off on a fresh image"; fi
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
g 'test -f /etc/avahi/services/vantage-image.service && systemctl is-active --quiet avahi-daemon' &&
  ok "avahi publishes the _http._tcp service" || bad "avahi service file or daemon missing"
rootsize=$(g 'df -B1 --output=size / | tail -1' | tr -d ' ')
if [ "${rootsize:-0}" -gt $((img_bytes + 1024 * 1048576)) ]; then
  ok "root file system grown to the disk: $((rootsize / 1048576)) MiB of a $((disk_bytes / 1048576)) MiB disk"
else bad "root file system not grown: ${rootsize:-?} bytes on a $disk_bytes-byte disk"; fi
g 'journalctl --header | grep -q "^File path: /run/log/journal" && ! ls /var/log/journal/*/system.journal' >/dev/null 2>&1 &&
  ok "journal in RAM only" || bad "journal writes to the card"
g 'sysctl -n net.ipv4.ping_group_range' | grep -Eq '^0[[:space:]]+2147483647$' &&
  ok "unprivileged ICMP open" || bad "ping_group_range: $(g 'sysctl -n net.ipv4.ping_group_range')"
state=$(g 'timeout 300 systemctl is-system-running --wait')
[ "$state" = running ] && ok "systemctl is-system-running: running" ||
  bad "system state '$state': $(g 'systemctl --failed --no-legend --plain' | tr '\n' ';')"
g 'test -s /etc/ssh/ssh_host_ed25519_key' && ok "SSH host keys made on the device" || bad "no SSH host key"
arch_checks

# 3. Power cuts. Two configs the "save" alternates between, written the documented way (temp
# file, fsync, rename, fsync of the directory), then a reload.
g 'set -e; cd /etc/vantage; cp vantage.toml /root/config-a.toml;
   cp vantage.toml /root/config-b.toml
   printf "\n[[targets]]\nname = \"loopback-saved\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n" >>/root/config-b.toml
   vantage check-config /root/config-b.toml >/dev/null
   cat >/root/save-loop <<EOF
#!/bin/sh
while :; do
  for v in a b; do
    cp /root/config-\$v.toml /etc/vantage/.vantage.toml.new
    sync /etc/vantage/.vantage.toml.new
    mv -f /etc/vantage/.vantage.toml.new /etc/vantage/vantage.toml
    sync /etc/vantage
    systemctl reload vantage
    sleep 0.\$(shuf -i 1-9 -n 1)
  done
done
EOF
   chmod 0755 /root/save-loop' || bad "could not prepare the config-save loop"
sum_a=$(g 'sha256sum </root/config-a.toml') sum_b=$(g 'sha256sum </root/config-b.toml')
cut_fail=0 boot_times=()
power_cut
for i in $(seq 1 "$cuts"); do
  start_qemu
  if [ $((i % 5)) -eq 3 ]; then
    # While booting: kernel, fsck, first writes of the units.
    at=$((3 + RANDOM % 40))
    sleep "$at"
    power_cut
    echo "cut $i: power cut ${at} s into boot $boot_no"
    continue
  fi
  if ! wait_metrics; then
    bad "cut $i: boot $boot_no reached no successful /metrics in $timeout s"; show_console
    cut_fail=$((cut_fail + 1)); power_cut; continue
  fi
  boot_times+=("$waited")
  ssh_wait
  sum=$(g 'sha256sum </etc/vantage/vantage.toml')
  case "$sum" in
    "$sum_a") cfg="old config" ;;
    "$sum_b") cfg="new config" ;;
    *) cfg="torn config"; bad "cut $i: config torn (sha256 $sum)"; cut_fail=$((cut_fail + 1)) ;;
  esac
  g 'vantage check-config /etc/vantage/vantage.toml >/dev/null' || { bad "cut $i: config does not load"; cut_fail=$((cut_fail + 1)); }
  fsck=$(g 'cat /run/initramfs/fsck.log 2>/dev/null | grep -E "clean|recover|FIXED|fixed|Deleted|Clearing" | tr "\n" " "')
  g 'findmnt -no OPTIONS / | grep -q "^rw"' || { bad "cut $i: / not mounted read-write"; cut_fail=$((cut_fail + 1)); }
  what="probing"
  if [ $((i % 2)) -eq 0 ]; then
    g 'setsid /root/save-loop >/dev/null 2>&1 </dev/null &'
    what="saving the config"
  fi
  at=$((1 + RANDOM % 15))
  sleep "$at"
  power_cut
  echo "cut $i: boot $boot_no reached /metrics in $waited s, $cfg (fsck: ${fsck:-no log}); power cut ${at} s later while $what"
done
[ "$cut_fail" -eq 0 ] && ok "$cuts power cuts: every boot reached /metrics with probes succeeding, config old or new, / read-write" ||
  bad "$cut_fail problems in $cuts power cuts"

# 4. One more boot, then a clean shutdown and an offline fsck.
start_qemu
if wait_metrics; then
  ok "boot after the last cut: /metrics after $waited s"
  boot_times+=("$waited")
else bad "boot after the last cut: no /metrics"; show_console; fi
if [ "$wear" -gt 0 ]; then
  # 100 targets on loopback (127.0.0.1-100 all answer), default intervals; the disk's own
  # counter of sectors written, before and after.
  g 'set -e; cp /etc/vantage/vantage.toml /root/config-wear.toml
     for n in $(seq 1 100); do printf "\n[[targets]]\nname = \"wear-%s\"\nhost = \"127.0.0.%s\"\nprobes = [\"ping\"]\n" $n $n; done >>/root/config-wear.toml
     sed -i "/^name = \"loopback-v[46]\"/,+0d" /root/config-wear.toml
     vantage check-config /root/config-wear.toml >/dev/null || cp /etc/vantage/vantage.toml /root/config-wear.toml' || true
  g 'cp /root/config-wear.toml /etc/vantage/vantage.toml && sync && systemctl reload vantage'
  sleep 60
  w0=$(g "awk '{print \$7}' /sys/block/vda/stat")
  sleep $((wear * 60))
  w1=$(g "awk '{print \$7}' /sys/block/vda/stat")
  targets=$(curl -sf "http://127.0.0.1:$p_metrics/metrics" | grep -c '^vantage_probe_success{')
  bytes=$(((w1 - w0) * 512 * 60 / wear))
  figure "bytes written to the disk per hour with $targets targets: $bytes ($((bytes / 1048576)) MiB/h, measured over $wear min)"
fi
g 'systemctl poweroff' >/dev/null 2>&1
for _ in $(seq 120); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
if kill -0 "$qpid" 2>/dev/null; then bad "no clean shutdown in 120 s"; power_cut; else wait "$qpid"; qpid=""; ok "clean shutdown"; fi
rootloop=$(losetup --find --show --read-only --offset "$root_off" "$disk")
if e2fsck -fn "$rootloop" >"$work/fsck.out" 2>&1; then
  ok "root file system clean after $cuts power cuts: $(tail -1 "$work/fsck.out")"
else bad "root file system has errors:"; tail -20 "$work/fsck.out"; fi

if [ ${#boot_times[@]} -gt 0 ]; then
  sorted=$(printf '%s\n' "${boot_times[@]}" | sort -n)
  figure "later boots to /metrics: min $(head -1 <<<"$sorted") s, median $(sed -n "$(((${#boot_times[@]} + 1) / 2))p" <<<"$sorted") s, max $(tail -1 <<<"$sorted") s over ${#boot_times[@]} boots"
fi
finish
