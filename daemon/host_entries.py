"""The host's entries under our cpu directory: node ids, attributes and content.

Our sys/devices/system/cpu (cgroupfs/table.py HOST_DIRECTORY) shows the host's
/sys/devices/system/cpu, read-only, minus what files/cpu_directory.py hides.  Every
host path below it gets a node id of its own: HOST_NODE_BIT (the path table's nodes
never have it) | a hash of the path in the low LOCAL_BITS bits (views put their
number in the bits between).  A hash, not a counter, so that a successor that took
the connection over (daemon/handoff.py) gives every path the id the kernel already
holds: an id it has not seen yet makes it learn the whole host tree once.  The host
tree is finite (a few hundred entries per cpu), and the number of ids is bounded.

All I/O is relative to the directory descriptor the HostReader opened at start
(openat): a mount made later over /sys/devices/system/cpu in the daemon's namespace
can never route the daemon through its own files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_session import FuseError

HOST_NODE_BIT = 1 << 62
LOCAL_BITS = 36
_LOCAL_MASK = (1 << LOCAL_BITS) - 1
MAX_NODES = 1 << 22
_READ_LIMIT = 1 << 20  # sysfs attributes are at most a page; bin attributes are not passed through

_KINDS = {stat.S_IFDIR: fp.DT_DIR, stat.S_IFREG: fp.DT_REG, stat.S_IFLNK: fp.DT_LNK}


def with_view(node: int, number: int) -> int:
    """A host entry's node id inside view `number` (views.py)."""
    return node | number << LOCAL_BITS


def split_view(node: int) -> tuple[int, int]:
    """(view number, the host entry's node id) of a node made by with_view()."""
    number = (node & ~HOST_NODE_BIT) >> LOCAL_BITS
    return number, node & ~(number << LOCAL_BITS)


class HostEntries:
    def __init__(self, directory_fd: int):
        self.directory_fd = directory_fd
        self._node_of: dict[str, int] = {}
        self._path_of: dict[int, str] = {}
        self._learned_all = False

    @staticmethod
    def owns(node: int) -> bool:
        return bool(node & HOST_NODE_BIT)

    def node(self, relative: str) -> int:
        """The node id of a host path (the connection's one loop thread asks)."""
        node = self._node_of.get(relative)
        if node is None:
            if len(self._node_of) >= MAX_NODES:
                raise FuseError(errno.ENOMEM)
            digest = int.from_bytes(hashlib.blake2b(os.fsencode(relative), digest_size=8).digest(), "big")
            local = digest & _LOCAL_MASK or 1
            while HOST_NODE_BIT | local in self._path_of:  # a collision (rare): the next free id
                local = local % _LOCAL_MASK + 1
            node = HOST_NODE_BIT | local
            self._node_of[relative] = node
            self._path_of[node] = relative
        return node

    def path(self, node: int) -> str:
        relative = self._path_of.get(node)
        if relative is None and not self._learned_all:
            self._learn_all()  # an id a predecessor gave out
            relative = self._path_of.get(node)
        if relative is None:
            raise FuseError(errno.ENOENT)
        return relative

    def _learn_all(self) -> None:
        """Give every host path its id (the same as a predecessor's, but where two paths'
        hashes collided: rare, and then possibly the other way round)."""
        self._learned_all = True
        pending = [""]
        found: list[str] = []
        while pending and len(found) < MAX_NODES:
            directory = pending.pop()
            for name, kind in self.children(directory):
                relative = f"{directory}/{name}" if directory else name
                found.append(relative)
                if kind == fp.DT_DIR:
                    pending.append(relative)
        for relative in sorted(found):
            self.node(relative)

    def lstat(self, relative: str) -> os.stat_result:
        try:
            return os.stat(relative, dir_fd=self.directory_fd, follow_symlinks=False)
        except OSError as exc:
            raise FuseError(exc.errno or errno.ENOENT) from None

    def is_directory(self, relative: str) -> bool:
        return stat.S_ISDIR(self.lstat(relative).st_mode)

    def attributes(self, node: int, relative: str) -> fp.Attributes:
        """The host entry's type and permissions, read-only; a regular file's size is the
        length of its text now (sysfs says 4096 for every file, too much for the tools
        that trust st_size), a symlink's the length of its target."""
        info = self.lstat(relative)
        kind = stat.S_IFMT(info.st_mode)
        size = 0
        if kind == stat.S_IFREG and info.st_mode & 0o444:
            try:
                size = len(self.read(relative))
            except FuseError:
                size = 0
        elif kind == stat.S_IFLNK:
            size = len(self.readlink(relative))
        mode = kind | (info.st_mode & 0o555)
        # nlink 1 for directories: "unknown", so that find(1) never skips subdirectories.
        return fp.Attributes(node, mode, size=size, nlink=1, mtime_ns=info.st_mtime_ns)

    def world_readable(self, relative: str) -> bool:
        return bool(self.lstat(relative).st_mode & stat.S_IROTH)

    def children(self, relative: str) -> list[tuple[str, int]]:
        """(name, DT_*) of the host directory `relative` ("" for the cpu directory)."""
        try:
            fd = os.open(relative or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.directory_fd)
        except OSError as exc:
            raise FuseError(exc.errno or errno.ENOENT) from None
        try:
            with os.scandir(fd) as entries:
                found: list[tuple[str, int]] = []
                for entry in entries:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    found.append((entry.name, _KINDS.get(stat.S_IFMT(mode), fp.DT_REG)))
        finally:
            os.close(fd)
        return sorted(found)

    def read(self, relative: str) -> bytes:
        try:
            fd = os.open(relative, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.directory_fd)
        except OSError as exc:
            raise FuseError(exc.errno or errno.EIO) from None
        try:
            return os.read(fd, _READ_LIMIT)  # sysfs hands out a whole attribute in one read
        except OSError as exc:
            raise FuseError(exc.errno or errno.EIO) from None
        finally:
            os.close(fd)

    def readlink(self, relative: str) -> bytes:
        """The host's link target, unchanged: relative (../../node/node0), so it resolves
        in the container's own /sys as it does on the host."""
        try:
            return os.fsencode(os.readlink(relative, dir_fd=self.directory_fd))
        except OSError as exc:
            raise FuseError(exc.errno or errno.EINVAL) from None
