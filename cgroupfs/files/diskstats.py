"""proc/diskstats: the cgroup's I/O per device, named as the host names the device.

From blkio (v1) or io.stat (v2): reads/writes/discards completed and sectors
(bytes / 512).  The kernel has no per-cgroup merge, time or in-flight counters
(CFQ's io_service_time is gone), so those columns are 0.  Only devices the cgroup
has done I/O on are listed; the column count follows the host's (14, 18 or 20).
"""

from __future__ import annotations

from cgroupfs.cgroups.model import IoStats
from cgroupfs.host.diskstats import HostDiskstats

SECTOR_BYTES = 512

# 0-based positions among the counters after the device name (Documentation/admin-guide/iostats.rst)
READS, SECTORS_READ, WRITES, SECTORS_WRITTEN = 0, 2, 4, 6
DISCARDS, SECTORS_DISCARDED = 11, 13


def render(host: HostDiskstats, io: IoStats) -> bytes:
    by_device = {(d.major, d.minor): d for d in io.devices}
    out = []
    for line in host.devices:
        device = by_device.get((line.major, line.minor))
        if device is None:
            continue
        counters = [0] * len(line.counters)
        for position, value in (
            (READS, device.read_ios),
            (SECTORS_READ, device.read_bytes // SECTOR_BYTES),
            (WRITES, device.write_ios),
            (SECTORS_WRITTEN, device.write_bytes // SECTOR_BYTES),
            (DISCARDS, device.discard_ios),
            (SECTORS_DISCARDED, device.discard_bytes // SECTOR_BYTES),
        ):
            if position < len(counters):
                counters[position] = value
        out.append(f"{line.major:4d} {line.minor:7d} {line.name} " + " ".join(map(str, counters)) + "\n")
    return "".join(out).encode()
