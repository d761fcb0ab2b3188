"""Run a real `cgroupfs daemon` as a subprocess for tests and benchmarks; always clean up."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

from cgroupfs_daemon.mount import lazy_unmount, mounts_at
from testbed.timing import scaled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def detach_daemon_mounts(mountpoint: str) -> None:
    """Lazily detach every FUSE mount a daemon of `mountpoint` may have left: the mount
    point and its views (the default `<mountpoint>-views`), stacked ones included."""
    for point in (os.path.abspath(mountpoint), os.path.abspath(mountpoint).rstrip("/") + "-views"):
        for _ in range(10):
            try:
                if not any(t.startswith("fuse") for t in mounts_at(point)):
                    break
                lazy_unmount(point)
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise

def sysinfo_socket(mountpoint: str) -> str:
    """Where the test daemon of `mountpoint` takes containers' sysinfo listeners (beside it)."""
    return mountpoint.rstrip("/") + ".sysinfo"


class DaemonProcess:
    def __init__(self, mountpoint: str, *extra: str, log_path: str | None = None, env: dict | None = None,
                 module: str = "cgroupfs_daemon.cli"):
        self.mountpoint = mountpoint
        self.module = module  # what `python -m` runs: the CLI, or a benchmark's variant of it
        self.extra = list(extra)
        self.log_path = log_path or mountpoint.rstrip("/") + ".log"
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> DaemonProcess:
        timeout = scaled(timeout)
        args = [sys.executable, "-m", self.module, "daemon", "--mountpoint", self.mountpoint, *self.extra]
        if not any(a.startswith("--docker-host") or a == "--no-docker" for a in self.extra):
            args.append("--no-docker")
        if not any(a.startswith("--metrics-address") or a == "--no-metrics" for a in self.extra):
            args.append("--no-metrics")
        env = dict(os.environ, **(self.env or {}))
        # Each test daemon keeps its state file beside its mount point, not in /run.
        env.setdefault("CGROUPFS_STATE_FILE", self.mountpoint.rstrip("/") + ".state.json")
        env.setdefault("CGROUPFS_SYSINFO_SOCKET", sysinfo_socket(self.mountpoint))
        # ... and ignores the host's /etc/default/cgroupfs: tests choose their own flags.
        env.setdefault("CGROUPFS_CONFIG", self.mountpoint.rstrip("/") + ".no-config")
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}: {self.log()}")
            if self.is_serving():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not mount within {timeout}s: {self.log()}")

    def is_serving(self) -> bool:
        if not any(t.startswith("fuse") for t in mounts_at(self.mountpoint)):
            return False
        try:
            with open(os.path.join(self.mountpoint, "sys/devices/system/cpu/online"), "rb") as f:
                return bool(f.read())
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then make sure nothing is left mounted (lazily, if wedged)."""
        self.kill(signal.SIGTERM)
        detach_daemon_mounts(self.mountpoint)
        if getattr(self, "_log", None):
            self._log.close()
