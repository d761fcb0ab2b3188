"""Which host cpus a container is shown: cpuinfo, stat, online and uptime agree on it."""

from __future__ import annotations

import math

from cgroupfs.cgroups.model import CpuStats, CpusetInfo


def visible_cpus(
    online: tuple[int, ...],
    cpuset: CpusetInfo | None,
    cpu: CpuStats | None,
    cap_by_quota: bool = True,
) -> tuple[int, ...]:
    """Host cpu numbers shown to the container, in order; they are renumbered 0..k-1.

    The effective cpuset (all online cpus without one), optionally cut to the first
    ceil(quota / period) cpus — what LXCFS does with --enable-cfs; on by default here
    because a container limited to half a cpu has one cpu's worth to use.
    """
    cpus = tuple(c for c in (cpuset.cpus if cpuset else online) if c in online) or online
    if cap_by_quota and cpu is not None and cpu.quota_usec is not None and cpu.period_usec > 0:
        allowed = max(1, math.ceil(cpu.quota_usec / cpu.period_usec))
        cpus = cpus[:allowed]
    return cpus
