"""/proc/diskstats: `major minor name` and 14, 18 or 20 counters per device."""

from __future__ import annotations

from dataclasses import dataclass

from cgroupfs.errors import ParseError


@dataclass(frozen=True)
class DiskLine:
    major: int
    minor: int
    name: str
    counters: tuple[int, ...]


@dataclass(frozen=True)
class HostDiskstats:
    devices: tuple[DiskLine, ...]


def parse_diskstats(text: str) -> HostDiskstats:
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 7:
            raise ParseError(f"diskstats: malformed line {line[:80]!r}")
        try:
            major, minor = int(parts[0]), int(parts[1])
            counters = tuple(int(p) for p in parts[3:])
        except ValueError:
            raise ParseError(f"diskstats: malformed line {line[:80]!r}") from None
        devices.append(DiskLine(major=major, minor=minor, name=parts[2], counters=counters))
    return HostDiskstats(devices=tuple(devices))
