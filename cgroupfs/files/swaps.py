"""proc/swaps: the header, plus one virtual line when the container may swap.

Size = min(swap limit, host swap total), Used = the cgroup's swap usage, both kB.
"""

from __future__ import annotations

HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def render(swap_limit_bytes: int | None, swap_usage_bytes: int | None, host_swap_total_kb: int) -> bytes:
    host_bytes = host_swap_total_kb * 1024
    size = host_bytes if swap_limit_bytes is None else min(swap_limit_bytes, host_bytes)
    if size <= 0 or swap_usage_bytes is None:
        return HEADER.encode()
    used = min(swap_usage_bytes, size)
    return (HEADER + f"none\t\t\t\t\tvirtual\t\t{size // 1024}\t\t{used // 1024}\t\t0\n").encode()
