"""proc/uptime: seconds since the container's init started, and idle seconds.

uptime = now (CLOCK_BOOTTIME) - start time of pid 1 of the reader's pid namespace;
idle = uptime x visible cpus - cpu seconds the cgroup used (never below 0).
"""

from __future__ import annotations


def container_uptime(now_boottime_s: float, init_start_ticks: int, ticks_per_second: int = 100) -> float:
    return max(0.0, now_boottime_s - init_start_ticks / ticks_per_second)


def render(uptime_s: float, visible_cpu_count: int, cpu_usage_usec: int) -> bytes:
    idle = max(0.0, uptime_s * max(1, visible_cpu_count) - cpu_usage_usec / 1_000_000)
    return f"{uptime_s:.2f} {idle:.2f}\n".encode()
