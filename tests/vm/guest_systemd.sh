# Sourced by guest_init.sh with VM_INIT=systemd, once the disks, the source and Python are
# ready: boot the VM with systemd as pid 1, run the command as a unit once the machine is
# up (guest_lane.sh), then reboot, which ends QEMU.  The root disk is a throw-away
# snapshot, so this edits /etc freely.  systemd mounts cgroup2 itself (the kernel has
# cgroup_no_v1=all and systemd.unified_cgroup_hierarchy=1).
# Uses from guest_init.sh: infra, ctl_dir, control_port, stdout_port, stderr_port.

units=/etc/systemd/system

# The lane's ports, for guest_lane.sh and the shutdown hook (no udev names them).
mkdir -p /etc/cgroupfs-vm
printf 'control_port=%s\nstdout_port=%s\nstderr_port=%s\n' "$control_port" "$stdout_port" "$stderr_port" \
	>/etc/cgroupfs-vm/ports || infra "cannot write /etc/cgroupfs-vm/ports"

# Boot time: nothing is started that the lane does not use.  No login (getty), no timers,
# no udev (nothing waits for a device: the disks are mounted already), no logind (no
# D-Bus in the image), no first-boot questions; the packages' services (Docker,
# containerd, Prometheus) are not started at boot: a test starts what it needs.
rm -f "$units"/multi-user.target.wants/* "$units"/sockets.target.wants/* \
	"$units"/timers.target.wants/* "$units"/getty.target.wants/* "$units"/sysinit.target.wants/*
for unit in getty.target timers.target systemd-logind.service systemd-user-sessions.service \
	systemd-firstboot.service systemd-pstore.service systemd-binfmt.service \
	proc-sys-fs-binfmt_misc.automount systemd-journal-flush.service systemd-machine-id-commit.service \
	systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-random-seed.service \
	systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
	systemd-hwdb-update.service systemd-ask-password-wall.path systemd-ask-password-console.path \
	sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount dev-hugepages.mount \
	systemd-repart.service systemd-pcrphase.service systemd-pcrphase-sysinit.service \
	e2scrub_reap.service; do
	ln -sfn /dev/null "$units/$unit" || infra "cannot mask $unit"
done
ln -sfn /usr/lib/systemd/system/multi-user.target "$units/default.target"

# The journal in memory only (journalctl -u works; nothing to flush to the disk).
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >/etc/systemd/journald.conf.d/cgroupfs-vm.conf

cat >"$units/cgroupfs-vm-lane.service" <<UNIT || infra "cannot write the lane unit"
[Unit]
Description=cgroupfs VM lane: the command from $ctl_dir
After=multi-user.target
# Done, however it ended: reboot at once (the disks are throw-away), which ends QEMU.
SuccessAction=reboot-force
FailureAction=reboot-force

[Service]
Type=exec
ExecStart=/bin/bash $ctl_dir/guest_lane.sh
StandardInput=null
StandardOutput=journal+console
UNIT
mkdir -p "$units/multi-user.target.wants"
ln -sfn ../cgroupfs-vm-lane.service "$units/multi-user.target.wants/cgroupfs-vm-lane.service"

# Run last before the reboot: tells the runner it need not wait any longer.
cat >/usr/lib/systemd/system-shutdown/cgroupfs-vm-done <<HOOK || infra "cannot write the shutdown hook"
#!/bin/sh
echo DONE >$control_port
HOOK
chmod 0755 /usr/lib/systemd/system-shutdown/cgroupfs-vm-done

[ -x /usr/lib/systemd/systemd ] || infra "systemd is not installed in the image"
exec /usr/lib/systemd/systemd
