"""How many cpus' worth of time a container may use: the CPU quota, within the visible cpus."""

from __future__ import annotations

from cgroupfs.cgroups.model import CpuStats


def cpu_capacity(cpu: CpuStats | None, visible_count: int) -> float:
    """quota / period, at most the visible cpus' count (all of them without a quota).

    A container using this much is running flat out: stat's and uptime's idle are
    measured against it (LXCFS's cpu view does the same), so `--cpus 0.5` at its
    quota reads 100% busy rather than 50% of its one visible cpu."""
    count = max(1, visible_count)
    if cpu is None or cpu.quota_usec is None or cpu.period_usec <= 0:
        return float(count)
    return min(float(count), cpu.quota_usec / cpu.period_usec)
