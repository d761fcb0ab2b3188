"""The benchmark's own cgroups: one limited parent per v1 controller, children for the RSS phase.

Only cgroup v1 controllers are used (the hosts this runs on are v1 or hybrid); the
mount of each controller is taken from /proc/self/mountinfo, so co-mounted
controllers (cpu,cpuacct) get one directory.  Everything created is removed by
`remove()`, children first, retrying while the kernel still reports EBUSY.
"""

from __future__ import annotations

import errno
import os
import time

from cgroupfs.cgroups.hierarchy import cgroup_mounts
from cgroupfs.mountinfo import read_mountinfo

CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids")


class CgroupSetupError(Exception):
    pass


def v1_mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """v1 controller name -> mount directory."""
    v1, _ = cgroup_mounts(read_mountinfo(mountinfo))
    return {controller: mount.directory for controller, mount in v1.items()}


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class Cgroup:
    """One cgroup name present in every benchmark controller."""

    def __init__(self, directories: list[str]):
        self.directories = directories  # one per distinct controller mount

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0: the calling process, v1 semantics) into this cgroup everywhere.

        Safe as a subprocess preexec_fn: only open/write/close.
        """
        text = str(pid or os.getpid())
        for directory in self.directories:
            fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)


class BenchCgroups:
    def __init__(self, name: str | None = None, memory_limit_bytes: int = 256 << 20):
        self.name = name or f"cgroupfs-bench-{os.getpid()}"
        self.memory_limit_bytes = memory_limit_bytes
        mounts = v1_mounts()
        missing = [c for c in CONTROLLERS if c not in mounts]
        if missing:
            raise CgroupSetupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        self.mounts = {c: mounts[c] for c in CONTROLLERS}
        self._created: list[str] = []  # in creation order; removed in reverse

    def _roots(self) -> list[str]:
        return sorted(set(self.mounts.values()))

    def _mkdir(self, path: str) -> None:
        os.mkdir(path)
        self._created.append(path)

    def create_parent(self) -> Cgroup:
        for root in self._roots():
            self._mkdir(os.path.join(root, self.name))
        self._configure(self.name, self.memory_limit_bytes)
        return self.cgroup(self.name)

    def create_child(self, child: str, memory_limit_bytes: int) -> Cgroup:
        relative = f"{self.name}/{child}"
        for root in self._roots():
            self._mkdir(os.path.join(root, relative))
        self._configure(relative, memory_limit_bytes)
        return self.cgroup(relative)

    def cgroup(self, relative: str) -> Cgroup:
        return Cgroup([os.path.join(root, relative) for root in self._roots()])

    def _configure(self, relative: str, memory_limit_bytes: int) -> None:
        cpuset = os.path.join(self.mounts["cpuset"], relative)
        parent = os.path.dirname(cpuset)
        # A v1 cpuset starts empty; tasks cannot join until cpus and mems are set.
        _write(os.path.join(cpuset, "cpuset.cpus"), _read(os.path.join(parent, "cpuset.cpus")))
        _write(os.path.join(cpuset, "cpuset.mems"), _read(os.path.join(parent, "cpuset.mems")))
        _write(os.path.join(self.mounts["memory"], relative, "memory.limit_in_bytes"), str(memory_limit_bytes))

    def memory_directory(self, relative: str | None = None) -> str:
        return os.path.join(self.mounts["memory"], relative or self.name)

    def remove(self, timeout_s: float = 10.0) -> list[str]:
        """Remove everything created (deepest first); returns what could not be removed."""
        deadline = time.monotonic() + timeout_s
        left = list(reversed(self._created))
        while left:
            still = []
            for path in left:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise
                    still.append(path)
            left = still
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self._created = list(reversed(left))
        return left
