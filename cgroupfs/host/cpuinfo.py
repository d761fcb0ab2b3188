"""/proc/cpuinfo: one block of `key\t: value` lines per processor, blank-line separated."""

from __future__ import annotations

from dataclasses import dataclass

from cgroupfs.errors import ParseError


@dataclass(frozen=True)
class ProcessorBlock:
    number: int        # the host's processor number
    lines: tuple[str, ...]


@dataclass(frozen=True)
class HostCpuinfo:
    processors: tuple[ProcessorBlock, ...]
    # Text outside processor blocks (some architectures print a header or a footer).
    preamble: tuple[str, ...] = ()
    trailer: tuple[str, ...] = ()


def parse_cpuinfo(text: str) -> HostCpuinfo:
    processors: list[ProcessorBlock] = []
    preamble: list[str] = []
    trailer: list[str] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line != ""]
        if not lines:
            continue
        number = None
        for line in lines:
            key, colon, value = line.partition(":")
            if colon and key.strip() == "processor":
                try:
                    number = int(value.strip())
                except ValueError:
                    raise ParseError(f"cpuinfo: bad processor line {line[:80]!r}") from None
                break
        if number is None:
            (trailer if processors else preamble).extend(lines)
        else:
            processors.append(ProcessorBlock(number=number, lines=tuple(lines)))
    if not processors:
        raise ParseError("cpuinfo: no processor blocks")
    return HostCpuinfo(processors=tuple(processors), preamble=tuple(preamble), trailer=tuple(trailer))
