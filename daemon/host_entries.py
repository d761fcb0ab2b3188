"""The host's entries under our cpu directory: node ids, attributes and content.

Our sys/devices/system/cpu (cgroupfs/table.py HOST_DIRECTORY) shows the host's
/sys/devices/system/cpu, read-only, minus what files/cpu_directory.py hides.  Every
host path below it gets a node id of its own, from FIRST_NODE on (the path table's
nodes are below), the same id for the life of the daemon.  The host tree is
finite (a few hundred entries per cpu), and the number of ids is bounded anyway.

All I/O is relative to the directory descriptor the HostReader opened at start
(openat): a mount made later over /sys/devices/system/cpu in the daemon's namespace
can never route the daemon through its own files.
"""

from __future__ import annotations

import errno
import os
import stat

from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_session import FuseError

FIRST_NODE = 1 << 10
MAX_NODES = (1 << 24) - FIRST_NODE  # below views.NODE_STRIDE
_READ_LIMIT = 1 << 20  # sysfs attributes are at most a page; bin attributes are not passed through

_KINDS = {stat.S_IFDIR: fp.DT_DIR, stat.S_IFREG: fp.DT_REG, stat.S_IFLNK: fp.DT_LNK}


class HostEntries:
    def __init__(self, directory_fd: int):
        self.directory_fd = directory_fd
        self._node_of: dict[str, int] = {}
        self._path_of: dict[int, str] = {}

    @staticmethod
    def owns(node: int) -> bool:
        return FIRST_NODE <= node < FIRST_NODE + MAX_NODES

    def node(self, relative: str) -> int:
        """The node id of a host path (the connection's one loop thread asks)."""
        node = self._node_of.get(relative)
        if node is None:
            if len(self._node_of) >= MAX_NODES:
                raise FuseError(errno.ENOMEM)
            node = FIRST_NODE + len(self._node_of)
            self._node_of[relative] = node
            self._path_of[node] = relative
        return node

    def path(self, node: int) -> str:
        try:
            return self._path_of[node]
        except KeyError:
            raise FuseError(errno.ENOENT) from None

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
                found = []
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
