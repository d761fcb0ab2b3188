"""/proc/stat: `cpu`/`cpuN` tick lines, then intr, ctxt, btime, processes, procs_*."""

from __future__ import annotations

from dataclasses import dataclass

from cgroupfs.errors import ParseError

# Column order of the cpu lines (proc(5)); guest and guest_nice are already
# included in user and nice, so they are not part of a cpu's total.
CPU_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
TOTAL_COLUMNS = 8


@dataclass(frozen=True)
class CpuTicks:
    values: tuple[int, ...]  # in CPU_COLUMNS order; older kernels print fewer

    @property
    def total(self) -> int:
        return sum(self.values[:TOTAL_COLUMNS])


@dataclass(frozen=True)
class HostStat:
    total: CpuTicks
    per_cpu: dict[int, CpuTicks]
    other_lines: tuple[str, ...]  # everything after the cpu lines, verbatim

    def value(self, key: str) -> int | None:
        for line in self.other_lines:
            parts = line.split()
            if parts and parts[0] == key and len(parts) > 1:
                return int(parts[1])
        return None


def _ticks(parts: list[str], line: str) -> CpuTicks:
    try:
        return CpuTicks(values=tuple(int(p) for p in parts))
    except ValueError:
        raise ParseError(f"stat: malformed cpu line {line[:80]!r}") from None


def parse_stat(text: str) -> HostStat:
    total = None
    per_cpu: dict[int, CpuTicks] = {}
    other: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        name = parts[0]
        if name == "cpu":
            total = _ticks(parts[1:], line)
        elif name.startswith("cpu") and name[3:].isascii() and name[3:].isdigit():
            per_cpu[int(name[3:])] = _ticks(parts[1:], line)
        else:
            other.append(line)
    if total is None:
        raise ParseError("stat: no cpu line")
    return HostStat(total=total, per_cpu=per_cpu, other_lines=tuple(other))
