"""Which host cpus a container is shown: one set, by the kernel's own cpu ids.

Every file that names cpus uses this set and these ids: sys/devices/system/cpu/
{online,possible,present} and its cpuN directories, /proc/stat's cpuN lines,
/proc/cpuinfo's processor lines, and uptime's idle.  They are never renumbered, so
they agree with what the kernel itself reports to the container: sched_getaffinity,
Cpus_allowed_list, `ps -o psr`, and `taskset -c $(cat .../online)`.
"""

from __future__ import annotations

import math

from cgroupfs.cgroups.model import CpuStats, CpusetInfo


def visible_cpus(
    online: tuple[int, ...],
    cpuset: CpusetInfo | None,
    cpu: CpuStats | None,
    cap_by_quota: bool = True,
) -> tuple[int, ...]:
    """Host cpu ids shown to the container, ascending.

    The effective cpuset's online cpus (every online cpu without a cpuset), and, when
    a CPU quota allows fewer cpus than that, only the ceil(quota / period) *lowest*
    ids of it: a container limited to half a cpu has one cpu's worth to use (LXCFS's
    --enable-cfs, on by default here).  The lowest ids, because the count is what
    tools size themselves by, and any cpu of the cpuset is one the container may run
    on: `taskset` to the shown ones succeeds.
    """
    cpus = tuple(c for c in (cpuset.cpus if cpuset else online) if c in online) or online
    if cap_by_quota and cpu is not None and cpu.quota_usec is not None and cpu.period_usec > 0:
        allowed = max(1, math.ceil(cpu.quota_usec / cpu.period_usec))
        cpus = cpus[:allowed]
    return cpus
