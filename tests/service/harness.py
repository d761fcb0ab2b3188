"""A real notify socket and a real daemon subprocess, cleaned up whatever happens.

NotifyListener (testbed/service_manager.py) plays systemd's side of sd_notify(3)
and its fd store; a ServiceDaemon started with `handed=` gets the stored
descriptors back as systemd hands them to a restarted service.
ServiceDaemon runs `python -m cgroupfs_daemon.cli daemon` the way the unit does (the
environment systemd would set: NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), with
its settings and state file in the test's directory, never the host's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cgroupfs_daemon.mount import mounts_at
from testbed.daemon_process import detach_daemon_mounts
from testbed.service_manager import Message, NotifyListener, popen_with_descriptors
from testbed.timing import scaled

__all__ = ["Message", "NotifyListener", "ServiceDaemon", "is_fuse_mounted"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def is_fuse_mounted(mountpoint: str) -> bool:
    return any(t.startswith("fuse") for t in mounts_at(os.path.abspath(mountpoint)))


class ServiceDaemon:
    """`cgroupfs daemon` (by default --no-docker --no-metrics) in a test directory, as systemd would start it."""

    def __init__(self, directory: str, *, notify: NotifyListener | None = None, watchdog_usec: int | None = None,
                 watchdog_pid: str | None = "self", wedge: bool = False, extra_args: tuple[str, ...] = (),
                 env: dict | None = None, command: tuple[str, ...] | None = None, mountpoint_flag: bool = True,
                 cwd: str = REPO, docker_host: str | None = None, metrics_address: str | None = None):
        self.directory = directory
        self.cwd = cwd
        self.mountpoint = os.path.join(directory, "mnt")
        self.state_file = os.path.join(directory, "run", "state.json")
        self.wedge_file = os.path.join(directory, "wedge") if wedge else None
        self.log_path = os.path.join(directory, "daemon.log")
        self.env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(name, None)
        for name in list(self.env):
            if name.startswith("CGROUPFS_"):
                self.env.pop(name)
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")
        # Never the host's /etc/default/cgroupfs or /run/cgroupfs.
        self.env["CGROUPFS_CONFIG"] = os.path.join(directory, "no-such-config")
        self.env["CGROUPFS_STATE_FILE"] = self.state_file
        if notify is not None:
            self.env["NOTIFY_SOCKET"] = notify.name
        if watchdog_usec is not None:
            self.env["WATCHDOG_USEC"] = str(watchdog_usec)
            if watchdog_pid not in (None, "self"):
                self.env["WATCHDOG_PID"] = watchdog_pid
        self.watchdog_pid_self = watchdog_usec is not None and watchdog_pid == "self"
        self.env.update(env or {})
        if command:
            base = command
        elif self.wedge_file:
            base = (sys.executable, "-m", "tests.wedged_daemon", self.wedge_file, "daemon")  # reads block on it
        else:
            base = (sys.executable, "-m", "cgroupfs_daemon.cli", "daemon")
        self.args = [*base, *(("--mountpoint", self.mountpoint) if mountpoint_flag else ()),
                     *(("--docker-host", docker_host) if docker_host else ("--no-docker",)),
                     *(("--metrics-address", metrics_address) if metrics_address else ("--no-metrics",)),
                     *extra_args]
        self.process: subprocess.Popen | None = None
        self.readers: list[subprocess.Popen] = []

    def start(self, handed: dict[str, int] | None = None) -> ServiceDaemon:
        """Start; with `handed` (name -> fd, e.g. a NotifyListener's store), as systemd
        restarts a service with a file descriptor store."""
        args = self.args
        env = dict(self.env)
        if self.watchdog_pid_self:
            # systemd sets WATCHDOG_PID to the main pid, known only once forked: the shell
            # exports its own pid and execs the daemon, which keeps that pid.
            args = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *args]
        self._log = open(self.log_path, "ab")
        if handed:
            self.process = popen_with_descriptors(args, handed, env, stdout=self._log, stderr=subprocess.STDOUT,
                                                  cwd=self.cwd)
        else:
            self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, mountpoint: str | None = None, timeout: float = 20) -> None:
        mountpoint = mountpoint or self.mountpoint
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}: {self.log()}")
            if is_fuse_mounted(mountpoint):
                try:
                    if os.listdir(os.path.join(mountpoint, "proc")):
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"daemon did not serve {mountpoint} within {timeout} s: {self.log()}")

    def start_reader(self, relative: str) -> subprocess.Popen:
        reader = subprocess.Popen(["cat", os.path.join(self.mountpoint, relative)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.readers.append(reader)
        return reader

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def cleanup(self, mountpoints: tuple[str, ...] = ()) -> None:
        """Release the wedge, stop readers and the daemon by pid, detach any mount left."""
        if self.wedge_file:
            try:
                os.unlink(self.wedge_file)
            except FileNotFoundError:
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for reader in self.readers:
            if reader.poll() is None:
                reader.kill()
            reader.communicate(timeout=10)
        for mountpoint in (self.mountpoint, *mountpoints):
            detach_daemon_mounts(mountpoint)
        if getattr(self, "_log", None):
            self._log.close()


# A container's loop printing busybox free's "Mem:" line, and the error line of a
# sysinfo(2) that failed (ENOSYS: a filter whose listener is gone).
FREE_LOOP = "while :; do free 2>&1 | grep -E 'Mem:|sysinfo|implemented'; sleep 0.1; done"


def lines_of(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line for line in f.read().splitlines() if line.strip()]


def wait_lines(path: str, count: int, timeout: float = 30.0) -> list[str]:
    """The file's non-empty lines, once there are `count` of them."""
    deadline = time.monotonic() + scaled(timeout)
    while len(lines := lines_of(path)) < count:
        assert time.monotonic() < deadline, f"{len(lines)} lines of {count} in {timeout} s: {lines[-5:]}"
        time.sleep(0.05)
    return lines


def free_totals(lines: list[str]) -> set[str]:
    """busybox free's total column of every "Mem:" line, and any other line whole (an error)."""
    return {line.split()[1] if line.startswith("Mem:") else line for line in lines}
