"""Everything a renderer may need about one reader, read lazily and at most once.

`ReaderSources` is the glue between the I/O (cgroup and host readers) and the pure
renderers: the path table asks it for typed snapshots and hands them to a
renderer.  Nothing here decides a formula.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cgroupfs.cgroups import CgroupPaths, CgroupReader
from cgroupfs.cgroups.model import CpuStats, CpusetInfo, IoStats, MemoryStats, PressureStats
from cgroupfs.errors import ParseError, ProcessGone
from cgroupfs.files.visible_cpus import visible_cpus
from cgroupfs.host import HostReader
from cgroupfs.procs import find_namespace_init, pid_namespace, read_nspid, read_task_stat, read_thread_stat
from cgroupfs.rising import RisingCounters

_UNSET = object()

# Threads whose state one render reads at most (stat's procs_running/procs_blocked,
# loadavg's running/total): ~10 µs each, so a few ms per render on the single FUSE
# loop whatever the container's size.  Above it the counts are estimated from a
# random sample; the total is exact.
MAX_THREADS_SCANNED = 256

# (1-minute, 5-minute, 15-minute) fixed-point loads for a task key, or None if unknown.
LoadLookup = Callable[[str], "tuple[int, int, int] | None"]


@dataclass(frozen=True)
class Options:
    cap_cpus_by_quota: bool = True
    # proc/uptime: the host's uptime instead of the container's age (`--uptime host`).
    host_uptime: bool = False
    ticks_per_second: int = os.sysconf("SC_CLK_TCK")
    proc_root: str = "/proc"


@dataclass(frozen=True)
class TaskCounts:
    running: int     # threads in R
    blocked: int     # threads in D
    total: int       # threads
    newest_pid: int  # highest process id, as the reader's namespace numbers it (0 if unknown)


class NamespaceInits:
    """Cache: pid namespace -> (host pid of its init, init's start time in ticks).

    An entry is trusted only while that pid still has the same start time, so a
    reused pid can never lend its start time to another namespace.
    """

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root
        self._by_namespace: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def init_start_ticks(self, pid: int, candidates: Callable[[], list[int]]) -> int | None:
        namespace = pid_namespace(pid, self.proc_root)
        with self._lock:
            cached = self._by_namespace.get(namespace)
        if cached is not None:
            init_pid, start = cached
            try:
                if (read_task_stat(init_pid, self.proc_root).start_time_ticks == start
                        and pid_namespace(init_pid, self.proc_root) == namespace):
                    return start
            except ProcessGone:
                pass
        found = find_namespace_init(pid, candidates(), self.proc_root)
        if found is None:
            return None
        start = read_task_stat(found, self.proc_root).start_time_ticks
        with self._lock:
            if len(self._by_namespace) > 4096:
                self._by_namespace.clear()
            self._by_namespace[namespace] = (found, start)
        return start


class ReaderSources:
    """Lazily read snapshots for the process `pid`, whose cgroups are `paths`."""

    def __init__(
        self,
        pid: int,
        paths: CgroupPaths,
        cgroups: CgroupReader,
        host: HostReader,
        inits: NamespaceInits,
        options: Options,
        load_lookup: LoadLookup | None = None,
        host_pid_namespace: str | None = None,
        rising: RisingCounters | None = None,
    ):
        self.pid = pid
        self.paths = paths
        self.cgroups = cgroups
        self.host = host
        self.inits = inits
        self.options = options
        self.load_lookup = load_lookup
        self.host_pid_namespace = host_pid_namespace
        self.rising = rising if rising is not None else RisingCounters()  # (empty is falsy)
        self._memo: dict[str, object] = {}

    def _once(self, name: str, compute: Callable[[], object]):
        value = self._memo.get(name, _UNSET)
        if value is _UNSET:
            value = self._memo[name] = compute()
        return value

    def memory(self) -> MemoryStats | None:
        return self._once("memory", lambda: self.cgroups.memory(self.paths))

    def cpu(self) -> CpuStats | None:
        return self._once("cpu", lambda: self.cgroups.cpu(self.paths))

    def cpuset(self) -> CpusetInfo | None:
        return self._once("cpuset", lambda: self.cgroups.cpuset(self.paths))

    def io(self) -> IoStats | None:
        return self._once("io", lambda: self.cgroups.io(self.paths))

    def pressure(self, resource: str) -> PressureStats | None:
        return self._once(f"pressure/{resource}", lambda: self.cgroups.pressure(self.paths, resource))

    def slab_caches(self) -> tuple[str, ...] | None:
        return self.cgroups.slab_caches(self.paths)

    def visible_cpus(self) -> tuple[int, ...]:
        return self._once("visible", lambda: visible_cpus(
            self.host.online_cpus(), self.cpuset(), self.cpu(), self.options.cap_cpus_by_quota))

    def never_below_last(self, name: str, value: int) -> int:
        """`value`, or the highest served before under `name` for this cgroup (rising.py)."""
        return self.rising.at_least_before((name, self.paths.key()), value)

    def task_key(self) -> str | None:
        return self.cgroups.task_key(self.paths)

    def task_counts(self) -> TaskCounts:
        return self._once("tasks", self._count_tasks)

    def _count_tasks(self) -> TaskCounts:
        tids = self.cgroups.thread_ids(self.paths)
        # Each thread's state is one read of /proc; read at most MAX_THREADS_SCANNED
        # (a random sample, seeded for repeatability) and scale, so that a render's
        # cost does not grow with the container.
        sample = tids if len(tids) <= MAX_THREADS_SCANNED else random.Random(len(tids)).sample(
            tids, MAX_THREADS_SCANNED)
        running = blocked = seen = 0
        for tid in sample:
            try:
                state = read_thread_stat(tid, self.options.proc_root).state
            except (ProcessGone, ParseError):
                continue  # exited while we counted
            seen += 1
            running += state == "R"
            blocked += state == "D"
        if sample is tids:
            return TaskCounts(running, blocked, seen, self._newest_pid())
        scale = len(tids) / seen if seen else 0
        return TaskCounts(round(running * scale), round(blocked * scale), len(tids), self._newest_pid())

    def _newest_pid(self) -> int:
        """The highest process id of the cgroup as the reader's pid namespace numbers it
        (NSpid's entry at the reader's depth: a process in a pid namespace nested in
        the container has a deeper one of its own)."""
        try:
            depth = len(read_nspid(self.pid, self.options.proc_root)) - 1
        except (ProcessGone, ParseError):
            return 0
        pids = sorted(self.cgroups.process_ids(self.paths), reverse=True)
        for pid in pids[:8]:
            try:
                nspids = read_nspid(pid, self.options.proc_root)
            except (ProcessGone, ParseError):
                continue
            if len(nspids) > depth:  # not in a namespace above the reader's
                return nspids[depth]
        return 0

    def in_host_pid_namespace(self) -> bool:
        return self.host_pid_namespace is not None and (
            pid_namespace(self.pid, self.options.proc_root) == self.host_pid_namespace)

    def container_init_start_ticks(self) -> int | None:
        return self.inits.init_start_ticks(self.pid, lambda: self.cgroups.process_ids(self.paths))

    def loads(self) -> tuple[int, int, int] | None:
        key = self.task_key()
        if self.load_lookup is None or key is None:
            return None
        return self.load_lookup(key)

    @staticmethod
    def now_boottime() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
