#!/bin/bash
# pid 1 of the test VM (Debian bookworm root).  The runner copies this file onto the run's
# control share (/mnt/ctl) together with:
#   command.sh   the command to run (bash), env.sh   its environment (export lines),
#   settings.sh  VM_SWAP_MIB, VM_INIT and the like.
# With VM_INIT=systemd (run.py --init systemd) it only prepares the disks, the source and
# Python, then hands pid 1 to systemd (guest_systemd.sh), which runs the command as a unit.
# It sets the machine up like a pure cgroup v2 host (cgroup2 only, at /sys/fs/cgroup, with
# cpu cpuset io memory pids enabled for the root's children), runs the command as root in
# /sys/fs/cgroup/lane.scope (as a login session would be, in a scope below the root), with
# stdout and stderr on two virtio serial ports, reports "EXIT <code>" on a third one and
# reboots, which ends QEMU.  Anything that goes wrong before the command runs is reported
# on the control port as "INFRA <reason>".
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
ctl_dir=/mnt/ctl

say() { echo "cgroupfs-vm: $*" >/dev/console; }

control() {
	if [ -n "${control_port:-}" ]; then
		echo "$*" >"$control_port"
	else
		say "no control port: $*"
	fi
}

shutdown() {
	sync
	/bin/busybox reboot -f
	echo b >/proc/sysrq-trigger
	sleep 60
}

infra() {
	say "$*"
	control "INFRA $*"
	shutdown
}

trap 'infra "guest init interrupted"' INT TERM

# Named virtio serial ports: without udev nobody makes /dev/virtio-ports/NAME.
find_port() {
	local dir
	for dir in /sys/class/virtio-ports/*; do
		if [ "$(cat "$dir/name" 2>/dev/null)" = "$1" ]; then
			echo "/dev/${dir##*/}"
			return 0
		fi
	done
	return 1
}

control_port=$(find_port ctl) || control_port=""
[ -n "$control_port" ] || infra "virtio serial port 'ctl' missing"
stdout_port=$(find_port out) || infra "virtio serial port 'out' missing"
stderr_port=$(find_port err) || infra "virtio serial port 'err' missing"

# shellcheck source=/dev/null
. "$ctl_dir/settings.sh" || infra "cannot read settings.sh"

mount -o remount,rw / 2>/dev/null
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr

# What systemd, as init, sets up itself.
plain_machine() {
	mkdir -p /dev/pts /dev/shm /run /sys/fs/cgroup
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || infra "mount devpts failed"
	mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm || infra "mount /dev/shm failed"
	mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run || infra "mount /run failed"
	mkdir -p /run/lock && chmod 1777 /run/lock /tmp

	# Pure cgroup v2, mounted the way systemd mounts it on a v2 host.
	mount -t cgroup2 -o rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot \
		cgroup2 /sys/fs/cgroup || infra "mount cgroup2 failed"
	echo "+cpu +cpuset +io +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control \
		|| infra "cannot enable cpu cpuset io memory pids in the root cgroup"
	mkdir -p /sys/fs/cgroup/lane.scope || infra "cannot create /sys/fs/cgroup/lane.scope"
}
[ "${VM_INIT:-script}" = systemd ] || plain_machine

