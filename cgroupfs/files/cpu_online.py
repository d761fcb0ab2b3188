"""sys/devices/system/cpu/online: "0-(k-1)" for k visible cpus (glibc's nprocs reads it)."""

from __future__ import annotations


def render(visible: tuple[int, ...]) -> bytes:
    count = max(1, len(visible))
    return b"0\n" if count == 1 else f"0-{count - 1}\n".encode()
