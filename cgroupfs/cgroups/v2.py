"""cgroup v2 ("unified") counters -> typed snapshots.  All v2 file knowledge is here.

Formats follow Documentation/admin-guide/cgroup-v2.rst.  `chain` is the list of
directories from the cgroup2 mount root down to the cgroup (see files.ancestry).

A controller's interface files exist only in cgroups whose parent enables it in
cgroup.subtree_control; a cgroup without them is accounted and limited by its
nearest ancestor that has them (a systemd unit with CPUQuota= but no AllowedCPUs=
has cpu.max but no cpuset.cpus.effective; its cpus are its parent's).  So each
value comes from the nearest level that has its file, never "missing = malformed".
"""

from __future__ import annotations

from cgroupfs.cgroups.files import (
    min_limit,
    parse_cpu_list,
    parse_flat_keyed,
    parse_int,
    parse_limit,
    parse_pressure_lines,
    read_id_list,
    read_text,
    required_text,
    tightest_quota,
)
from cgroupfs.cgroups.model import (
    CpuStats,
    CpusetInfo,
    DeviceIo,
    IoStats,
    MemoryStats,
    PressureStats,
)
from cgroupfs.errors import ParseError

_MEMORY_STAT_FIELDS = {
    "anon": "anon_bytes",
    "file": "file_bytes",
    "active_anon": "active_anon_bytes",
    "inactive_anon": "inactive_anon_bytes",
    "active_file": "active_file_bytes",
    "inactive_file": "inactive_file_bytes",
    "unevictable": "unevictable_bytes",
    "shmem": "shmem_bytes",
    "file_mapped": "mapped_bytes",
    "file_dirty": "dirty_bytes",
    "file_writeback": "writeback_bytes",
    "anon_thp": "anon_thp_bytes",
    "slab_reclaimable": "slab_reclaimable_bytes",
    "slab_unreclaimable": "slab_unreclaimable_bytes",
    "kernel_stack": "kernel_stack_bytes",
    "pagetables": "pagetables_bytes",
    "sec_pagetables": "sec_pagetables_bytes",
    "percpu": "percpu_bytes",
    "zswap": "zswap_bytes",
    "zswapped": "zswapped_bytes",
    "shmem_thp": "shmem_thp_bytes",
    "file_thp": "file_thp_bytes",
    "swapcached": "swap_cached_bytes",
}




# The files a runtime writes to set a container's limits, per controller: what a
# rendered text's freshness is checked against (see CgroupReader.limits).
LIMIT_FILES = {
    "memory": ("memory.max", "memory.swap.max"),
    "cpu": ("cpu.max",),
    "cpuset": ("cpuset.cpus.effective",),
}


def nearest_with(chain: list[str], name: str, include_root: bool = False) -> str | None:
    """The deepest directory of `chain` that has the file `name` (the level whose
    controller accounts for the cgroup); None when no level (below the root) has it."""
    levels = chain if include_root else chain[1:]
    for directory in reversed(levels):
        if read_text(directory, name) is not None:
            return directory
    return None


def read_memory(chain: list[str]) -> MemoryStats | None:
    """None when no level below the root has the memory controller: the host's memory."""
    leaf = nearest_with(chain, "memory.current")
    if leaf is None:
        return None
    usage = parse_int(required_text(leaf, "memory.current").strip(), "memory.current")
    stat = parse_flat_keyed(required_text(leaf, "memory.stat"), "memory.stat")
    swap_usage_text = read_text(leaf, "memory.swap.current")
    swap_usage = None if swap_usage_text is None else parse_int(swap_usage_text.strip(), "memory.swap.current")
    swap_limit = min_limit(chain, "memory.swap.max") if swap_usage_text is not None else None
    events_text = read_text(leaf, "memory.events")
    oom_kill = None if events_text is None else parse_flat_keyed(events_text, "memory.events").get("oom_kill")
    fields = {name: stat.get(key, 0) for key, name in _MEMORY_STAT_FIELDS.items()}
    # Every other key of memory.stat is an event counter or a count, named as in
    # /proc/vmstat where vmstat has it (the renderer matches them by name).
    events = tuple((key, value) for key, value in stat.items() if key not in _MEMORY_STAT_FIELDS)
    return MemoryStats(
        limit_bytes=min_limit(chain, "memory.max"), usage_bytes=usage,
        swap_limit_bytes=swap_limit, swap_usage_bytes=swap_usage, oom_kill_count=oom_kill,
        vm_events=events, **fields,
    )


