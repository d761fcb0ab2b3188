"""proc/vmstat: the container's own memory counters where its cgroup keeps them,
the host's line, unchanged, for every other one.  docs/formulas.md lists the lines.

- event counters memory.stat keeps under vmstat's own name (v2: pgfault, pgmajfault,
  pgrefill, pgscan_*, pgsteal_*, pgactivate, pgdeactivate, pglazyfree, pglazyfreed,
  workingset_*, thp_*, zswpin, zswpout, pswpin, pswpout where the kernel has them;
  v1: pgfault, pgmajfault from total_pgfault/total_pgmajfault);
- oom_kill: memory.events (v2) / memory.oom_control (v1);
- page counts from memory.stat's bytes / page size: nr_anon_pages, nr_file_pages,
  nr_mapped, nr_dirty, nr_writeback, nr_shmem, nr_{active,inactive}_{anon,file},
  nr_unevictable;
- nr_free_pages: (MemTotal - usage) / page size, MemTotal as in meminfo (the memory
  limit, at most the host's), never above the host's nr_free_pages.
"""

from __future__ import annotations

from cgroupfs.cgroups.model import MemoryStats
from cgroupfs.host.vmstat import HostVmstat

# vmstat gauge -> MemoryStats field, in bytes
_PAGE_GAUGES = {
    "nr_anon_pages": "anon_bytes",
    "nr_file_pages": "file_bytes",
    "nr_mapped": "mapped_bytes",
    "nr_dirty": "dirty_bytes",
    "nr_writeback": "writeback_bytes",
    "nr_shmem": "shmem_bytes",
    "nr_active_anon": "active_anon_bytes",
    "nr_inactive_anon": "inactive_anon_bytes",
    "nr_active_file": "active_file_bytes",
    "nr_inactive_file": "inactive_file_bytes",
    "nr_unevictable": "unevictable_bytes",
}


def container_values(host: HostVmstat, memory: MemoryStats, host_mem_total_bytes: int,
                     page_size: int) -> dict[str, int]:
    """The lines whose value is the container's, by name."""
    values = dict(memory.vm_events)
    for name, field in _PAGE_GAUGES.items():
        values[name] = getattr(memory, field) // page_size
    if memory.oom_kill_count is not None:
        values["oom_kill"] = memory.oom_kill_count
    total = min(memory.limit_bytes, host_mem_total_bytes) if memory.limit_bytes else host_mem_total_bytes
    free_pages = max(0, total - memory.usage_bytes) // page_size
    values["nr_free_pages"] = min(free_pages, host.value("nr_free_pages", free_pages))
    return values


def render(host: HostVmstat, memory: MemoryStats, host_mem_total_bytes: int, page_size: int = 4096) -> bytes:
    ours = container_values(host, memory, host_mem_total_bytes, page_size)
    return "".join(f"{name} {ours.get(name, value)}\n" for name, value in host.lines).encode()
