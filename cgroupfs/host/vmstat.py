"""/proc/vmstat: `name value` lines, in the kernel's order."""

from __future__ import annotations

from dataclasses import dataclass

from cgroupfs.errors import ParseError


@dataclass(frozen=True)
class HostVmstat:
    lines: tuple[tuple[str, int], ...]

    def value(self, name: str, default: int = 0) -> int:
        for key, value in self.lines:
            if key == name:
                return value
        return default


def parse_vmstat(text: str) -> HostVmstat:
    lines = []
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        # Counters are unsigned, but a few per-cpu-summed gauges can read negative.
        digits = parts[1].removeprefix("-") if len(parts) == 2 else ""
        if not (digits.isascii() and digits.isdigit()):
            raise ParseError(f"vmstat: malformed line {raw[:80]!r}")
        lines.append((parts[0], int(parts[1])))
    if not lines:
        raise ParseError("vmstat: empty")
    return HostVmstat(lines=tuple(lines))
