"""The one table of virtual files: relative path -> how to render it.

The FUSE operations and the `show` command both use it; adding a file is one
renderer module plus one row here.  Each row's function gathers snapshots from
ReaderSources and calls the pure renderer; when the cgroup has nothing to say
(controller missing), it returns the host's file unchanged.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass

from cgroupfs.files import (
    cpu_online,
    cpuinfo,
    diskstats,
    loadavg,
    meminfo,
    pressure,
    slabinfo,
    stat,
    swaps,
    uptime,
    vmstat,
)
from cgroupfs.files.capacity import cpu_capacity
from cgroupfs.sources import ReaderSources


@dataclass(frozen=True)
class VirtualFile:
    path: str       # relative to the mount point, LXCFS's layout
    host_name: str  # the host file served unchanged to host readers (HostReader.raw)
    render: Callable[[ReaderSources], bytes]
    # Whether the content depends on the reader's pid namespace, not only its cgroups.
    per_namespace: bool = False
    # Controllers whose limits shape the text: a cached text is reused only while the
    # cgroup's limit files still read as they did when it was rendered.
    limits: tuple[str, ...] = ()
    # The text served instead of the host's file (to host readers, and when the
    # cgroup cannot be read), for a host file that must not be passed on.
    host_substitute: Callable[[], bytes] | None = None


def _meminfo(s: ReaderSources) -> bytes:
    memory = s.memory()
    return s.host.raw("meminfo") if memory is None else meminfo.render(s.host.meminfo(), memory)


def _cpuinfo(s: ReaderSources) -> bytes:
    return cpuinfo.render(s.host.cpuinfo(), s.visible_cpus())


def _stat(s: ReaderSources) -> bytes:
    cpu = s.cpu()
    if cpu is None:
        return s.host.raw("stat")
    tasks = s.task_counts()
    host, visible, ticks_per_second = s.host.stat(), s.visible_cpus(), s.options.ticks_per_second
    idle = stat.quota_idle_ticks(host, cpu, visible, ticks_per_second)
    floor = 0 if idle is None else s.never_below_last("stat-idle", idle)
    return stat.render(host, cpu, visible, tasks.running, tasks.blocked, ticks_per_second, idle_floor_ticks=floor)


def _diskstats(s: ReaderSources) -> bytes:
    io = s.io()
    return s.host.raw("diskstats") if io is None else diskstats.render(s.host.diskstats(), io)


def _uptime(s: ReaderSources) -> bytes:
    # A reader in the host's pid namespace has the host's init: the host's uptime.
    if s.in_host_pid_namespace():
        return s.host.raw("uptime")
    if s.options.host_uptime:
        seconds = s.now_boottime()  # what the kernel's /proc/uptime counts (CLOCK_BOOTTIME)
    else:
        start = s.container_init_start_ticks()
        if start is None:
            return s.host.raw("uptime")
        seconds = uptime.container_uptime(s.now_boottime(), start, s.options.ticks_per_second)
    cpu = s.cpu()
    return uptime.render(seconds, cpu_capacity(cpu, len(s.visible_cpus())), cpu.usage_usec if cpu else 0)


def _loadavg(s: ReaderSources) -> bytes:
    loads = s.loads()
    tasks = s.task_counts()
    return loadavg.render(loads or (0, 0, 0), tasks.running, tasks.total, tasks.newest_pid)


def _swaps(s: ReaderSources) -> bytes:
    memory = s.memory()
    if memory is None or memory.swap_usage_bytes is None:
        return s.host.raw("swaps")  # no swap accounting: the host's view, like meminfo's
    return swaps.render(memory.swap_limit_bytes, memory.swap_usage_bytes, s.host.meminfo().kb("SwapTotal"))


def _cpu_online(s: ReaderSources) -> bytes:
    return cpu_online.render(s.visible_cpus())


def _vmstat(s: ReaderSources) -> bytes:
    memory = s.memory()
    if memory is None:
        return s.host.raw("vmstat")
    return vmstat.render(s.host.vmstat(), memory, s.host.meminfo().kb("MemTotal") * 1024, mmap.PAGESIZE)


def _slabinfo(s: ReaderSources) -> bytes:
    return slabinfo.render(s.slab_caches())


def _pressure(resource: str) -> Callable[[ReaderSources], bytes]:
    def render(s: ReaderSources) -> bytes:
        stats = s.pressure(resource)
        # No unified cgroup (a pure v1 host): the host's, like any counter we lack.
        return s.host.raw(f"pressure/{resource}") if stats is None else pressure.render(stats)
    return render


_MEMORY = ("memory",)
_CPUS = ("cpu", "cpuset")  # the visible cpus: cpuset, capped by the quota

FILES: dict[str, VirtualFile] = {
    f.path: f
    for f in (
        VirtualFile("proc/cpuinfo", "cpuinfo", _cpuinfo, limits=_CPUS),
        VirtualFile("proc/diskstats", "diskstats", _diskstats),
        VirtualFile("proc/loadavg", "loadavg", _loadavg, per_namespace=True),  # last_pid
        VirtualFile("proc/meminfo", "meminfo", _meminfo, limits=_MEMORY),
        VirtualFile("proc/pressure/cpu", "pressure/cpu", _pressure("cpu")),
        VirtualFile("proc/pressure/io", "pressure/io", _pressure("io")),
        VirtualFile("proc/pressure/memory", "pressure/memory", _pressure("memory")),
        # /proc/slabinfo is root's only: the host's list (the kernel's heap layout)
        # is never passed on, see files/slabinfo.py.
        VirtualFile("proc/slabinfo", "slabinfo", _slabinfo, host_substitute=lambda: slabinfo.render(None)),
        VirtualFile("proc/stat", "stat", _stat, limits=_CPUS),
        VirtualFile("proc/swaps", "swaps", _swaps, limits=_MEMORY),
        VirtualFile("proc/uptime", "uptime", _uptime, per_namespace=True, limits=_CPUS),
        VirtualFile("proc/vmstat", "vmstat", _vmstat, limits=_MEMORY),
        VirtualFile("sys/devices/system/cpu/online", "online", _cpu_online, limits=_CPUS),
        VirtualFile("sys/devices/system/cpu/possible", "possible", _cpu_online, limits=_CPUS),
        VirtualFile("sys/devices/system/cpu/present", "present", _cpu_online, limits=_CPUS),
    )
}

# The one directory whose other entries are the host's own, passed through (see
# files/cpu_directory.py): relative path -> the host directory (HostReader.cpu_directory_fd).
HOST_DIRECTORY = "sys/devices/system/cpu"

# Every directory on the way to a file ("" is the root).
DIRECTORIES: dict[str, list[str]] = {"": []}
for _path in FILES:
    _parts = _path.split("/")
    for _depth in range(len(_parts)):
        _parent, _child = "/".join(_parts[:_depth]), _parts[_depth]
        DIRECTORIES.setdefault(_parent, [])
        if _child not in DIRECTORIES[_parent]:
            DIRECTORIES[_parent].append(_child)
        if _depth < len(_parts) - 1:
            DIRECTORIES.setdefault("/".join(_parts[:_depth + 1]), [])
