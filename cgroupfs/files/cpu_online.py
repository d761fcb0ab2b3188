"""sys/devices/system/cpu/{online,possible,present}: the visible cpus' kernel ids.

In the kernel's list format ("1", "0-1", "0-2,5"), like the kernel's own files.
glibc's _NPROCESSORS_ONLN reads `online`; `possible` and `present` say the same,
so lscpu, hwloc and libuv see no cpu that is not also a cpuN directory here.
"""

from __future__ import annotations

from cgroupfs.cgroups.files import format_cpu_list


def render(visible: tuple[int, ...]) -> bytes:
    return (format_cpu_list(visible) + "\n").encode()
