"""Reading and parsing the text of cgroup control files, shared by v1.py and v2.py.

A missing file in an existing directory is "this kernel/controller does not have
it" (None); a missing directory is a vanished cgroup (CgroupGone).  Malformed text
raises ParseError.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref
from collections import OrderedDict

from cgroupfs.errors import CgroupGone, ParseError

# v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB
# pages); anything this large is unlimited.
UNLIMITED_THRESHOLD = 1 << 62


def read_text(directory: str, name: str) -> str | None:
    # os.open/os.read: a third less CPU than open() (no buffered file object); a
    # metrics scrape reads ~20 of these files per container.
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
    except FileNotFoundError:
        if os.path.isdir(directory):
            return None
        raise CgroupGone(directory) from None
    except (NotADirectoryError, ProcessLookupError):
        raise CgroupGone(directory) from None
    except OSError as exc:
        # ENODEV/EOPNOTSUPP/EINVAL: the kernel has the file but the feature is off.
        if not os.path.isdir(directory):
            raise CgroupGone(directory) from None
        if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError(f"{directory}/{name}: not ASCII") from None


class HeldFiles:
    """Small control files kept open and read again with pread(2) at offset 0.

    One system call a file instead of four (open, read, read to EOF, close): for the
    limit files compared before every cached text is reused, which made a cache hit
    cost more than rendering had saved.  A cgroup file regenerates its text on every
    read at offset 0 (seq_file), so nothing is stale.  When the cgroup is removed
    (perhaps made again under the same name: `docker restart`) pread fails with
    ENODEV; the descriptors are dropped and the files opened again.  Anything unusual
    falls back to read_text(), whose rules (None, CgroupGone, ParseError) then hold.
    The texts are returned as bytes: they are compared, never parsed.
    Bounded: the least recently read directory's descriptors are closed first, and
    any not read for IDLE_S (a removed cgroup is never read again).  One lock: the
    per-reader loop, the views thread and the metrics thread all read."""

    _SIZE = 4096  # every limit file is one short line
    IDLE_S = 10.0  # a cgroup read less often than this pays one open per read: negligible

    def __init__(self, capacity: int = 512):
        self.capacity = capacity  # directories
        self._fds: OrderedDict[tuple[str, tuple[str, ...]], list[int]] = OrderedDict()
        self._last_read: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._fds)

    def read(self, directory: str, names: tuple[str, ...]) -> list[bytes | None]:
        key = (directory, names)
        now = time.monotonic()
        with self._lock:
            self._close_idle(now)
            self._last_read[key] = now
            fds = self._fds.get(key)
            if fds is None:
                fds = self._open(key)
            if fds is not None:
                try:
                    texts = [os.pread(fd, self._SIZE, 0) for fd in fds]
                except OSError:
                    texts = []
                if texts and all(len(text) < self._SIZE for text in texts):
                    self._fds.move_to_end(key)
                    return list(texts)
                self._close(key)
        return [None if text is None else text.encode("ascii") for text in (read_text(directory, n) for n in names)]

    def _open(self, key: tuple[str, tuple[str, ...]]) -> list[int] | None:
        directory, names = key
        fds: list[int] = []
        try:
            for name in names:
                fds.append(os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            return None  # a missing file (no swap accounting) or a vanished cgroup: read_text() decides
        self._fds[key] = fds
        if len(self._fds) > self.capacity:
            self._close(next(iter(self._fds)))
        return fds

    def _close_idle(self, now: float) -> None:
        """Oldest first (the dict is in order of use): stop at the first recent one."""
        while self._fds:
            oldest = next(iter(self._fds))
            if now - self._last_read.get(oldest, now) < self.IDLE_S:
                return
            self._close(oldest)

    def _close(self, key: tuple[str, tuple[str, ...]]) -> None:
        for fd in self._fds.pop(key):
            os.close(fd)
        self._last_read.pop(key, None)

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        with self._lock:
            _close_all(self._fds)


def _close_all(fds: OrderedDict) -> None:
    while fds:
        for fd in fds.popitem()[1]:
            os.close(fd)


def parse_int(text: str, what: str = "value") -> int:
    """A kernel counter: ASCII digits, at most 20 (u64).  No sign, no `_`, which int()
    would accept: a negative usage once rendered MemFree above MemTotal."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise ParseError(f"{what}: not an integer: {text[:40]!r}")
    return int(digits)


def parse_limit(text: str, what: str = "limit") -> int | None:
    """A limit file: "max" (v2) or a huge number (v1) mean unlimited (None); -1 too."""
    text = text.strip()
    if text == "max" or text == "-1":
        return None
    value = parse_int(text, what)
    return None if value >= UNLIMITED_THRESHOLD else value


