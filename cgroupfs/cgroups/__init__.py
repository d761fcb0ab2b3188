"""One interface over cgroup v1, v2 and hybrid hosts.

`CgroupReader` answers "what are this process's memory/cpu/cpuset/io counters" by
choosing, per controller, the v1 or the v2 reader (the only place that choice is
made) and handing it the chain of directories from the mount root to the cgroup.
A controller the host does not have yields None; renderers then use host values.
"""

from __future__ import annotations

import logging

from cgroupfs.cgroups import v1, v2
from cgroupfs.cgroups.files import HeldFiles, ancestry, tree_directories
from cgroupfs.cgroups.hierarchy import Hierarchy, Mount, discover
from cgroupfs.cgroups.membership import CgroupPaths, read_proc_cgroup
from cgroupfs.cgroups.model import CpuStats, CpusetInfo, IoStats, MemoryStats, PressureStats
from cgroupfs.errors import CgroupGone

log = logging.getLogger(__name__)

__all__ = ["CgroupReader", "CgroupPaths", "Hierarchy", "discover", "read_proc_cgroup"]

# Controllers whose v1 directory identifies "the container's tasks", in preference order.
_TASK_CONTROLLERS = ("cpuacct", "cpu", "pids", "memory", "cpuset", "blkio")


class CgroupReader:
    def __init__(self, hierarchy: Hierarchy):
        self.hierarchy = hierarchy
        self._reported_missing: set[str] = set()
        self._limit_files = HeldFiles()

    # -- locating directories -------------------------------------------------

    def _chain(self, controller: str, paths: CgroupPaths) -> tuple[int, list[str]] | None:
        """(version, directories root..leaf) for `controller`, None when unavailable."""
        version = self.hierarchy.version_of(controller)
        mount: Mount | None
        path: str | None
        if version == 1:
            mount, path = self.hierarchy.v1[controller], paths.v1.get(controller)
        elif version == 2:
            mount, path = self.hierarchy.v2, paths.v2
        else:
            mount = path = None
        if version is None or mount is None or path is None:
            if controller not in self._reported_missing:
                self._reported_missing.add(controller)
                log.warning("cgroup controller %r is not available; its values fall back to the host's", controller)
            return None
        leaf = mount.path_of(path)
        if leaf is None:
            raise CgroupGone(path)
        return version, ancestry(mount.directory, leaf)

    def is_root(self, paths: CgroupPaths) -> bool:
        """True when the process is in the root cgroup of every hierarchy (a host process)."""
        return all(p == "/" for p in paths.v1.values()) and paths.v2 in (None, "/")

    def limits(self, paths: CgroupPaths, controllers: tuple[str, ...]) -> tuple:
        """The raw text of the cgroup's own limit files for `controllers`.

        Cheap (one pread per file, descriptors held) and compared before a cached text is reused:
        runc's init stats our files before runc writes the container's limits, so a
        text rendered then must not be what the container's first instruction reads.
        Only the cgroup's own files: runtimes set limits there, and a parent's change
        shows within one cache interval."""
        found: list = []
        for controller in controllers:
            located = self._chain(controller, paths)
            if located is None:
                continue
            version, chain = located
            names = (v1.LIMIT_FILES if version == 1 else v2.LIMIT_FILES)[controller]
            found.extend(self._limit_files.read(chain[-1], names))
        return tuple(found)

    # -- counters -------------------------------------------------------------

    def memory(self, paths: CgroupPaths) -> MemoryStats | None:
        located = self._chain("memory", paths)
        if located is None:
            return None
        version, chain = located
        return v1.read_memory(chain) if version == 1 else v2.read_memory(chain)

    def cpu(self, paths: CgroupPaths) -> CpuStats | None:
        if self.hierarchy.version_of("cpu") == 1 or self.hierarchy.version_of("cpuacct") == 1:
            cpu = self._chain("cpu", paths) if "cpu" in self.hierarchy.v1 else None
            cpuacct = self._chain("cpuacct", paths) if "cpuacct" in self.hierarchy.v1 else None
            return v1.read_cpu(cpu and cpu[1], cpuacct and cpuacct[1])
        if self.hierarchy.v2 is None or paths.v2 is None:
            return None
        # cpu.stat usage exists in every v2 cgroup even when the cpu controller is off.
        leaf = self.hierarchy.v2.path_of(paths.v2)
        if leaf is None:
            raise CgroupGone(paths.v2)
        return v2.read_cpu(ancestry(self.hierarchy.v2.directory, leaf))

    def cpuset(self, paths: CgroupPaths) -> CpusetInfo | None:
        located = self._chain("cpuset", paths)
        if located is None:
            return None
        version, chain = located
        return v1.read_cpuset(chain) if version == 1 else v2.read_cpuset(chain)

    def io(self, paths: CgroupPaths) -> IoStats | None:
        controller = "blkio" if self.hierarchy.version_of("blkio") == 1 else "io"
        located = self._chain(controller, paths)
        if located is None:
            return None
        version, chain = located
        return v1.read_io(chain) if version == 1 else v2.read_io(chain)

    def slab_caches(self, paths: CgroupPaths) -> tuple[str, ...] | None:
        """The cgroup's own /proc/slabinfo cache lines: only v1 (kernels before 5.9) has them."""
        located = self._chain("memory", paths)
        if located is None or located[0] != 1:
            return None
        return v1.read_slab_caches(located[1])

    def pressure(self, paths: CgroupPaths, resource: str) -> PressureStats | None:
        """PSI for "cpu", "memory" or "io"; only cgroup v2 has it (on a hybrid host, the
        unified hierarchy's cgroup, which has the PSI files whatever owns the controllers)."""
        if self.hierarchy.v2 is None or paths.v2 is None:
            return None
        leaf = self.hierarchy.v2.path_of(paths.v2)
        return None if leaf is None else v2.read_pressure(leaf, resource)

    def _task_directory(self, paths: CgroupPaths) -> tuple[int, str] | None:
        for controller in _TASK_CONTROLLERS:
            if controller in self.hierarchy.v1 and controller in paths.v1:
                leaf = self.hierarchy.v1[controller].path_of(paths.v1[controller])
                return (1, leaf) if leaf else None
        if self.hierarchy.v2 is not None and paths.v2 is not None:
            leaf = self.hierarchy.v2.path_of(paths.v2)
            return (2, leaf) if leaf else None
        return None

    def task_key(self, paths: CgroupPaths) -> str | None:
        """The directory that identifies this cgroup's set of tasks (for load averages)."""
        located = self._task_directory(paths)
        return None if located is None else located[1]

    def thread_ids(self, paths: CgroupPaths) -> list[int]:
        """Every thread in the cgroup and its descendants."""
        return self._ids_in_tree(paths, v1.read_thread_ids, v2.read_thread_ids)

    def process_ids(self, paths: CgroupPaths) -> list[int]:
        """Every process in the cgroup and its descendants."""
        return self._ids_in_tree(paths, v1.read_process_ids, v2.read_process_ids)

    def _ids_in_tree(self, paths: CgroupPaths, read_v1, read_v2) -> list[int]:
        located = self._task_directory(paths)
        if located is None:
            return []
        version, leaf = located
        read = read_v1 if version == 1 else read_v2
        ids: list[int] = []
        for directory in tree_directories(leaf):
            try:
                ids.extend(read(directory))
            except CgroupGone:
                if directory == leaf:  # a vanished descendant is routine; the cgroup itself is not
                    raise
        return ids
