#!/bin/sh
# /init of the test VM's initramfs (busybox).  Loads the modules the Debian kernel keeps out
# of its image (virtio, ext4, 9p, fuse), mounts the root disk and the run's control share,
# and hands pid 1 to the guest init that the runner put on that share.  Any failure reboots,
# which ends QEMU (-no-reboot): the runner reports it as an infrastructure failure.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "cgroupfs-vm initramfs: $*" >/dev/console
	sync
	reboot -f
	echo b >/proc/sysrq-trigger
	exit 1
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs"

while read -r module; do
	insmod "/lib/modules/$module" || fail "insmod $module failed"
done </lib/modules/load-order

# Disks are found by serial (QEMU's serial=), not by probe order; virtio-mmio devices probe
# asynchronously: wait for the root disk (10 s under emulation is plenty).
disk_with_serial() {
	for serial in /sys/block/vd*/serial; do
		[ "$(cat "$serial" 2>/dev/null)" = "$1" ] || continue
		dir=${serial%/serial}
		echo "/dev/${dir##*/}"
		return 0
	done
	return 1
}
tries=0
until root_disk=$(disk_with_serial root) && [ -b "$root_disk" ]; do
	tries=$((tries + 1))
	[ "$tries" -gt 200 ] && fail "the root disk (serial 'root') did not appear"
	sleep 0.05
done

mount -t ext4 -o rw,noatime "$root_disk" /newroot || fail "cannot mount the root disk $root_disk"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ctl /newroot/mnt/ctl \
	|| fail "cannot mount the control share"
[ -x /newroot/mnt/ctl/guest-init.sh ] || fail "no guest-init.sh on the control share"

mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /mnt/ctl/guest-init.sh
