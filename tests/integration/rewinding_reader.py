"""A reader that keeps a meminfo file open and rewinds it, as procps does (run as a script).

`python rewinding_reader.py PATH SECONDS`: opens PATH once, reads MemFree with pread
at 0, allocates and touches 16 MiB, then reads again on the same descriptor (pread at
0, and lseek + read in 64-byte pieces, top's and vmstat's way) until MemFree fell by
12 MiB or SECONDS passed.  Every pass read in pieces must be one well-formed text.
With a third argument `wait`, it first waits for a line on stdin (for a view, which
exists only once its container's process does).
Prints `before after passes`: the MemFree of the first and last pass, in kB.
"""

from __future__ import annotations

import os
import re
import sys
import time

LINE = re.compile(rb"^[A-Za-z0-9_()]+:\s+\d+( kB)?$")


def memfree_kb(text: bytes) -> int:
    return int(re.search(rb"^MemFree:\s+(\d+) kB$", text, re.M).group(1))


def read_in_pieces(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    pieces = []
    while piece := os.read(fd, 64):
        pieces.append(piece)
    text = b"".join(pieces)
    bad = [line for line in text.splitlines() if not LINE.match(line)]
    assert not bad, f"a pass read in pieces is not one text: {bad[:3]}"
    return text


def main(path: str, seconds: float) -> None:
    fd = os.open(path, os.O_RDONLY)
    before = memfree_kb(os.pread(fd, 65536, 0))
    block = bytearray(16 << 20)
    block[::4096] = b"x" * 4096  # touch every page: charged to the cgroup
    deadline = time.monotonic() + seconds
    passes = 0
    after = before
    while before - after < 12 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = memfree_kb(os.pread(fd, 65536, 0))
        passes += 1
        memfree_kb(read_in_pieces(fd))
    print(before, after, passes)
    del block


if __name__ == "__main__":
    if sys.argv[3:] == ["wait"]:
        sys.stdin.readline()
    main(sys.argv[1], float(sys.argv[2]))