def required_text(directory: str, name: str) -> str:
    """read_text for a file every cgroup of this kind has: absent means malformed."""
    text = read_text(directory, name)
    if text is None:
        raise ParseError(f"{directory}/{name}: missing")
    return text


def min_limit(chain: list[str], name: str) -> int | None:
    """The tightest limit in file `name` over the chain (root..leaf); None if none is set.

    The kernel enforces every ancestor's limit, so the effective one is the minimum;
    a level without the file (the v2 root) or with "max" does not limit.
    """
    limits = []
    for directory in chain:
        text = read_text(directory, name)
        if text is not None:
            value = parse_limit(text, name)
            if value is not None:
                limits.append(value)
    return min(limits) if limits else None


DEFAULT_CFS_PERIOD_USEC = 100_000


def tightest_quota(levels) -> tuple[int | None, int]:
    """The (quota, period) allowing the fewest cpus among `levels` of (quota, period);
    (None, default period) when no level sets a quota.  Each ancestor's bandwidth is
    enforced, so the tightest ratio is the effective one."""
    best: tuple[int | None, int] = (None, DEFAULT_CFS_PERIOD_USEC)
    for quota, period in levels:
        if quota is None or period <= 0:
            continue
        if best[0] is None or quota / period < best[0] / best[1]:
            best = (quota, period)
    return best


def parse_flat_keyed(text: str, what: str = "keyed file") -> dict[str, int]:
    """`key value` per line (memory.stat, cpu.stat, memory.events)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ParseError(f"{what}: malformed line {line[:80]!r}")
        result[parts[0]] = parse_int(parts[1], f"{what} {parts[0]}")
    return result


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The kernel's cpu list format: "0-2,5,7-8" -> (0, 1, 2, 5, 7, 8)."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        start = parse_int(first, "cpu list")
        end = parse_int(last, "cpu list") if dash else start
        if start < 0 or end < start or end - start > 65536:
            raise ParseError(f"cpu list: bad range {part!r}")
        cpus.update(range(start, end + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...] | list[int]) -> str:
    """The inverse of parse_cpu_list: (0, 1, 2, 5) -> "0-2,5"."""
    ranges: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


def ancestry(mount_directory: str, leaf_directory: str) -> list[str]:
    """Directories from the mount root down to the leaf, inclusive."""
    chain = [leaf_directory]
    current = leaf_directory
    root = mount_directory.rstrip("/") or "/"
    while current.rstrip("/") != root and current not in ("/", ""):
        current = os.path.dirname(current)
        chain.append(current)
    chain.reverse()
    return chain


def tree_directories(directory: str) -> list[str]:
    """The cgroup and all its descendants (a vanished subtree is skipped)."""
    result = [directory]
    # kernfs counts subdirectories in a directory's link count (2 + subdirs): one
    # stat spares listing the ~30 control files of a cgroup without children.
    try:
        if os.stat(directory).st_nlink == 2:  # (btrfs says 1 for every directory: walk)
            return result
    except OSError:
        return result
    for dirpath, dirnames, _ in os.walk(directory):
        result.extend(os.path.join(dirpath, d) for d in dirnames)
    return result


def read_id_list(directory: str, name: str) -> list[int]:
    """cgroup.procs / tasks / cgroup.threads: one id per line."""
    text = read_text(directory, name)
    if text is None:
        return []
    return [parse_int(line, name) for line in text.split()]


PressureLine = tuple[tuple[float, float, float], int]  # (avg10, avg60, avg300), total usec


def parse_pressure_lines(text: str) -> dict[str, PressureLine]:
    """PSI file: `some avg10=.. avg60=.. avg300=.. total=N` and `full ...` -> kind -> line."""
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, *pairs = line.split()
        fields = dict(pair.partition("=")[::2] for pair in pairs)
        if "total" not in fields:
            continue
        avg10, avg60, avg300 = (_parse_percent(fields.get(key, "0"), f"pressure {key}")
                                for key in ("avg10", "avg60", "avg300"))
        lines[kind] = ((avg10, avg60, avg300), parse_int(fields["total"], "pressure total"))
    return lines


def _parse_percent(text: str, what: str) -> float:
    whole, dot, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (dot and not (fraction.isascii() and fraction.isdigit())):
        raise ParseError(f"{what}: not a percentage: {text[:40]!r}")
    return float(text)


def parse_pressure(text: str) -> tuple[int | None, int | None]:
    """The "some" and "full" totals of a PSI file (None for a missing line)."""
    lines = parse_pressure_lines(text)
    some, full = lines.get("some"), lines.get("full")
    return (some[1] if some else None), (full[1] if full else None)
