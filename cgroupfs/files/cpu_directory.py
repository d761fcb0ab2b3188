"""sys/devices/system/cpu as a container sees it: which of the host's entries it shows.

The directory is the host's, passed through read-only, with two changes: `online`,
`possible` and `present` are ours (cpu_online.py), and of the `cpuN` directories
only the visible cpus' are there (visible_cpus.py).  glibc counts those directories
for _NPROCESSORS_CONF (and reads `online` for _NPROCESSORS_ONLN); lscpu, hwloc,
libuv and psutil walk them: they all agree with /proc/cpuinfo and /proc/stat.
Everything else (cpufreq, cpuidle, vulnerabilities, smt, kernel_max, ...) and the
contents of the cpuN directories are the host's, unchanged.
"""

from __future__ import annotations

import re

_CPU_ENTRY = re.compile(r"cpu([0-9]+)\Z")


def shows(name: str, visible: tuple[int, ...], rendered: tuple[str, ...]) -> bool:
    """Whether the host entry `name` of the cpu directory is passed through: not a file we
    render ourselves (`rendered`), and a cpuN directory only for a visible cpu."""
    if name in rendered:
        return False
    match = _CPU_ENTRY.match(name)
    return match is None or int(match.group(1)) in visible
