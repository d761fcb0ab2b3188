"""proc/cpuinfo: the host's blocks for the visible cpus only, with their own ids.

The blocks are the host's, unchanged, processor lines included (the kernel's cpu
ids, see visible_cpus.py); topology lines (physical id, siblings, core id, cpu
cores, apicid) stay the host's too.  LXCFS renumbers the processor lines from 0,
which disagrees with sched_getaffinity and the cpuN directories.
"""

from __future__ import annotations

from cgroupfs.host.cpuinfo import HostCpuinfo


def render(host: HostCpuinfo, visible: tuple[int, ...]) -> bytes:
    by_number = {block.number: block for block in host.processors}
    blocks = []
    if host.preamble:
        blocks.append("\n".join(host.preamble))
    blocks += ["\n".join(by_number[number].lines) for number in visible if number in by_number]
    if host.trailer:
        blocks.append("\n".join(host.trailer))
    return ("\n\n".join(blocks) + "\n\n").encode()
