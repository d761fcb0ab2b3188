"""Which cgroups the metrics export, and one read of each per scrape.

Targets are the Docker containers the watcher knows (DaemonStats.containers()) and
the cgroups the filesystem served recently (DaemonStats.note_served).  Reads go
straight to the cgroup hierarchy through CgroupReader and to /proc/<pid>/stat,
never through the daemon's own mount.  A cgroup that vanished raises CgroupGone
(or ProcessGone); the collector skips it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cgroupfs.cgroups import CgroupPaths, CgroupReader, Hierarchy
from cgroupfs.cgroups.model import CpuStats, MemoryStats, PressureStats
from cgroupfs.errors import CgroupGone, ParseError, ProcessGone
from cgroupfs.host.stat import parse_stat
from cgroupfs.procs import read_task_stat
from cgroupfs_daemon.stats import ContainerInfo

PRESSURE_RESOURCES = ("cpu", "memory", "io")

# Start time is the oldest process's.  Pids grow until pid_max wraps (4M on 64-bit
# systemd hosts), so the oldest process is among the lowest pids; reading only
# these bounds the cost for containers with thousands of processes.
_START_TIME_PIDS = 32


@dataclass(frozen=True)
class Target:
    """One cgroup to export."""

    id: str                              # the cgroup path (memory v1 path, else the v2 path)
    paths: CgroupPaths                   # its path in every hierarchy
    container: ContainerInfo | None = None
    served: bool = False                 # came from the served list (forget it when gone)


@dataclass(frozen=True)
class DeviceBytes:
    device: str                          # "/dev/sda" like cAdvisor, "MAJ:MIN" if unnamed
    read_bytes: int
    write_bytes: int
    read_ios: int
    write_ios: int


@dataclass(frozen=True)
class ContainerSnapshot:
    target: Target
    memory: MemoryStats | None           # None: the cgroup has no memory cgroup of its own
    cpu: CpuStats | None
    io: tuple[DeviceBytes, ...] | None
    processes: int
    threads: int
    start_time_s: float | None           # unix time; None when the cgroup has no process
    pressure: dict[str, PressureStats] = field(default_factory=dict)  # resource -> totals


def uses_v1_id(hierarchy: Hierarchy) -> bool:
    """Whether a cgroup is named by its memory v1 path (v1, hybrid) or its v2 path."""
    return "memory" in hierarchy.v1 or hierarchy.v2 is None


def cgroup_id(hierarchy: Hierarchy, paths: CgroupPaths) -> str | None:
    """The one name of a cgroup in the metrics (their `id` label), for containers and served cgroups alike."""
    return paths.v1.get("memory") if uses_v1_id(hierarchy) else paths.v2


def uniform_paths(hierarchy: Hierarchy, cgroup_path: str) -> CgroupPaths:
    """Docker (and systemd) give a container the same path in every hierarchy."""
    return CgroupPaths(
        v1={controller: cgroup_path for controller in hierarchy.v1},
        v2=cgroup_path if hierarchy.v2 is not None else None,
    )


def list_targets(
    hierarchy: Hierarchy, containers: list[ContainerInfo], served: list[CgroupPaths],
) -> list[Target]:
    """Docker containers first, then served cgroups not already listed; one target per id.

    `served` is ordered least recent first, so a later entry with the same id (the
    same cgroup seen with other paths in another hierarchy) replaces an earlier one.
    """
    targets: dict[str, Target] = {}
    for info in containers:
        cgroup_path = cgroup_id(hierarchy, info.cgroup)
        if cgroup_path is not None and cgroup_path != "/":
            targets[cgroup_path] = Target(cgroup_path, uniform_paths(hierarchy, cgroup_path), container=info)
    for paths in served:
        identity = cgroup_id(hierarchy, paths)
        if identity is None or identity == "/":
            continue
        existing = targets.get(identity)
        if existing is None or existing.container is None:
            targets[identity] = Target(identity, paths, served=True)
    return list(targets.values())


def _is_own(path: str | None) -> bool:
    """A controller path of "/" is the host's root cgroup: its counters are not the container's."""
    return path is not None and path != "/"


class SnapshotReader:
    def __init__(self, reader: CgroupReader, proc_root: str = "/proc", sys_root: str = "/sys"):
        self.reader = reader
        self.hierarchy = reader.hierarchy
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        # Read once, at construction (before the mount exists): btime only changes at boot.
        with open(os.path.join(proc_root, "stat"), encoding="ascii") as f:
            self.boot_time_s = parse_stat(f.read()).value("btime") or 0
        self._device_names: dict[tuple[int, int], str] = {}

    def _controller_path(self, paths: CgroupPaths, controller: str) -> str | None:
        version = self.hierarchy.version_of(controller)
        if version == 1:
            return paths.v1.get(controller)
        return paths.v2 if version == 2 else None

    def _task_paths(self, target: Target) -> CgroupPaths:
        # Count tasks in the cgroup that names the target, whichever controller
        # CgroupReader would otherwise prefer (cpuacct may sit at the root).  When the
        # v1 pids cgroup has the same path it holds the same tasks, and listing its 8
        # control files is cheaper than listing the memory cgroup's 28.
        if uses_v1_id(self.hierarchy):
            if target.paths.v1.get("pids") == target.id and self.hierarchy.version_of("pids") == 1:
                return CgroupPaths(v1={"pids": target.id})
            return CgroupPaths(v1={"memory": target.id})
        return CgroupPaths(v2=target.id)

    def read(self, target: Target) -> ContainerSnapshot:
        paths = target.paths
        memory = self.reader.memory(paths) if _is_own(self._controller_path(paths, "memory")) else None
        cpu_own = any(_is_own(self._controller_path(paths, c)) for c in ("cpu", "cpuacct"))
        if self.hierarchy.version_of("cpu") is None and self.hierarchy.version_of("cpuacct") is None:
            cpu_own = _is_own(paths.v2)  # v2 without the cpu controller: cpu.stat still counts usage
        cpu = self.reader.cpu(paths) if cpu_own else None
        io_controller = "blkio" if self.hierarchy.version_of("blkio") == 1 else "io"
        io = None
        if _is_own(self._controller_path(paths, io_controller)):
            stats = self.reader.io(paths)
            io = None if stats is None else tuple(
                DeviceBytes(self.device_name(d.major, d.minor), d.read_bytes, d.write_bytes, d.read_ios, d.write_ios)
                for d in stats.devices
            )
        task_paths = self._task_paths(target)
        pids = self.reader.process_ids(task_paths)
        threads = len(self.reader.thread_ids(task_paths))
        return ContainerSnapshot(
            target=target, memory=memory, cpu=cpu, io=io,
            processes=len(pids), threads=threads,
            start_time_s=self.start_time(pids, target.container.init_pid if target.container else 0),
            pressure=self.pressure(target),
        )

    def pressure(self, target: Target) -> dict[str, PressureStats]:
        """PSI of the target's v2 cgroup (v2 and hybrid hosts); none for the root cgroup."""
        if not _is_own(target.paths.v2):
            return {}
        result = {}
        for resource in PRESSURE_RESOURCES:
            try:
                stats = self.reader.pressure(target.paths, resource)
            except CgroupGone:
                if not uses_v1_id(self.hierarchy):
                    raise  # on v2 this is the container's own cgroup: it is gone
                return {}  # hybrid: the container has no cgroup in the v2 tree
            if stats is not None:
                result[resource] = stats
        return result

    def start_time(self, pids: list[int], init_pid: int) -> float | None:
        """Unix time the oldest process of the cgroup started (Docker: its init)."""
        candidates = ([init_pid] if init_pid > 0 else []) + sorted(pids)[:_START_TIME_PIDS]
        oldest = None
        for pid in candidates:
            try:
                ticks = read_task_stat(pid, self.proc_root).start_time_ticks
            except (ProcessGone, ParseError):
                continue  # exited since the cgroup was listed
            oldest = ticks if oldest is None else min(oldest, ticks)
            if pid == init_pid:
                break  # nothing in a container is older than its init
        return None if oldest is None else self.boot_time_s + oldest / self.clock_ticks

    def device_name(self, major: int, minor: int) -> str:
        """/dev/<name> from /sys/dev/block/MAJ:MIN/uevent, as cAdvisor labels devices."""
        key = (major, minor)
        name = self._device_names.get(key)
        if name is None:
            name = f"{major}:{minor}"
            try:
                with open(os.path.join(self.sys_root, f"dev/block/{major}:{minor}/uevent"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("DEVNAME="):
                            name = "/dev/" + line.strip().partition("=")[2]
                            break
            except OSError:
                pass  # a device without a sysfs entry keeps its number
            if len(self._device_names) > 1024:
                self._device_names.clear()
            self._device_names[key] = name
        return name
