"""/proc/uptime: seconds since boot and summed idle seconds of all cpus."""

from __future__ import annotations

from cgroupfs.errors import ParseError


def parse_uptime(text: str) -> tuple[float, float]:
    parts = text.split()
    try:
        return float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise ParseError(f"uptime: malformed {text[:40]!r}") from None
