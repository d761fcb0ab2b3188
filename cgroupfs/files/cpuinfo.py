"""proc/cpuinfo: the host's blocks for the visible cpus only, renumbered 0..k-1.

Only the `processor` line changes (as in LXCFS); topology lines (physical id,
siblings, core id, cpu cores, apicid) stay the host's.
"""

from __future__ import annotations

from cgroupfs.host.cpuinfo import HostCpuinfo


def render(host: HostCpuinfo, visible: tuple[int, ...]) -> bytes:
    by_number = {block.number: block for block in host.processors}
    blocks = []
    if host.preamble:
        blocks.append("\n".join(host.preamble))
    for new_number, host_number in enumerate(c for c in visible if c in by_number):
        lines = []
        for line in by_number[host_number].lines:
            key, colon, _ = line.partition(":")
            if colon and key.strip() == "processor":
                line = f"{key}: {new_number}"
            lines.append(line)
        blocks.append("\n".join(lines))
    if host.trailer:
        blocks.append("\n".join(host.trailer))
    return ("\n\n".join(blocks) + "\n\n").encode()
