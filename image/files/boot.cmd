# U-Boot script of the Pi (arm64) image: boot.scr on the FAT boot partition, made from this file
# by mkimage (image/steps/chroot/55-uboot.sh). The Pi firmware starts U-Boot (kernel=u-boot.bin in
# config.txt), U-Boot's standard boot finds this script on the partition it scans first and runs
# it with devtype, devnum and distro_bootpart set. QEMU's virt board runs the same script under
# Debian's qemu_arm64 U-Boot (scripts/test-image.sh, scripts/tests.d/75-image-uboot.sh).
#
# Two root slots, A (partition @SLOT_A_PART@) and B (partition @SLOT_B_PART@), each with its own
# kernel: /vmlinuz and /initrd.img are Debian's links to the slot's kernel. The slot is chosen as
# image/files/grub.cfg does on a PC, from the same variables, kept in U-Boot's binary
# environment format in vantage.env beside this script (and vantage.env.bak when vantage.env is
# unreadable), which RAUC writes through /usr/lib/vantage-image/bootenv:
#   ORDER    the slots to try, first first (an installed update puts its slot first)
#   X_OK     1: slot X may be booted (an install sets it; "rauc status mark-bad" clears it)
#   X_TRY    1: slot X was started and has not been marked good since
# Every boot sets the chosen slot's X_TRY=1 before starting it; vantage-image-health marks the
# slot good (X_TRY=0) once the daemon is ready. A slot that never got there is skipped at the
# next boot, whoever restarted the machine: the boot falls back to the next slot of ORDER. When
# every slot was tried, the marks of the good ones are cleared and the first is tried again.
#
# The kernel command line is root=, rauc.slot=, vantage.bootenv= and ro, then cmdline.txt's
# first line (consoles, quiet...), which may be edited from any computer as on any Pi.
#
# Memory: above the board's kernel_addr_r, room for a 64 MiB kernel, then the initramfs, then
# two small scratch areas (the Pi's own ramdisk_addr_r leaves too little room for Debian's
# 37 MiB kernel).
setexpr vantage_rd ${kernel_addr_r} + 0x4000000
setexpr vantage_envaddr ${kernel_addr_r} + 0x7000000
setexpr vantage_cmdaddr ${kernel_addr_r} + 0x7100000
setexpr vantage_cmdfile ${vantage_cmdaddr} + 2
setenv vantage_fdt ${fdt_addr}
if test -z "${vantage_fdt}"; then setenv vantage_fdt ${fdtcontroladdr}; fi

setenv ORDER "A B"
setenv A_OK 0
setenv B_OK 0
setenv A_TRY 0
setenv B_TRY 0
# A power cut while the device rewrites the block leaves one of the two copies whole, holding
# the state before or after the change (they are written one after the other).
setenv vantage_env
if load ${devtype} ${devnum}:${distro_bootpart} ${vantage_envaddr} vantage.env && env import -c ${vantage_envaddr} 0x1000; then
	setenv vantage_env vantage.env
else
	echo "Vantage: vantage.env unreadable, slot choice read from vantage.env.bak"
	if load ${devtype} ${devnum}:${distro_bootpart} ${vantage_envaddr} vantage.env.bak && env import -c ${vantage_envaddr} 0x1000; then
		setenv vantage_env vantage.env.bak
	else
		echo "Vantage: vantage.env.bak unreadable too, starting slot A"
		setenv vantage_env none
		setenv A_OK 1
	fi
fi

setenv vantage_pick 'for s in ${ORDER}; do if test -z "${vantage_slot}"; then if test "${s}" = A && test "${A_OK}" = 1 && test "${A_TRY}" = 0; then setenv vantage_slot A; setenv A_TRY 1; fi; if test "${s}" = B && test "${B_OK}" = 1 && test "${B_TRY}" = 0; then setenv vantage_slot B; setenv B_TRY 1; fi; fi; done'
setenv vantage_slot
run vantage_pick
if test -z "${vantage_slot}"; then
	if test "${A_OK}" = 1; then setenv A_TRY 0; fi
	if test "${B_OK}" = 1; then setenv B_TRY 0; fi
	run vantage_pick
fi
if test -z "${vantage_slot}"; then
	echo "Vantage: no slot marked bootable, starting slot A"
	setenv vantage_slot A
fi
# The trial mark, in the device's order: the backup, then the file. U-Boot's FAT driver rewrites
# a file of the same size in place.
if test "${vantage_env}" != none; then
	env export -c -s 0x1000 ${vantage_envaddr} A_OK A_TRY B_OK B_TRY ORDER
	fatwrite ${devtype} ${devnum}:${distro_bootpart} ${vantage_envaddr} vantage.env.bak 0x1000
	fatwrite ${devtype} ${devnum}:${distro_bootpart} ${vantage_envaddr} vantage.env 0x1000
fi

# cmdline.txt's first line, read as the value of a variable: "c=" written in front of it.
setenv vantage_cmdline
if load ${devtype} ${devnum}:${distro_bootpart} ${vantage_cmdfile} cmdline.txt; then
	setexpr vantage_len ${filesize} + 2
	mw.b ${vantage_cmdaddr} 0x63 1
	setexpr vantage_eq ${vantage_cmdaddr} + 1
	mw.b ${vantage_eq} 0x3d 1
	setenv c
	if env import -t -r ${vantage_cmdaddr} ${vantage_len} c; then setenv vantage_cmdline "${c}"; fi
	setenv c
fi

setenv vantage_boot 'if test "${vantage_start}" = B; then setenv vantage_part @SLOT_B_PART@; else setenv vantage_part @SLOT_A_PART@; fi; echo "Vantage: starting slot ${vantage_start} (partition ${vantage_part}, slot choice from ${vantage_env})"; if part uuid ${devtype} ${devnum}:${vantage_part} vantage_uuid && load ${devtype} ${devnum}:${vantage_part} ${kernel_addr_r} /vmlinuz && load ${devtype} ${devnum}:${vantage_part} ${vantage_rd} /initrd.img; then setenv bootargs "root=PARTUUID=${vantage_uuid} rauc.slot=${vantage_start} vantage.bootenv=${vantage_env} ro ${vantage_cmdline}"; echo "Vantage: bootargs ${bootargs}"; booti ${kernel_addr_r} ${vantage_rd}:${filesize} ${vantage_fdt}; fi; echo "Vantage: slot ${vantage_start} could not be started"'
setenv vantage_start ${vantage_slot}
run vantage_boot
# Only reached when the chosen slot's kernel could not even be loaded: the other one.
if test "${vantage_slot}" = A; then setenv vantage_start B; else setenv vantage_start A; fi
run vantage_boot
