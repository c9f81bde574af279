#!/usr/bin/env bash
# Cross builds under qemu-user: the aarch64 and armv7 binaries, built as scripts/build-firmware.sh
# builds them (the `ci` profile: release without LTO), run through binfmt_misc as they would on a
# board: --version, check-config on the sample config, and a short `vantage run` that pings
# 127.0.0.1 and answers /metrics. The probing core's unit tests (no root needed) run for aarch64
# under qemu-user through the runner set in .cargo/config.toml. The builds include the LED
# crate with its GPIO backend (rppal) for both Pi targets.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# It runs beside the central-view suite, which mostly waits through its outage, and the fuzz
# targets; at a lower priority, so the central view's daemon keeps its rounds on time.
renice -n 10 -p $$ >/dev/null 2>&1 || true

pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit
}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# binfmt_misc lets the kernel hand foreign ELF files to qemu, so the binaries run as on a board.
# The handlers come from qemu-user-static; binfmt-support registers them when it can.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    echo "note: cannot mount binfmt_misc: $(id -un) lacks the right, or the kernel the module"
fi
for h in qemu-aarch64 qemu-arm; do
  [ -e "/proc/sys/fs/binfmt_misc/$h" ] || update-binfmts --enable "$h" >/dev/null 2>&1 || true
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
if scripts/build-firmware.sh --profile ci aarch64 armv7 > "$work/build.log" 2>&1; then
  ok "build-firmware.sh --profile ci aarch64 armv7"
  sed -n '/^artefact/,$p' "$work/build.log"
else
  tail -30 "$work/build.log"
  bad "build-firmware.sh --profile ci aarch64 armv7"
  finish
fi

# One port per arch and run, so suites running side by side do not collide.
port_base=$((20000 + $$ % 20000))

check_arch() {
  local triple=$1 arch=$2 sysroot=$3 qemu=$4 port=$5
  local bin="dist/vantage-$version-$triple"
  local run=("$bin")
  # The binary's ELF header must name the target machine, or qemu is not what runs it.
  if readelf -h "$bin" | grep -q "Machine:.*$(case $arch in aarch64) echo AArch64 ;; armv7) echo ARM ;; esac)"; then
    ok "$arch: ELF machine type"
  else
    bad "$arch: ELF machine type: $(readelf -h "$bin" | grep Machine)"
  fi
  if [ -e "/proc/sys/fs/binfmt_misc/$qemu" ] && grep -q enabled "/proc/sys/fs/binfmt_misc/$qemu"; then
    echo "note: $arch runs through binfmt_misc ($qemu)"
  else
    echo "note: binfmt_misc has no enabled $qemu handler; calling ${qemu}-static directly"
    run=("${qemu}-static" "$bin")
  fi
  # Where the loader and libc of the target are (Debian's cross libc6 packages).
  export QEMU_LD_PREFIX=$sysroot

  local out
  out=$("${run[@]}" --version 2>&1)
  if [ "$out" = "vantage $version" ]; then ok "$arch: --version"; else bad "$arch: --version printed '$out'"; fi

  local n
  n=$(grep -c '^\[\[targets\]\]' firmware/vantage/vantage.toml)
  out=$("${run[@]}" check-config firmware/vantage/vantage.toml 2>&1)
  if [ $? -eq 0 ] && grep -q "OK ($n targets)" <<<"$out"; then
    ok "$arch: check-config on the sample config"
  else
    bad "$arch: check-config on the sample config: $out"
  fi
  # A bad config must fail with the line and field named, under emulation as natively.
  printf '[[targets]]\nname = "x"\nhost = "127.0.0.1"\nprobes = ["ping"]\ninterval = "soon"\n' > "$work/bad.toml"
  out=$("${run[@]}" check-config "$work/bad.toml" 2>&1)
  if [ $? -ne 0 ] && grep -q "bad.toml:5:[0-9]*: targets\[0\].interval" <<<"$out"; then
    ok "$arch: check-config rejects a bad interval with line and field"
  else
    bad "$arch: check-config on a bad config: $out"
  fi

  cat > "$work/run.toml" <<EOF
[defaults]
interval = "200ms"

[[targets]]
name = "self"
host = "127.0.0.1"
probes = ["ping"]
EOF
  mkdir -p "$work/data-$arch"
  "${run[@]}" run --config "$work/run.toml" --listen "127.0.0.1:$port" --data-dir "$work/data-$arch" \
    > "$work/run-$arch.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  # Up to 30 s: emulated start-up on a loaded 2-core machine is slow; a few rounds must land.
  local metrics="" received=0
  for _ in $(seq 60); do
    metrics=$(curl -sf --max-time 2 "http://127.0.0.1:$port/metrics" || true)
    received=$(sed -n 's/^vantage_ping_packets_received_total{.*target="self".*} \([0-9]*\)$/\1/p' <<<"$metrics")
    [ "${received:-0}" -ge 3 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ "${received:-0}" -ge 3 ]; then
    ok "$arch: vantage run pings 127.0.0.1 ($received replies) and answers /metrics"
  else
    bad "$arch: vantage run: no ping replies in /metrics"
    tail -20 "$work/run-$arch.log"
  fi
  local want_arch
  want_arch=$(case $arch in aarch64) echo aarch64 ;; armv7) echo arm ;; esac)
  if grep -q "^vantage_build_info{arch=\"$want_arch\"" <<<"$metrics"; then
    ok "$arch: /metrics reports arch=\"$want_arch\""
  else
    bad "$arch: vantage_build_info: $(grep '^vantage_build_info' <<<"$metrics")"
  fi
  kill -TERM "$pid" 2>/dev/null
  local stopped=0
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || { stopped=1; break; }; sleep 0.25; done
  if [ $stopped = 1 ] && wait "$pid"; then
    ok "$arch: SIGTERM stops the daemon cleanly"
  else
    bad "$arch: the daemon did not exit 0 within 10 s of SIGTERM"
    kill -KILL "$pid" 2>/dev/null
  fi
  unset QEMU_LD_PREFIX
}

check_arch aarch64-unknown-linux-gnu aarch64 /usr/aarch64-linux-gnu qemu-aarch64 "$port_base"
check_arch armv7-unknown-linux-gnueabihf armv7 /usr/arm-linux-gnueabihf qemu-arm "$((port_base + 1))"

# The core's unit tests, compiled for aarch64 and run by the qemu runner of .cargo/config.toml.
if cargo test --locked -p vantage-core --lib --target aarch64-unknown-linux-gnu \
  > "$work/test.log" 2>&1; then
  ok "vantage-core unit tests on aarch64 under qemu-user: $(grep '^test result' "$work/test.log" | head -1)"
else
  tail -30 "$work/test.log"
  bad "vantage-core unit tests on aarch64 under qemu-user"
fi

finish
