#!/bin/bash -e
# System settings that make the image a device rather than a copy of the build machine.

# Partitions by label: the same on every card, whatever the disk id.
if [ "$SLOTS" = ab ]; then
  # A/B: / is the slot the boot loader chose (root=PARTLABEL= or PARTUUID=), read-only. The initramfs mounts the data
  # partition on /data and /etc and /var as overlays whose upper layers are on it
  # (vantage-image-data in the initramfs), so they are not listed here.
  root_line="LABEL=$ROOT_LABEL      /               ext4   ro,noatime                           0      1"
  install -d -m 0755 "$ROOT/data"
else
  root_line="LABEL=$ROOT_LABEL      /               ext4   defaults,noatime                     0      1"
fi
cat >"$ROOT/etc/fstab" <<FSTAB
# <file system>        <mount point>   <type> <options>                            <dump> <pass>
$root_line
LABEL=$BOOT_LABEL      /boot/firmware  vfat   defaults,noatime,umask=0077,flush    0      2
# Scratch space in RAM, sparing the card.
tmpfs                  /tmp            tmpfs  mode=1777,nosuid,nodev,size=64M      0      0
FSTAB
install -d -m 0755 "$ROOT/boot/firmware"

# No password for any login: root's is locked ('*' never matches); SSH takes keys only.
chroot "$ROOT" usermod -p '*' root

# Per-device identity is made at first boot, not copied from this build: the machine id, the
# SSH host keys (ssh.service's ExecStartPre creates them, see vantage-image-ssh), the hostname
# (vantage-image-hostname.service).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*
rm -f "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

# APT sources in Debian 13's deb822 format, with the security and point-release updates, from
# the public mirror (a MIRROR= used for the build is the build machine's business).
rm -f "$ROOT/etc/apt/sources.list" "$ROOT"/etc/apt/sources.list.d/*.list
cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.debian.org/debian-security
Suites: $SUITE-security
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
[ -f "$ROOT/usr/share/keyrings/debian-archive-keyring.gpg" ] ||
  { echo "debian-archive-keyring is not installed: the sources' Signed-By names nothing" >&2; exit 1; }

# systemd-resolved's stub answers DNS for everything on the device.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"

# The overlay's system groups (sysusers.d/vantage-image.conf: vantage-update, allowed to ask RAUC
# to install) exist in the slot's /etc/group; systemd-sysusers also runs at every boot.
chroot "$ROOT" systemd-sysusers
chroot "$ROOT" getent group vantage-update >/dev/null || { echo "no vantage-update group" >&2; exit 1; }
# The daemon's static user (a dynamic UID cannot use the system bus: sysusers.d/vantage-image.conf).
chroot "$ROOT" id -nG vantage | grep -qw vantage-update ||
  { echo "no static user vantage in group vantage-update" >&2; exit 1; }

# Units enabled or disabled as the presets say (vantage, networkd, avahi on; ssh off), so the
# built image and a later `systemctl preset-all` agree.
chroot "$ROOT" systemctl preset-all
for u in vantage.service systemd-networkd.service avahi-daemon.service vantage-image-hostname.service \
  vantage-image-setup-code.service; do
  chroot "$ROOT" systemctl is-enabled --quiet "$u" || { echo "$u is not enabled" >&2; exit 1; }
done
for u in ssh.service prometheus-node-exporter.service; do
  if chroot "$ROOT" systemctl is-enabled --quiet "$u"; then
    echo "$u is enabled (its package's postinst did it); it must be off by default" >&2
    exit 1
  fi
done
chroot "$ROOT" systemctl is-enabled --quiet vantage-image-node-exporter.path ||
  { echo "vantage-image-node-exporter.path is not enabled: the page could not switch the node exporter" >&2; exit 1; }
# The node exporter's textfile directory (Debian's default), for local scripts' *.prom files; on
# the A/B image /var's upper layer is on the data partition, so what they write stays there.
[ -d "$ROOT/var/lib/prometheus/node-exporter" ] || install -d -m 0755 "$ROOT/var/lib/prometheus/node-exporter"
