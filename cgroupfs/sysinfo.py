"""sysinfo(2) for a container: the struct the kernel would return, from the container's files.

No file can correct sysinfo(2): busybox `free` and `uptime`, glibc's
sysconf(_SC_PHYS_PAGES/_SC_AVPHYS_PAGES) and everything sized from them ask the
kernel directly.  The daemon answers the call instead (daemon/sysinfo_responder.py),
and what it answers is derived from the texts the same reader would read in
/proc, so `free` and `cat /proc/meminfo` can never disagree:

    totalram, freeram, sharedram, bufferram   MemTotal, MemFree, Shmem, Buffers
    totalswap, freeswap                       SwapTotal, SwapFree (= its /proc/swaps)
    uptime                                    /proc/uptime's first field, rounded up
                                              as the kernel rounds a timespec
    loads[3]                                  /proc/loadavg's averages, fixed point
                                              with SI_LOAD_SHIFT 16
    procs                                     /proc/loadavg's total (the cgroup's
                                              threads; the kernel counts all threads)
    totalhigh, freehigh                       0 (no high memory on 64-bit)
    mem_unit                                  1: every amount in bytes, as a 64-bit
                                              kernel gives them
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields

from cgroupfs.errors import ParseError

SI_LOAD_SHIFT = 16
# struct sysinfo on every 64-bit (LP64) Linux ABI, in the machine's byte order:
# long uptime; unsigned long loads[3]; unsigned long totalram, freeram, sharedram,
# bufferram, totalswap, freeswap; unsigned short procs, pad; (4 bytes alignment)
# unsigned long totalhigh, freehigh; unsigned int mem_unit; char _f[0]; (4 bytes
# tail padding): 112 bytes, what the kernel copies out.
LAYOUT = struct.Struct("=q3Q6QHH4x2QI4x")
PROCS_MAX = 0xFFFF  # an unsigned short: the kernel truncates, we saturate
# The files a reader's struct is made of, as the content server names them.
SOURCES = ("proc/meminfo", "proc/uptime", "proc/loadavg")


@dataclass(frozen=True)
class Sysinfo:
    uptime: int
    loads: tuple[int, int, int]
    totalram: int
    freeram: int
    sharedram: int
    bufferram: int
    totalswap: int
    freeswap: int
    procs: int
    totalhigh: int = 0
    freehigh: int = 0
    mem_unit: int = 1

    def pack(self) -> bytes:
        return LAYOUT.pack(self.uptime, *self.loads, self.totalram, self.freeram, self.sharedram, self.bufferram,
                           self.totalswap, self.freeswap, min(self.procs, PROCS_MAX), 0, self.totalhigh,
                           self.freehigh, self.mem_unit)

    @classmethod
    def unpack(cls, data: bytes) -> Sysinfo:
        values = LAYOUT.unpack(data[:LAYOUT.size])
        return cls(uptime=values[0], loads=(values[1], values[2], values[3]), totalram=values[4],
                   freeram=values[5], sharedram=values[6], bufferram=values[7], totalswap=values[8],
                   freeswap=values[9], procs=values[10], totalhigh=values[12], freehigh=values[13],
                   mem_unit=values[14])

    def text(self) -> str:
        """One `field value` line per member, as `cgroupfs show sysinfo` prints them."""
        lines = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "loads":
                shown = " ".join(f"{load} ({load / (1 << SI_LOAD_SHIFT):.2f})" for load in value)
                lines.append(f"loads {shown}\n")
            else:
                lines.append(f"{field.name} {value}\n")
        return "".join(lines)


def _meminfo_kb(meminfo: bytes) -> dict[str, int]:
    values = {}
    for line in meminfo.decode("ascii", "replace").splitlines():
        key, _, rest = line.partition(":")
        number = rest.split()
        if number and number[0].isdigit():
            values[key.strip()] = int(number[0])
    return values


def from_files(meminfo: bytes, uptime: bytes, loadavg: bytes) -> Sysinfo:
    """The struct for a reader of these /proc texts.  Raises ParseError on a malformed text."""
    memory = _meminfo_kb(meminfo)
    missing = [key for key in ("MemTotal", "MemFree") if key not in memory]
    if missing:
        raise ParseError(f"meminfo has no {', '.join(missing)}")
    try:
        seconds = float(uptime.split()[0])
        averages = loadavg.split()
        loads = tuple(round(float(average) * (1 << SI_LOAD_SHIFT)) for average in averages[:3])
        total = int(averages[3].split(b"/")[1])
    except (IndexError, ValueError) as exc:
        raise ParseError(f"uptime {uptime!r} or loadavg {loadavg!r} is malformed: {exc}") from None
    if len(loads) != 3 or not math.isfinite(seconds) or seconds < 0:
        raise ParseError(f"uptime {uptime!r} or loadavg {loadavg!r} is malformed")
    return Sysinfo(
        uptime=math.ceil(seconds),
        loads=(loads[0], loads[1], loads[2]),
        totalram=memory["MemTotal"] * 1024,
        freeram=memory["MemFree"] * 1024,
        sharedram=memory.get("Shmem", 0) * 1024,
        bufferram=memory.get("Buffers", 0) * 1024,
        totalswap=memory.get("SwapTotal", 0) * 1024,
        freeswap=memory.get("SwapFree", 0) * 1024,
        procs=total,
    )


def for_reader(content: Callable[[str, int], bytes], pid: int) -> Sysinfo:
    """What process `pid` gets from sysinfo(2), `content(path, pid)` being what it reads at
    `path` (ContentServer.content)."""
    meminfo, uptime, loadavg = (content(path, pid) for path in SOURCES)
    return from_files(meminfo, uptime, loadavg)
