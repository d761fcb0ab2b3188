"""proc/meminfo from the memory controller.

MemTotal = min(limit over the cgroup and its ancestors, host MemTotal);
MemFree = MemTotal - usage; MemAvailable = MemFree + active_file + inactive_file
+ slab_reclaimable (LXCFS's formula), at most MemTotal; without a limit below the
host's, both at most the host's own (a cgroup cannot have more free memory than
the machine).  Cache and LRU lines come from memory.stat (kernel-memory lines too,
on v2); swap from the swap limit and usage.  CommitLimit is the kernel's formula
over the container's memory and swap; Committed_AS the memory the container has
committed and uses (anon + shmem + swap), at most the host's.  Lines with no
cgroup counterpart (Vmalloc*, HugePages_*, DirectMap*, ...) are the host's.
"""

from __future__ import annotations

from cgroupfs.cgroups.model import MemoryStats
from cgroupfs.host.meminfo import HostMeminfo

KIB = 1024


def container_values_kb(host: HostMeminfo, memory: MemoryStats) -> dict[str, int]:
    """The meminfo keys this cgroup determines, in kB."""
    host_total_bytes = host.kb("MemTotal") * KIB
    limit_bytes = memory.limit_bytes
    limited = limit_bytes is not None and limit_bytes < host_total_bytes
    total = limit_bytes if limit_bytes is not None and limited else host_total_bytes
    free = max(0, total - memory.usage_bytes)
    available = min(
        total,
        free + memory.active_file_bytes + memory.inactive_file_bytes + memory.slab_reclaimable_bytes,
    )
    if not limited:
        # Host total - usage ignores everyone else on the machine.
        free = min(free, host.kb("MemFree") * KIB)
        available = min(available, host.kb("MemAvailable", host.kb("MemFree")) * KIB)
    values: dict[str, int] = {
        "MemTotal": total,
        "MemFree": free,
        "MemAvailable": available,
        "Buffers": 0,
        "Cached": memory.file_bytes,
        "SwapCached": memory.swap_cached_bytes,
        "Active": memory.active_anon_bytes + memory.active_file_bytes,
        "Inactive": memory.inactive_anon_bytes + memory.inactive_file_bytes,
        "Active(anon)": memory.active_anon_bytes,
        "Inactive(anon)": memory.inactive_anon_bytes,
        "Active(file)": memory.active_file_bytes,
        "Inactive(file)": memory.inactive_file_bytes,
        "Unevictable": memory.unevictable_bytes,
        "Dirty": memory.dirty_bytes,
        "Writeback": memory.writeback_bytes,
        "AnonPages": memory.anon_bytes,
        "Mapped": memory.mapped_bytes,
        "Shmem": memory.shmem_bytes,
        "Slab": memory.slab_reclaimable_bytes + memory.slab_unreclaimable_bytes,
        "SReclaimable": memory.slab_reclaimable_bytes,
        "SUnreclaim": memory.slab_unreclaimable_bytes,
        "AnonHugePages": memory.anon_thp_bytes,
        "ShmemHugePages": memory.shmem_thp_bytes,
        "FileHugePages": memory.file_thp_bytes,
        "KReclaimable": memory.slab_reclaimable_bytes,
        "KernelStack": memory.kernel_stack_bytes,
        "PageTables": memory.pagetables_bytes,
        "SecPageTables": memory.sec_pagetables_bytes,
        "Percpu": memory.percpu_bytes,
        "Zswap": memory.zswap_bytes,
        "Zswapped": memory.zswapped_bytes,
        # Mlocked pages sit on the unevictable LRU; the cgroup has no mlock counter.
        "Mlocked": min(host.kb("Mlocked") * KIB, memory.unevictable_bytes),
    }
    if memory.swap_usage_bytes is not None:
        host_swap_bytes = host.kb("SwapTotal") * KIB
        swap_limit_bytes = memory.swap_limit_bytes
        swap_total = host_swap_bytes if swap_limit_bytes is None else min(swap_limit_bytes, host_swap_bytes)
        values["SwapTotal"] = swap_total
        values["SwapFree"] = max(0, swap_total - memory.swap_usage_bytes)
    values["CommitLimit"] = commit_limit_bytes(host, total, values.get("SwapTotal", host.kb("SwapTotal") * KIB))
    committed = memory.anon_bytes + memory.shmem_bytes + (memory.swap_usage_bytes or 0)
    values["Committed_AS"] = min(committed, host.kb("Committed_AS") * KIB)
    return {key: value // KIB for key, value in values.items()}


def commit_limit_bytes(host: HostMeminfo, total_bytes: int, swap_total_bytes: int) -> int:
    """The kernel's CommitLimit, (RAM - hugetlb) x overcommit_ratio + swap, with the
    container's memory and swap: the host's RAM part scaled by MemTotal's share."""
    host_total_kb = host.kb("MemTotal")
    host_ram_part_kb = max(0, host.kb("CommitLimit") - host.kb("SwapTotal"))
    ram_part = host_ram_part_kb * total_bytes // host_total_kb if host_total_kb else 0
    return ram_part + swap_total_bytes


def render(host: HostMeminfo, memory: MemoryStats) -> bytes:
    values = container_values_kb(host, memory)
    out = []
    for line in host.lines:
        value = values.get(line.key, line.value)
        # The kernel's layout: the label padded to 16 columns, the number to 8.
        if line.has_kb:
            out.append(f"{line.key + ':':<16}{value:>8} kB\n")
        else:
            out.append(f"{line.key + ':':<16}{value:>8}\n")
    return "".join(out).encode()
