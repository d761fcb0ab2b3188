"""proc/uptime: seconds since the container's init started, and idle seconds.

uptime = now (CLOCK_BOOTTIME) - start time of pid 1 of the reader's pid namespace;
idle = uptime x the cpus' worth the container may use (quota / period, at most the
visible cpus: files/capacity.py) - cpu seconds the cgroup used (never below 0), so
idle stops growing while the container runs flat out at its quota.
"""

from __future__ import annotations


def container_uptime(now_boottime_s: float, init_start_ticks: int, ticks_per_second: int = 100) -> float:
    return max(0.0, now_boottime_s - init_start_ticks / ticks_per_second)


def render(uptime_s: float, cpu_capacity: float, cpu_usage_usec: int) -> bytes:
    idle = max(0.0, uptime_s * cpu_capacity - cpu_usage_usec / 1_000_000)
    return f"{uptime_s:.2f} {idle:.2f}\n".encode()
