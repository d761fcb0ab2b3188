"""The three things being read: native /proc, LXCFS and cgroupfs, each behind one interface.

The FUSE servers are started by the harness on their own mount points under a
temporary directory, in their own sessions (a Ctrl-C at the terminal reaches the
harness, which then stops them in order), and stopped with SIGTERM; a server that
does not exit is killed, and a mount left behind is detached (umount -l).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from cgroupfs.mountinfo import read_mountinfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Benchmark file name -> path relative to a mount point (LXCFS's layout, which cgroupfs shares).
FILES = {
    "meminfo": "proc/meminfo",
    "stat": "proc/stat",
    "cpuinfo": "proc/cpuinfo",
    "diskstats": "proc/diskstats",
    "uptime": "proc/uptime",
    "loadavg": "proc/loadavg",
    "swaps": "proc/swaps",
    "online": "sys/devices/system/cpu/online",
}
NATIVE = {name: "/" + relative for name, relative in FILES.items()}


class ServerError(Exception):
    pass


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def fuse_mounted_at(path: str) -> bool:
    return any(entry.fstype.startswith("fuse") for entry in read_mountinfo(mount_points=(path,)))


class Native:
    name = "native"
    pid = None

    def path(self, file: str) -> str:
        return NATIVE[file]

    def stop(self) -> None:
        pass


class FuseServer:
    """A FUSE daemon the harness started: `command` mounts on `mountpoint` in the foreground."""

    def __init__(self, name: str, command: list[str], mountpoint: str, log_path: str, env=None):
        self.name = name
        self.command = command
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None

    def path(self, file: str) -> str:
        return os.path.join(self.mountpoint, FILES[file])

    def start(self, timeout_s: float = 20.0) -> None:
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env, cwd=REPO,
            )
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout_s
        probe = self.path("meminfo")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")
            if fuse_mounted_at(self.mountpoint) and os.path.exists(probe):
                return
            time.sleep(0.05)
        raise ServerError(f"{self.name} did not mount {self.mountpoint} within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _started_pid(self) -> int:
        if self.pid is None:
            raise ServerError(f"{self.name} was not started")
        return self.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self._started_pid())

    def memory_kb(self) -> dict[str, int]:
        return process_memory_kb(self._started_pid())

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL; then make sure nothing stays mounted."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"warning: {self.name} (pid {self.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait(timeout_s)
        if fuse_mounted_at(self.mountpoint):
            print(f"warning: {self.mountpoint} still mounted; detaching it", file=sys.stderr)
            subprocess.run(["umount", "-l", self.mountpoint], check=False)


class ViewsServer(FuseServer):
    """cgroupfs views (benchmarks/views_server.py); path() names files of the view `view_id`."""

    view_id = "bench"

    def path(self, file: str, view_id: str | None = None) -> str:
        return os.path.join(self.mountpoint, view_id or self.view_id, FILES[file])


def cgroupfs_views(workdir: str, members: dict[str, int], cache_ttl_ms: float | None = None) -> ViewsServer:
    """A views server with one view per id -> pid in `members`; path() reads the first one."""
    mountpoint = os.path.join(workdir, "views")
    command = [sys.executable, "-m", "benchmarks.views_server", mountpoint,
               str(100.0 if cache_ttl_ms is None else cache_ttl_ms), *(f"{i}={p}" for i, p in members.items())]
    server = ViewsServer("cgroupfs views", command, mountpoint, os.path.join(workdir, "views.log"))
    server.view_id = next(iter(members))
    return server


def lxcfs(workdir: str) -> FuseServer:
    binary = shutil.which("lxcfs") or "/usr/bin/lxcfs"
    if not os.path.exists(binary):
        raise ServerError("lxcfs is not installed (Debian package `lxcfs`)")
    mountpoint = os.path.join(workdir, "lxcfs")
    # Own pidfile: never touch the system instance's /run/lxcfs.pid.
    command = [binary, "-f", "-p", os.path.join(workdir, "lxcfs.pid"), mountpoint]
    return FuseServer("LXCFS", command, mountpoint, os.path.join(workdir, "lxcfs.log"))


def cgroupfs(workdir: str, cache_ttl_ms: float | None = None, profile_path: str | None = None) -> FuseServer:
    mountpoint = os.path.join(workdir, "cgroupfs")
    args = ["daemon", "--mountpoint", mountpoint, "--no-docker", "--no-metrics", "--no-views", "--log-level", "warning"]
    if cache_ttl_ms is not None:
        args += ["--cache-ttl-ms", str(cache_ttl_ms)]
    python = sys.executable  # the venv's python under `make bench`
    if profile_path:
        # cProfile around the CLI; libfuse ends the loop on SIGTERM and the profile is written.
        statement = f"main({args!r})"
        code = f"import cProfile; from cgroupfs_daemon.cli import main; cProfile.run({statement!r}, {profile_path!r})"
        command = [python, "-c", code]
    else:
        console_script = os.path.join(os.path.dirname(python), "cgroupfs")
        command = [console_script, *args] if os.path.exists(console_script) else [
            python, "-c", "import sys; from cgroupfs_daemon.cli import main; sys.exit(main())", *args]
    return FuseServer("cgroupfs", command, mountpoint, os.path.join(workdir, "cgroupfs.log"))


def cgroupfs_variant(workdir: str, variant: str) -> FuseServer:
    """The per-reader files with one protocol choice undone (benchmarks/per_reader_server.py)."""
    mountpoint = os.path.join(workdir, f"variant-{variant}")
    command = [sys.executable, "-m", "benchmarks.per_reader_server", mountpoint, variant]
    return FuseServer(f"per-reader {variant}", command, mountpoint, os.path.join(workdir, f"variant-{variant}.log"))


def cgroupfs_at(workdir: str, commit: str, log) -> FuseServer:
    """The per-reader daemon as it was at `commit`, installed into a virtualenv of its own.

    The tree comes from `git archive` (no worktree left behind); its dependencies from
    PyPI, as its own pyproject says (before 0268404 that includes mfusepy and libfuse3)."""
    resolved = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", commit], check=True,
                              capture_output=True, text=True).stdout.strip()
    source = os.path.join(workdir, f"src-{resolved}")
    venv = os.path.join(workdir, f"venv-{resolved}")
    os.makedirs(source)
    log(f"installing cgroupfs at {resolved} into {venv} (about 30 s)")
    archive = subprocess.Popen(["git", "-C", REPO, "archive", resolved], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", source], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise ServerError(f"git archive {resolved} failed")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    installed = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", source],
                               capture_output=True, text=True)
    if installed.returncode != 0:
        raise ServerError(f"installing cgroupfs at {resolved} failed:\n{installed.stderr[-2000:]}")
    mountpoint = os.path.join(workdir, f"cgroupfs-{resolved}")
    # The flags every version since the first has; views (later) are off unless asked for.
    command = [os.path.join(venv, "bin", "cgroupfs"), "daemon", "--mountpoint", mountpoint,
               "--no-docker", "--no-metrics", "--log-level", "warning"]
    return FuseServer(f"cgroupfs@{resolved}", command, mountpoint, os.path.join(workdir, f"cgroupfs-{resolved}.log"))
