"""/proc/meminfo: `Key:   value kB` lines, in the kernel's order."""

from __future__ import annotations

from dataclasses import dataclass

from cgroupfs.errors import ParseError


@dataclass(frozen=True)
class MeminfoLine:
    key: str
    value: int  # kB when has_kb, else a count (HugePages_Total)
    has_kb: bool


@dataclass(frozen=True)
class HostMeminfo:
    lines: tuple[MeminfoLine, ...]

    def kb(self, key: str, default: int = 0) -> int:
        for line in self.lines:
            if line.key == key:
                return line.value
        return default


def parse_meminfo(text: str) -> HostMeminfo:
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        key, colon, rest = raw.partition(":")
        parts = rest.split()
        if not colon or not parts or len(parts) > 2 or not (parts[0].isascii() and parts[0].isdigit()):
            raise ParseError(f"meminfo: malformed line {raw[:80]!r}")
        lines.append(MeminfoLine(key=key.strip(), value=int(parts[0]), has_kb=len(parts) == 2))
    if not lines:
        raise ParseError("meminfo: empty")
    return HostMeminfo(lines=tuple(lines))
