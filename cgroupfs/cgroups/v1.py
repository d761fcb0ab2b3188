"""cgroup v1 ("legacy") counters -> typed snapshots.  All v1 file knowledge is here.

Every function takes `chain`: the cgroup's directories from the controller's mount
root down to the cgroup itself (see files.ancestry), so limits can be taken as the
minimum over the ancestors the way the kernel enforces them.
"""

from __future__ import annotations

from cgroupfs.cgroups.files import (
    DEFAULT_CFS_PERIOD_USEC,
    min_limit,
    parse_cpu_list,
    parse_flat_keyed,
    parse_int,
    parse_limit,
    read_id_list,
    read_text,
    required_text,
    tightest_quota,
)
from cgroupfs.cgroups.model import CpuStats, CpusetInfo, DeviceIo, IoStats, MemoryStats
from cgroupfs.errors import ParseError

# v1 memory.stat hierarchical keys -> MemoryStats field names.
_MEMORY_STAT_FIELDS = {
    "total_rss": "anon_bytes",
    "total_cache": "file_bytes",
    "total_active_anon": "active_anon_bytes",
    "total_inactive_anon": "inactive_anon_bytes",
    "total_active_file": "active_file_bytes",
    "total_inactive_file": "inactive_file_bytes",
    "total_unevictable": "unevictable_bytes",
    "total_shmem": "shmem_bytes",
    "total_mapped_file": "mapped_bytes",
    "total_dirty": "dirty_bytes",
    "total_writeback": "writeback_bytes",
    "total_rss_huge": "anon_thp_bytes",
    "total_swapcached": "swap_cached_bytes",
}




# v1 memory.stat's hierarchical event counters -> their /proc/vmstat names.  (v1's
# pgpgin/pgpgout count pages charged and uncharged, not vmstat's KiB of block I/O.)
_VMSTAT_EVENTS = {"total_pgfault": "pgfault", "total_pgmajfault": "pgmajfault"}


# The files a runtime writes to set a container's limits, per controller: what a
# rendered text's freshness is checked against (see CgroupReader.limits).
LIMIT_FILES = {
    "memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness"),
    "cpu": ("cpu.cfs_quota_us", "cpu.cfs_period_us"),
    "cpuset": ("cpuset.effective_cpus",),
}


def read_memory(chain: list[str]) -> MemoryStats:
    leaf = chain[-1]
    limit = min_limit(chain, "memory.limit_in_bytes")
    usage = parse_int(required_text(leaf, "memory.usage_in_bytes").strip(), "memory.usage_in_bytes")
    stat = parse_flat_keyed(required_text(leaf, "memory.stat"), "memory.stat")

    # memsw = memory + swap.  The honest swap limit is memsw limit - memory limit.
    swap_limit = swap_usage = None
    memsw_usage_text = read_text(leaf, "memory.memsw.usage_in_bytes")
    if memsw_usage_text is not None:
        memsw_limit = min_limit(chain, "memory.memsw.limit_in_bytes")
        if memsw_limit is not None:
            swap_limit = max(0, memsw_limit - limit) if limit is not None else memsw_limit
        swap_usage = max(0, parse_int(memsw_usage_text.strip(), "memsw usage") - usage)
    swappiness_text = read_text(leaf, "memory.swappiness")
    if swappiness_text is not None and parse_int(swappiness_text, "memory.swappiness") == 0:
        # Docker's --memory-swappiness=0: reclaim never swaps this cgroup's memory, so
        # it has no swap to show, whatever memsw allows (LXCFS shows none either).
        swap_limit, swap_usage = 0, swap_usage or 0

    oom_kill = None
    oom_text = read_text(leaf, "memory.oom_control")
    if oom_text is not None:
        oom_kill = parse_flat_keyed(oom_text, "memory.oom_control").get("oom_kill")

    fields = {name: stat.get(key, 0) for key, name in _MEMORY_STAT_FIELDS.items()}
    # v1 counts kernel memory (slab, stacks, page tables, ...) only as one total, and
    # cannot tell reclaimable slab apart: all of it is shown as unreclaimable slab.
    kmem_text = read_text(leaf, "memory.kmem.usage_in_bytes")
    if kmem_text is not None:
        fields["slab_unreclaimable_bytes"] = parse_int(kmem_text, "memory.kmem.usage_in_bytes")
    events = tuple((name, stat[key]) for key, name in _VMSTAT_EVENTS.items() if key in stat)
    return MemoryStats(
        limit_bytes=limit, usage_bytes=usage, swap_limit_bytes=swap_limit,
        swap_usage_bytes=swap_usage, oom_kill_count=oom_kill, vm_events=events, **fields,
    )


