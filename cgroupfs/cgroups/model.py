"""Typed snapshots of one cgroup's counters, the same shape on cgroup v1 and v2.

The readers (``v1.py``, ``v2.py``) fill these in; the renderers in ``cgroupfs/files``
only ever see these types and never ask which cgroup version produced them.
``None`` means "the kernel has no such limit/counter here" (unlimited, or the
controller is not available) and renderers fall back to the host's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MemoryStats:
    """Memory controller view of a cgroup (memory.* files)."""

    # min(memory.max | memory.limit_in_bytes) over the cgroup and all its ancestors;
    # None when nothing below the root sets a limit.
    limit_bytes: int | None
    usage_bytes: int
    # Swap the cgroup may use on top of memory (v2 memory.swap.max min over ancestors;
    # v1 memsw limit - memory limit).  None = unlimited, 0 = no swap allowed.
    swap_limit_bytes: int | None
    # v2 memory.swap.current; v1 memsw.usage - usage.  None when swap accounting is off.
    swap_usage_bytes: int | None
    # memory.stat, normalised to the v2 names (v1's hierarchical total_* keys mapped).
    anon_bytes: int = 0
    file_bytes: int = 0
    active_anon_bytes: int = 0
    inactive_anon_bytes: int = 0
    active_file_bytes: int = 0
    inactive_file_bytes: int = 0
    unevictable_bytes: int = 0
    shmem_bytes: int = 0
    mapped_bytes: int = 0
    dirty_bytes: int = 0
    writeback_bytes: int = 0
    anon_thp_bytes: int = 0
    slab_reclaimable_bytes: int = 0
    slab_unreclaimable_bytes: int = 0
    # Kernel memory split out only by v2's memory.stat (0 on v1, whose memory.stat
    # has no such keys; that memory is still inside usage_bytes).  v1 has only the
    # total, memory.kmem.usage_in_bytes: the readers put it in slab_unreclaimable.
    kernel_stack_bytes: int = 0
    pagetables_bytes: int = 0
    sec_pagetables_bytes: int = 0
    percpu_bytes: int = 0
    zswap_bytes: int = 0
    zswapped_bytes: int = 0
    shmem_thp_bytes: int = 0
    file_thp_bytes: int = 0
    # Swapped-out pages still in memory: v2 memory.stat swapcached, v1 total_swapcached.
    swap_cached_bytes: int = 0
    # memory.events oom_kill (v2) / memory.oom_control oom_kill (v1); None if absent.
    oom_kill_count: int | None = None
    # memory.stat's event counters under their /proc/vmstat names (v2 memory.stat
    # uses those names: pgfault, pgmajfault, workingset_refault_file, pgscan_kswapd,
    # pswpin, ...; v1 has total_pgfault and total_pgmajfault), as (name, count).
    vm_events: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class CpuStats:
    """CPU time and bandwidth of a cgroup (cpu, cpuacct controllers / cpu.stat)."""

    user_usec: int    # includes nice_usec (the kernel's utime)
    system_usec: int
    # Per host cpu (index = host cpu number) (user_usec, system_usec), when the kernel
    # splits it (v1 cpuacct.usage_all).  None on v2, which has no per-cpu split.
    per_cpu_usec: tuple[tuple[int, int], ...] | None
    # CFS bandwidth: quota None = unlimited.
    quota_usec: int | None
    period_usec: int
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_usec: int = 0
    nice_usec: int = 0  # v2 cpu.stat nice_usec, where the kernel has it; v1 has no nice split

    @property
    def usage_usec(self) -> int:
        return self.user_usec + self.system_usec


@dataclass(frozen=True)
class CpusetInfo:
    """The effective cpuset (cpuset.cpus.effective / cpuset.effective_cpus)."""

    cpus: tuple[int, ...]  # host cpu numbers, sorted


@dataclass(frozen=True)
class DeviceIo:
    """I/O of one cgroup on one block device (blkio.* v1 / io.stat v2)."""

    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    read_ios: int = 0
    write_ios: int = 0
    discard_bytes: int = 0
    discard_ios: int = 0


@dataclass(frozen=True)
class IoStats:
    devices: tuple[DeviceIo, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PressureStats:
    """PSI "some"/"full" totals in microseconds (v2 *.pressure files); None when absent."""

    some_total_usec: int | None
    full_total_usec: int | None
    # The lines' avg10, avg60, avg300 (percent), same order; None when the line is absent.
    some_averages: tuple[float, float, float] | None = None
    full_averages: tuple[float, float, float] | None = None
