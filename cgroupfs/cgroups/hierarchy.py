"""Which cgroup hierarchies this host has, read from /proc/self/mountinfo.

v1 ("legacy"): one mount per controller or co-mounted group (cpu,cpuacct).
v2 ("unified"): one cgroup2 mount; its controllers are listed in cgroup.controllers.
hybrid: v1 controllers plus a cgroup2 mount (systemd's layout) — a controller is
served by v1 when a v1 hierarchy has it, otherwise by v2 when v2 has it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from cgroupfs.mountinfo import MountEntry, read_mountinfo

# The v1 controller names the kernel knows; other mount options (rw, relatime,
# name=systemd, nsdelegate, ...) are not controllers.
V1_CONTROLLERS = frozenset(
    {
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
        "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    }
)


@dataclass(frozen=True)
class Mount:
    """A cgroup filesystem mount: where it is and which cgroup path is its root."""

    directory: str
    root: str  # the cgroup path mounted there ("/" on the host)

    def path_of(self, cgroup_path: str) -> str | None:
        """The directory of `cgroup_path` under this mount, None if outside its root."""
        if self.root != "/":
            if cgroup_path != self.root and not cgroup_path.startswith(self.root + "/"):
                return None
            cgroup_path = cgroup_path[len(self.root):] or "/"
        return os.path.join(self.directory, cgroup_path.lstrip("/")).rstrip("/") or "/"


@dataclass(frozen=True)
class Hierarchy:
    v1: dict[str, Mount] = field(default_factory=dict)  # controller -> mount
    v2: Mount | None = None
    v2_controllers: frozenset[str] = frozenset()

    @property
    def mode(self) -> str:
        if self.v1 and self.v2 is not None:
            return "hybrid"
        if self.v1:
            return "v1"
        return "v2" if self.v2 is not None else "none"

    def version_of(self, controller: str) -> int | None:
        """1 or 2: which hierarchy serves `controller`; None when neither has it."""
        if controller in self.v1:
            return 1
        if self.v2 is not None and controller in self.v2_controllers:
            return 2
        return None


def cgroup_mounts(entries: Iterable[MountEntry]) -> tuple[dict[str, Mount], Mount | None]:
    """(v1 controller -> mount, the cgroup2 mount) among the mounts of a mount table.

    When a hierarchy is mounted twice, the first mount wins (that is the one the
    host mounted at boot; later ones are usually bind mounts into containers).
    """
    v1: dict[str, Mount] = {}
    v2: Mount | None = None
    for entry in entries:
        if entry.fstype not in ("cgroup", "cgroup2"):
            continue
        mount = Mount(directory=entry.mount_point, root=entry.root)
        if entry.fstype == "cgroup2":
            v2 = v2 or mount
        else:
            for option in entry.super_options.split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount)
    return v1, v2


def discover(proc_root: str = "/proc", root_prefix: str = "", mountinfo_path: str | None = None) -> Hierarchy:
    """The hierarchy of the host this process sees (the daemon runs in the host's namespaces).

    `root_prefix` is prepended to every mount directory, so a fixture tree holding
    sys/fs/cgroup/... and a copied mountinfo can stand in for the machine.
    """
    v1, v2 = cgroup_mounts(read_mountinfo(mountinfo_path or os.path.join(proc_root, "self/mountinfo")))
    if root_prefix:
        v1 = {c: Mount(root_prefix + m.directory, m.root) for c, m in v1.items()}
        v2 = v2 and Mount(root_prefix + v2.directory, v2.root)
    return Hierarchy(v1=v1, v2=v2, v2_controllers=read_v2_controllers(v2))


def read_v2_controllers(v2: Mount | None) -> frozenset[str]:
    if v2 is None:
        return frozenset()
    try:
        with open(os.path.join(v2.directory, "cgroup.controllers"), encoding="ascii") as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()
