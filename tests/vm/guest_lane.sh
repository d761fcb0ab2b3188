#!/bin/bash
# The command of a VM booted with systemd as init (guest_systemd.sh): run by the unit
# cgroupfs-vm-lane.service once the machine is up, with the same protocol as
# guest_init.sh (READY, then the command's stdout and stderr on their ports, then EXIT).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
ctl_dir=/mnt/ctl
# shellcheck source=/dev/null
. /etc/cgroupfs-vm/ports

echo "READY $(cut -d' ' -f1 /proc/uptime)" >"$control_port"
(
	cd /mnt/src || exit 125
	# shellcheck source=/dev/null
	. "$ctl_dir/env.sh"
	exec /bin/bash "$ctl_dir/command.sh"
) </dev/null >"$stdout_port" 2>"$stderr_port"
echo "EXIT $?" >"$control_port"