def parse_usage_all(text: str) -> tuple[tuple[int, int], ...]:
    """cpuacct.usage_all: `cpu user system` header, then one row per cpu in ns -> usec."""
    rows: dict[int, tuple[int, int]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) != 3:
            raise ParseError(f"cpuacct.usage_all: malformed line {line[:80]!r}")
        cpu, user_ns, system_ns = (parse_int(p, "cpuacct.usage_all") for p in parts)
        rows[cpu] = (user_ns // 1000, system_ns // 1000)
    width = max(rows) + 1 if rows else 0
    return tuple(rows.get(cpu, (0, 0)) for cpu in range(width))


def read_cpu(cpu_chain: list[str] | None, cpuacct_chain: list[str] | None) -> CpuStats:
    """`cpu` and `cpuacct` may be co-mounted or separate; either may be missing."""
    per_cpu = None
    user_usec = system_usec = 0
    if cpuacct_chain is not None:
        usage_all = read_text(cpuacct_chain[-1], "cpuacct.usage_all")
        if usage_all is not None:
            per_cpu = parse_usage_all(usage_all)
            user_usec = sum(user for user, _ in per_cpu)
            system_usec = sum(system for _, system in per_cpu)

    quota, period = None, DEFAULT_CFS_PERIOD_USEC
    throttling: dict[str, int] = {}
    if cpu_chain is not None:
        quota, period = tightest_quota(_quota_levels(cpu_chain))
        stat_text = read_text(cpu_chain[-1], "cpu.stat")
        if stat_text is not None:
            throttling = parse_flat_keyed(stat_text, "cpu.stat")
    return CpuStats(
        user_usec=user_usec, system_usec=system_usec, per_cpu_usec=per_cpu,
        quota_usec=quota, period_usec=period,
        nr_periods=throttling.get("nr_periods", 0),
        nr_throttled=throttling.get("nr_throttled", 0),
        throttled_usec=throttling.get("throttled_time", 0) // 1000,
    )


def _quota_levels(chain: list[str]):
    """(quota, period) per level that has the cfs files."""
    for directory in chain:
        quota_text = read_text(directory, "cpu.cfs_quota_us")
        period_text = read_text(directory, "cpu.cfs_period_us")
        if quota_text is not None and period_text is not None:
            yield (parse_limit(quota_text, "cpu.cfs_quota_us"),
                   parse_int(period_text.strip(), "cpu.cfs_period_us"))


def read_cpuset(chain: list[str]) -> CpusetInfo:
    leaf = chain[-1]
    text = read_text(leaf, "cpuset.effective_cpus")
    if text is None:
        text = required_text(leaf, "cpuset.cpus")
    return CpusetInfo(cpus=parse_cpu_list(text))


def parse_blkio(text: str, what: str) -> dict[tuple[int, int], dict[str, int]]:
    """blkio `MAJ:MIN Op value` lines (and a final `Total N`) -> {(maj, min): {op: value}}."""
    devices: dict[tuple[int, int], dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] == "Total":
            continue
        if len(parts) != 3 or ":" not in parts[0]:
            raise ParseError(f"{what}: malformed line {line[:80]!r}")
        major, _, minor = parts[0].partition(":")
        device = (parse_int(major, what), parse_int(minor, what))
        devices.setdefault(device, {})[parts[1]] = parse_int(parts[2], what)
    return devices


def read_io(chain: list[str]) -> IoStats:
    leaf = chain[-1]
    # The throttle files count every bio of the cgroup on any scheduler; the plain
    # (CFQ/BFQ) files exist only with those schedulers.
    for prefix in ("blkio.throttle.", "blkio.", "blkio.bfq."):
        bytes_text = read_text(leaf, prefix + "io_service_bytes_recursive")
        ios_text = read_text(leaf, prefix + "io_serviced_recursive")
        if bytes_text is not None and ios_text is not None:
            break
    else:
        return IoStats()
    by_bytes = parse_blkio(bytes_text, "io_service_bytes")
    by_ios = parse_blkio(ios_text, "io_serviced")
    devices = []
    for major, minor in sorted(set(by_bytes) | set(by_ios)):
        b, n = by_bytes.get((major, minor), {}), by_ios.get((major, minor), {})
        devices.append(DeviceIo(
            major=major, minor=minor,
            read_bytes=b.get("Read", 0), write_bytes=b.get("Write", 0),
            read_ios=n.get("Read", 0), write_ios=n.get("Write", 0),
            discard_bytes=b.get("Discard", 0), discard_ios=n.get("Discard", 0),
        ))
    return IoStats(devices=tuple(devices))


def read_thread_ids(directory: str) -> list[int]:
    return read_id_list(directory, "tasks")


def read_process_ids(directory: str) -> list[int]:
    return read_id_list(directory, "cgroup.procs")


def read_slab_caches(chain: list[str]) -> tuple[str, ...] | None:
    """The cache lines of memory.kmem.slabinfo (its /proc/slabinfo-format header left
    out); None when the file is absent or lists no cache: since Linux 5.9 slab caches
    are shared between cgroups and the kernel prints nothing there."""
    text = read_text(chain[-1], "memory.kmem.slabinfo")
    if text is None:
        return None
    caches = tuple(line for line in text.splitlines()
                   if line.strip() and not line.startswith(("slabinfo -", "#")))
    return caches or None