def read_cpu(chain: list[str]) -> CpuStats:
    # cpu.stat's usage lines exist in every cgroup, with or without the cpu controller.
    stat = parse_flat_keyed(required_text(chain[-1], "cpu.stat"), "cpu.stat")
    quota, period = tightest_quota(_quota_levels(chain))
    return CpuStats(
        user_usec=stat.get("user_usec", 0), system_usec=stat.get("system_usec", 0),
        per_cpu_usec=None, quota_usec=quota, period_usec=period,
        nr_periods=stat.get("nr_periods", 0), nr_throttled=stat.get("nr_throttled", 0),
        throttled_usec=stat.get("throttled_usec", 0), nice_usec=stat.get("nice_usec", 0),
    )


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """cpu.max: `$MAX $PERIOD`, MAX may be "max"."""
    parts = text.split()
    if len(parts) != 2:
        raise ParseError(f"cpu.max: malformed {text[:40]!r}")
    return parse_limit(parts[0], "cpu.max"), parse_int(parts[1], "cpu.max period")


def _quota_levels(chain: list[str]):
    """(quota, period) per level that has cpu.max (the root has none)."""
    for directory in chain:
        text = read_text(directory, "cpu.max")
        if text is not None:
            yield parse_cpu_max(text)


def read_cpuset(chain: list[str]) -> CpusetInfo | None:
    level = nearest_with(chain, "cpuset.cpus.effective", include_root=True)
    if level is None:
        return None
    return CpusetInfo(cpus=parse_cpu_list(required_text(level, "cpuset.cpus.effective")))


def parse_io_stat(text: str) -> IoStats:
    """io.stat: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` per line."""
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        major, colon, minor = parts[0].partition(":")
        if not colon:
            raise ParseError(f"io.stat: malformed line {line[:80]!r}")
        counters: dict[str, int] = {}
        for pair in parts[1:]:
            key, eq, value = pair.partition("=")
            if not eq:
                raise ParseError(f"io.stat: malformed field {pair[:40]!r}")
            counters[key] = parse_int(value, f"io.stat {key}")
        devices.append(DeviceIo(
            major=parse_int(major, "io.stat"), minor=parse_int(minor, "io.stat"),
            read_bytes=counters.get("rbytes", 0), write_bytes=counters.get("wbytes", 0),
            read_ios=counters.get("rios", 0), write_ios=counters.get("wios", 0),
            discard_bytes=counters.get("dbytes", 0), discard_ios=counters.get("dios", 0),
        ))
    return IoStats(devices=tuple(devices))


def read_io(chain: list[str]) -> IoStats | None:
    """None when no level below the root has the io controller: the host's disks."""
    level = nearest_with(chain, "io.stat")
    return None if level is None else parse_io_stat(required_text(level, "io.stat"))


def read_pressure(directory: str, resource: str) -> PressureStats | None:
    text = read_text(directory, f"{resource}.pressure")
    if text is None:
        return None
    lines = parse_pressure_lines(text)
    some, full = lines.get("some"), lines.get("full")
    return PressureStats(
        some_total_usec=some[1] if some else None, full_total_usec=full[1] if full else None,
        some_averages=some[0] if some else None, full_averages=full[0] if full else None,
    )


def read_thread_ids(directory: str) -> list[int]:
    return read_id_list(directory, "cgroup.threads")


def read_process_ids(directory: str) -> list[int]:
    return read_id_list(directory, "cgroup.procs")
