"""/proc/<pid>/mountinfo: the mounts a process's mount namespace shows, one per line.

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)  (4)   (5)     (6)       (7)   (8) (9)    (10)        (11)

(proc(5)).  Fields are separated by single spaces; the kernel escapes space, tab,
newline and backslash inside a field as \\ooo octal, so a field can be empty (a
mount made with an empty source) but never holds a space.  The one parser of this
file: cgroup hierarchy discovery, the daemon's mount checks, injection and the
benchmarks all read mounts through it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from cgroupfs.errors import ParseError


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    device: str                        # "major:minor" of the filesystem
    root: str                          # the directory of that filesystem mounted here
    mount_point: str
    mount_options: str                 # per mount: "rw,nosuid,relatime"
    optional_fields: tuple[str, ...]   # "shared:1", "master:3", "unbindable", ...
    fstype: str                        # "ext4", "cgroup2", "fuse.cgroupfs"
    source: str                        # "/dev/sda1", "cgroup", "none"
    super_options: str                 # per filesystem; a v1 cgroup lists its controllers here


def unescape(field: str) -> str:
    """A field as the kernel escaped it (\\040 for a space) -> the real text."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(digit in "01234567" for digit in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> MountEntry:
    fields = line.split(" ")
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise ParseError(f"mountinfo line without its ' - ' separator: {line[:200]!r}") from None
    if len(fields) != separator + 4:
        raise ParseError(f"mountinfo line with {len(fields) - separator - 1} fields after ' - ', not 3: "
                         f"{line[:200]!r}")
    mount_id, parent_id = fields[0], fields[1]
    if not (mount_id.isascii() and mount_id.isdigit() and parent_id.isascii() and parent_id.isdigit()):
        raise ParseError(f"mountinfo line with a non-numeric mount id: {line[:200]!r}")
    return MountEntry(
        mount_id=int(mount_id), parent_id=int(parent_id), device=fields[2],
        root=unescape(fields[3]), mount_point=unescape(fields[4]), mount_options=fields[5],
        optional_fields=tuple(fields[6:separator]), fstype=fields[separator + 1],
        source=unescape(fields[separator + 2]), super_options=fields[separator + 3])


def parse_mountinfo(text: str, mount_points: Collection[str] | None = None) -> list[MountEntry]:
    """Every mount in `text`, in the kernel's order (a mount comes after its parent).

    With `mount_points`, only the mounts at those paths (the other lines are not
    checked): a container's targets in a long table cost one split per line.
    Raises ParseError for a malformed line.
    """
    entries = []
    for line in text.split("\n"):  # not splitlines(): a path may hold \f or \u2028, never \n
        if not line:
            continue
        if mount_points is not None:
            point = line.split(" ", 5)[4:5]
            if not point or unescape(point[0]) not in mount_points:
                continue
        entries.append(parse_line(line))
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo", mount_points: Collection[str] | None = None
                   ) -> list[MountEntry]:
    """parse_mountinfo() of the file at `path` (OSError as open/read raise it)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read(), mount_points)


def top_mounts(entries: Iterable[MountEntry]) -> dict[str, MountEntry]:
    """The visible (top-most) mount at each mount point.

    A mount stacked on another at the same path has the lower one as its parent, so
    the top is the one that is no other same-path mount's parent.
    """
    by_point: dict[str, list[MountEntry]] = {}
    for entry in entries:
        by_point.setdefault(entry.mount_point, []).append(entry)
    tops = {}
    for point, stack in by_point.items():
        parents = {entry.parent_id for entry in stack}
        candidates = [entry for entry in stack if entry.mount_id not in parents]
        tops[point] = (candidates or stack)[-1]
    return tops


def holder_of(path: str, entries: Iterable[MountEntry]) -> MountEntry | None:
    """The visible mount that holds `path` (absolute, symlinks resolved): the longest
    mount point above it."""
    holder = None
    for entry in top_mounts(entries).values():
        point = entry.mount_point
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if holder is None or len(point) > len(holder.mount_point):
                holder = entry
    return holder