modprobe overlay || infra "modprobe overlay failed"
pylib_disk=""
for serial in /sys/block/vd*/serial; do
	[ "$(cat "$serial")" = pylib ] && { pylib_disk=${serial%/serial}; pylib_disk=/dev/${pylib_disk##*/}; }
done
[ -n "$pylib_disk" ] || infra "no disk with serial 'pylib'"
mount -t ext4 -o ro,noatime "$pylib_disk" /mnt/pylib || infra "cannot mount the pylib disk $pylib_disk"

# The checkout: read-write over 9p with VM_SRC_RW=1; otherwise a read-only share under an
# overlay whose upper layer is on the throw-away root disk, so that Python's __pycache__,
# pytest's cache and anything a test writes stay in the guest.
share_opts=trans=virtio,version=9p2000.L,msize=262144
if [ "$VM_SRC_RW" = 1 ]; then
	mount -t 9p -o "$share_opts" src /mnt/src || infra "cannot mount the source share"
else
	mkdir -p /mnt/src-share /var/lib/cgroupfs-vm/src-upper /var/lib/cgroupfs-vm/src-work
	mount -t 9p -o "$share_opts,ro" src /mnt/src-share || infra "cannot mount the source share"
	mount -t overlay -o lowerdir=/mnt/src-share,upperdir=/var/lib/cgroupfs-vm/src-upper,workdir=/var/lib/cgroupfs-vm/src-work \
		overlay /mnt/src || infra "cannot mount the overlay over the source share"
fi

# Every python3 in the guest finds the project and its dependencies, whatever its environment,
# and the console scripts pyproject.toml declares exist, as pip would install them.
python3 - <<'EOF' || infra "cannot set up python3 (the project's path and console scripts)"
import os, site, tomllib
site_dir = site.getsitepackages()[0]  # /usr/local/lib/python3.11/dist-packages
os.makedirs(site_dir, exist_ok=True)
with open(os.path.join(site_dir, "cgroupfs-vm.pth"), "w") as pth:
    pth.write("/mnt/pylib\n/mnt/src\n")
scripts, package_dirs, script_files = {}, {}, []
if os.path.exists("/mnt/src/pyproject.toml"):
    with open("/mnt/src/pyproject.toml", "rb") as pyproject:
        project = tomllib.load(pyproject)
    scripts = project.get("project", {}).get("scripts", {})
    setuptools = project.get("tool", {}).get("setuptools", {})
    package_dirs = setuptools.get("package-dir", {})
    script_files = setuptools.get("script-files", [])
# Plain scripts (cgroupfs-runtime, a sh front) are copied into bin as pip copies them.
for relative in script_files:
    path = f"/usr/local/bin/{os.path.basename(relative)}"
    with open(os.path.join("/mnt/src", relative), "rb") as source, open(path, "wb") as script:
        script.write(source.read())
    os.chmod(path, 0o755)
# A package installed under another name than its folder (daemon/ -> cgroupfs_daemon).
for package, folder in package_dirs.items():
    link = os.path.join(site_dir, package)
    if not os.path.lexists(link):
        os.symlink(os.path.join("/mnt/src", folder), link)
for name, target in scripts.items():
    module, _, function = target.partition(":")
    path = f"/usr/local/bin/{name}"
    with open(path, "w") as script:
        script.write(f"#!/usr/bin/python3\nimport sys\nfrom {module} import {function}\n"
                     f"sys.exit({function}())\n")
    os.chmod(path, 0o755)
EOF

modprobe loop 2>/dev/null

if [ "${VM_SWAP_MIB:-0}" -gt 0 ]; then
	{ fallocate -l "${VM_SWAP_MIB}M" /swapfile && chmod 600 /swapfile && mkswap -q /swapfile \
		&& swapon /swapfile; } || infra "cannot set up ${VM_SWAP_MIB} MiB of swap"
fi

[ -c /dev/fuse ] || infra "/dev/fuse missing"

if [ "${VM_INIT:-script}" = systemd ]; then
	# shellcheck source=tests/vm/guest_systemd.sh
	. "$ctl_dir/guest_systemd.sh"  # does not return
	infra "guest_systemd.sh returned"
fi

hostname cgroupfs-v2
/bin/busybox ip link set lo up || infra "cannot bring up the loopback interface"

control "READY $(cut -d' ' -f1 /proc/uptime)"

(
	echo 0 >/sys/fs/cgroup/lane.scope/cgroup.procs || exit 125
	cd /mnt/src || exit 125
	# shellcheck source=/dev/null
	. "$ctl_dir/env.sh"
	exec /bin/bash "$ctl_dir/command.sh"
) </dev/null >"$stdout_port" 2>"$stderr_port"
status=$?

control "EXIT $status"

# Stop whatever the command left running (dockerd, a FUSE daemon) so the disks flush cleanly.
kill -TERM -1 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
	[ -z "$(cat /sys/fs/cgroup/lane.scope/cgroup.procs 2>/dev/null)" ] && break
	sleep 0.5
done
kill -KILL -1 2>/dev/null
control "DONE"
shutdown
