#!/usr/bin/env bash
# The image's status-LED device tree writer (buildroot-overlay/usr/lib/vantage-image/dt-leds)
# against small device trees shaped like the Pi's: nodes and properties written, a second run
# replaces rather than duplicates, LEDS from the config file, a bad pin refused, a tree without
# the GPIO controller left alone. Needs device-tree-compiler; a second or two.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# shellcheck source=scripts/lib/checks.sh
. scripts/lib/checks.sh
for t in dtc fdtget fdtput; do
  command -v "$t" >/dev/null || { bad "$t missing (apt install device-tree-compiler)"; echo "$pass passed, $fail failed"; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tool=$PWD/buildroot-overlay/usr/lib/vantage-image/dt-leds

cat >"$tmp/pi.dts" <<'EOF'
/dts-v1/;
/ {
	model = "Raspberry Pi 3 Model B";
	soc {
		gpio: gpio@7e200000 { gpio-controller; #gpio-cells = <2>; };
	};
	leds { act { gpios = <&gpio 47 0>; }; };
};
EOF
cat >"$tmp/other.dts" <<'EOF'
/dts-v1/;
/ { model = "not a Pi"; soc { }; };
EOF
mkdir -p "$tmp/boot"
dtc -q -I dts -O dtb -o "$tmp/boot/bcm2837-rpi-3-b.dtb" "$tmp/pi.dts"
dtc -q -I dts -O dtb -o "$tmp/boot/bcm2711-rpi-4-b.dtb" "$tmp/pi.dts"
dtc -q -I dts -O dtb -o "$tmp/boot/bcm2835-other.dtb" "$tmp/other.dts"
cp "$tmp/boot/bcm2835-other.dtb" "$tmp/other.orig"
dtb=$tmp/boot/bcm2837-rpi-3-b.dtb
phandle=$(fdtget "$dtb" /soc/gpio@7e200000 phandle)

# The tool reads /etc/default/vantage-image-leds when it exists; run it with the defaults here
# unless that file is present on this machine (then its own LEDs are what it writes).
if [ -e /etc/default/vantage-image-leds ]; then
  echo "skip: /etc/default/vantage-image-leds exists on this machine"; echo "$pass passed, $fail failed"; exit 0
fi

if out=$("$tool" "$tmp/boot" 2>&1); then ok "runs on a boot directory"; else bad "failed: $out"; fi
[ "$(fdtget "$dtb" /vantage-leds compatible)" = gpio-leds ] && ok "gpio-leds node" || bad "no gpio-leds node"
[ "$(fdtget "$dtb" /vantage-leds/vantage-green gpios)" = "$phandle 17 0" ] &&
  ok "green on GPIO 17 of the SoC's controller" || bad "green gpios: $(fdtget "$dtb" /vantage-leds/vantage-green gpios)"
[ "$(fdtget "$dtb" /vantage-leds/vantage-green linux,default-trigger)" = timer ] &&
  ok "green blinks from the timer trigger" || bad "green trigger"
[ "$(fdtget "$dtb" /vantage-leds/vantage-amber gpios)" = "$phandle 27 0" ] && ok "amber on GPIO 27" || bad "amber gpios"
[ "$(fdtget "$dtb" /vantage-leds/vantage-red gpios)" = "$phandle 22 0" ] && ok "red on GPIO 22" || bad "red gpios"
[ "$(fdtget "$dtb" /vantage-leds/vantage-red label)" = vantage-red ] && ok "LED class label" || bad "red label"
[ "$(fdtget "$tmp/boot/bcm2711-rpi-4-b.dtb" /vantage-leds/vantage-green gpios)" = "$phandle 17 0" ] &&
  ok "every Pi device tree on the partition" || bad "Pi 4 tree not written"
cmp -s "$tmp/boot/bcm2835-other.dtb" "$tmp/other.orig" && ok "tree without the GPIO controller untouched" ||
  bad "tree without the GPIO controller was changed"
[ "$(fdtget "$dtb" /leds/act gpios)" = "$phandle 47 0" ] && ok "the board's own LEDs kept" || bad "board LED changed"

"$tool" "$tmp/boot" >/dev/null 2>&1
[ "$(fdtget -l "$dtb" /vantage-leds | wc -l)" = 3 ] && ok "second run replaces, no duplicates" ||
  bad "second run: $(fdtget -l "$dtb" /vantage-leds | tr '\n' ' ')"

# Other LEDs and polarity, as /etc/default/vantage-image-leds would set them: a copy of the
# tool that reads its settings from the test's file instead.
sed -e "s|/etc/default/vantage-image-leds|$tmp/leds.conf|g" "$tool" >"$tmp/dt-leds"
chmod +x "$tmp/dt-leds"
printf 'LEDS="status:5"\nACTIVE_LOW=1\n' >"$tmp/leds.conf"
"$tmp/dt-leds" "$tmp/boot" >/dev/null 2>&1
[ "$(fdtget -l "$dtb" /vantage-leds | tr '\n' ' ')" = "status " ] && ok "LED list from the config replaces the old one" ||
  bad "LED list: $(fdtget -l "$dtb" /vantage-leds | tr '\n' ' ')"
[ "$(fdtget "$dtb" /vantage-leds/status gpios)" = "$phandle 5 1" ] && ok "ACTIVE_LOW=1 sets the polarity flag" || bad "polarity"
[ "$(fdtget "$dtb" /vantage-leds/status linux,default-trigger)" = none ] && ok "no trigger given: none" || bad "default trigger"

printf 'LEDS="green:seventeen"\n' >"$tmp/leds.conf"
if out=$("$tmp/dt-leds" "$tmp/boot" 2>&1); then bad "a non-numeric pin was accepted"; else
  grep -q "is not a number" <<<"$out" && ok "non-numeric pin refused with a message" || bad "message: $out"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
