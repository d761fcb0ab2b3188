"""Real cgroups for tests and benchmarks: created under a unique name, removed afterwards.

Works on v1, v2 and hybrid hosts: each controller is set up in whichever
hierarchy serves it, using cgroupfs's own hierarchy discovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

from cgroupfs.cgroups.hierarchy import Hierarchy, discover

CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "blkio", "io", "pids")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()



def kill_members(pids: Callable[[], Iterable[int]], attempts: int = 50) -> None:
    """SIGKILL every process `pids()` names until it names none (what a test started)."""
    for _ in range(attempts):
        found = list(pids())
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove_tree(directory: str, attempts: int = 40) -> None:
    """rmdir a cgroup and its children, deepest first, retrying while each drains
    (a cgroup empties a moment after its last process exits)."""
    for dirpath, _dirnames, _ in sorted(os.walk(directory, topdown=False), key=lambda walk: -len(walk[0])):
        for _attempt in range(attempts):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)

class TestCgroup:
    """One cgroup (same relative path in every hierarchy that serves a controller)."""

    __test__ = False  # not a pytest test class

    def __init__(self, relative: str, hierarchy: Hierarchy | None = None):
        self.hierarchy = hierarchy or discover()
        self.relative = relative.strip("/")
        self.directories: dict[str, str] = {}   # controller -> directory
        for controller in CONTROLLERS:
            version = self.hierarchy.version_of(controller)
            if version == 1:
                self.directories[controller] = os.path.join(self.hierarchy.v1[controller].directory, self.relative)
            elif version == 2 and self.hierarchy.v2 is not None:
                self.directories[controller] = os.path.join(self.hierarchy.v2.directory, self.relative)
        for directory in sorted(set(self.directories.values())):
            self._make(directory)

    @property
    def v2_directory(self) -> str | None:
        return os.path.join(self.hierarchy.v2.directory, self.relative) if self.hierarchy.v2 else None

    def _make(self, directory: str) -> None:
        parent = os.path.dirname(directory)
        if self._is_v2(directory):
            # Children see a controller only when every ancestor delegates it.
            wanted: list[str] = [c for c in ("memory", "cpu", "cpuset", "io", "pids")
                                 if c in self.hierarchy.v2_controllers]
            self._enable_subtree(parent, wanted)
        os.makedirs(directory, exist_ok=True)
        if not self._is_v2(directory) and directory == self.directories.get("cpuset"):
            # v1 cpuset children start empty: inherit the parent's cpus and mems.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not _read(os.path.join(directory, name)).strip():
                    _write(os.path.join(directory, name), _read(os.path.join(parent, name)).strip())

    def _is_v2(self, directory: str) -> bool:
        return self.hierarchy.v2 is not None and directory.startswith(self.hierarchy.v2.directory + "/")

    def _enable_subtree(self, directory: str, controllers: list[str]) -> None:
        assert self.hierarchy.v2 is not None
        root = self.hierarchy.v2.directory
        chain = []
        current = directory
        while current.startswith(root):
            chain.append(current)
            if current == root:
                break
            current = os.path.dirname(current)
        for level in reversed(chain):
            if not os.path.isdir(level):
                os.makedirs(level, exist_ok=True)
            enabled = set(_read(os.path.join(level, "cgroup.subtree_control")).split())
            missing = [c for c in controllers if c not in enabled]
            if missing:
                _write(os.path.join(level, "cgroup.subtree_control"), " ".join("+" + c for c in missing))

    # -- limits ---------------------------------------------------------------

    def dir(self, controller: str) -> str:
        return self.directories[controller]

    def is_v2(self, controller: str) -> bool:
        return self.hierarchy.version_of(controller) == 2

    def set_memory_limit(self, limit_bytes: int) -> None:
        name = "memory.max" if self.is_v2("memory") else "memory.limit_in_bytes"
        _write(os.path.join(self.dir("memory"), name), str(limit_bytes))

    def set_cpus(self, cpus: str) -> None:
        name = "cpuset.cpus"
        _write(os.path.join(self.dir("cpuset"), name), cpus)

    def set_cpu_quota(self, quota_usec: int, period_usec: int = 100_000) -> None:
        if self.is_v2("cpu"):
            _write(os.path.join(self.dir("cpu"), "cpu.max"), f"{quota_usec} {period_usec}")
        else:
            _write(os.path.join(self.dir("cpu"), "cpu.cfs_period_us"), str(period_usec))
            _write(os.path.join(self.dir("cpu"), "cpu.cfs_quota_us"), str(quota_usec))

    def enable_io_accounting(self, major: int, minor: int) -> None:
        """v1 on kernels >= 6.x counts blkio.throttle stats only once a throttle rule
        exists on the device's queue; set a rule too high to ever throttle."""
        if "blkio" in self.directories and not self.is_v2("blkio"):
            _write(os.path.join(self.dir("blkio"), "blkio.throttle.read_bps_device"), f"{major}:{minor} {1 << 40}")

    def disable_io_accounting(self, major: int, minor: int) -> None:
        if "blkio" in self.directories and not self.is_v2("blkio"):
            try:
                _write(os.path.join(self.dir("blkio"), "blkio.throttle.read_bps_device"), f"{major}:{minor} 0")
            except OSError:
                pass

    # -- processes ------------------------------------------------------------

    def join(self, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        for directory in sorted(set(self.directories.values())):
            _write(os.path.join(directory, "cgroup.procs"), str(pid))

    def popen(self, args, **kwargs) -> subprocess.Popen:
        """Start `args` inside this cgroup (it joins before exec)."""
        directories = sorted(set(self.directories.values()))

        def enter():
            for directory in directories:
                with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        return subprocess.Popen(args, preexec_fn=enter, **kwargs)

    def run(self, args, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        process = self.popen(args, **kwargs)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise
        return subprocess.CompletedProcess(args, process.returncode, out, err)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in set(self.directories.values()):
            for dirpath, _, _ in os.walk(directory):
                try:
                    found.update(int(p) for p in _read(os.path.join(dirpath, "cgroup.procs")).split())
                except OSError:
                    pass
        return sorted(found)

    def remove(self) -> None:
        """Kill what the test left inside (only processes the test started live here), then rmdir."""
        kill_members(self.pids)
        for directory in sorted(set(self.directories.values()), key=len, reverse=True):
            remove_tree(directory)

    def child(self, name: str) -> TestCgroup:
        return TestCgroup(f"{self.relative}/{name}", self.hierarchy)
