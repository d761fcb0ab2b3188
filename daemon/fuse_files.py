"""The per-reader files: a read-only tree whose text depends on who opens it.

Content is rendered at open for the opening process and kept with the file handle;
a read at offset 0 renders it again, for the reading process, and later offsets read
that same text: the kernel's seq_file behaviour (and LXCFS's).  So a reader that
keeps the file open and rewinds (procps top, vmstat, `free -s`: lseek + read, or
pread at 0) sees fresh numbers on every pass, and a pass read in pieces is one
text.  Files are direct_io: their size is not known in advance.

The page cache must never serve these files: one inode is shared by every
container, so a cached page would hand one container another's numbers.  direct_io
keeps read(2) off the page cache, but the kernel still splices (sendfile, used by
busybox `cat` and Python's shutil) and maps through it, bounded by st_size.  So:
- reads that come from the page cache (no lock owner) fail with EIO, and sendfile
  users fall back to read(2): busybox and shutil do;
- st_size is the true length rather than /proc's 0 (with 0, sendfile returns an
  empty file without asking us): fstat() of an open file gives the length of that
  open's content, stat() by path the length of what the caller would read now.
  Attributes are therefore never cached by the kernel (timeout 0), so programs
  that trust st_size (Node's readFileSync, GNU tail and wc) read exactly the text.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Protocol

from cgroupfs.cgroups.files import parse_cpu_list
from cgroupfs.errors import ParseError
from cgroupfs.files.cpu_directory import shows
from cgroupfs.server import ContentServer
from cgroupfs.table import DIRECTORIES, FILES, HOST_DIRECTORY
from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_session import Caller, Entry, FuseError
from cgroupfs_daemon.host_entries import HostEntries
from cgroupfs_daemon.syscalls import thread_of

log = logging.getLogger(__name__)

# Names never change while mounted: the kernel may cache lookups for long.  Sizes
# change with every reader, so file attributes are not cached (see st_size above).
ENTRY_TIMEOUT_S = 3600.0
DIRECTORY_ATTR_TIMEOUT_S = 3600.0

# How long the kernel may keep the names of the host's entries below the cpu
# directory, and the attributes of their directories and links (a file's are never
# kept: its size is its text's).  The cpu directory's own entries are looked up
# again on every path walk (timeout 0): which cpuN exist depends on the reader.
HOST_ENTRY_TIMEOUT_S = 1.0
HOST_ONLINE = f"{HOST_DIRECTORY}/online"

# st_size when the length cannot be known (a stat by the daemon itself): larger than
# any rendered file (cpuinfo, the largest, is ~1.4 KB per cpu).
FILE_SIZE_BOUND = 1 << 22

# A file handle is generation << HANDLE_GENERATION_SHIFT | a counter (see PerReaderFiles).
HANDLE_GENERATION_SHIFT = 40

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT

def is_own_thread(tid: int, own_pid: int) -> bool:
    """True when the caller (a thread id, as FUSE reports it) belongs to this process."""
    if tid == own_pid:
        return True
    belongs = thread_of(own_pid, tid)
    return os.path.exists(f"/proc/{own_pid}/task/{tid}") if belongs is None else belongs


class RequestObserver(Protocol):
    def request(self, path: str, seconds: float, error: int | None) -> None: ...


class _NullRequestObserver:
    def request(self, path: str, seconds: float, error: int | None) -> None:
        pass


class StaticTree:
    """Node ids for the fixed tree of the path table (root 1, then in path order)."""

    def __init__(self) -> None:
        self.path_of: dict[int, str] = {fp.ROOT_ID: ""}
        for path in sorted(set(DIRECTORIES) | set(FILES)):
            if path:
                self.path_of[len(self.path_of) + 1] = path
        self.node_of = {path: node for node, path in self.path_of.items()}

    def path(self, node: int) -> str:
        try:
            return self.path_of[node]
        except KeyError:
            raise FuseError(errno.ENOENT) from None

    def child(self, parent: int, name: str) -> tuple[int, str]:
        parent_path = self.path(parent)
        if parent_path not in DIRECTORIES:
            raise FuseError(errno.ENOTDIR)
        path = f"{parent_path}/{name}" if parent_path else name
        node = self.node_of.get(path)
        if node is None:
            raise FuseError(errno.ENOENT)
        return node, path

    def children(self, node: int) -> list[tuple[str, int, int]]:
        path = self.path(node)
        return [(name, self.node_of[child], fp.DT_DIR if child in DIRECTORIES else fp.DT_REG)
                for name in DIRECTORIES[path]
                for child in [f"{path}/{name}" if path else name]]

    def directory_attributes(self, node: int, mtime_ns: int) -> fp.Attributes:
        path = self.path(node)
        subdirectories = sum(1 for name in DIRECTORIES[path] if (f"{path}/{name}" if path else name) in DIRECTORIES)
        # The cpu directory's subdirectories are the host's: nlink 1, "unknown" (find(1)).
        nlink = 1 if path == HOST_DIRECTORY else 2 + subdirectories
        return fp.Attributes(node, stat.S_IFDIR | 0o555, nlink=nlink, mtime_ns=mtime_ns)


def host_child(tree: StaticTree, entries: HostEntries, parent: int, name: str,
               visible: Callable[[], tuple[int, ...]]) -> str | None:
    """The host path (relative to the host's cpu directory) that `name` in `parent`
    names, when it is one of the host's entries we pass through; None when it is not
    (a node of the path table, or ENOENT from the table)."""
    if entries.owns(parent):
        return f"{entries.path(parent)}/{name}"
    if tree.path(parent) == HOST_DIRECTORY and name not in DIRECTORIES[HOST_DIRECTORY]:
        if not shows(name, visible(), tuple(DIRECTORIES[HOST_DIRECTORY])):
            raise FuseError(errno.ENOENT)
        return name
    return None


def host_listing(tree: StaticTree, entries: HostEntries, node: int,
                 visible: Callable[[], tuple[int, ...]]) -> list[tuple[str, int, int]] | None:
    """readdir of a host directory, or of the cpu directory (ours, then the host's shown
    entries); None for the path table's other directories."""
    if entries.owns(node):
        relative = entries.path(node)
        return [(name, entries.node(f"{relative}/{name}"), kind) for name, kind in entries.children(relative)]
    if tree.path(node) != HOST_DIRECTORY:
        return None
    ours = tree.children(node)
    rendered = tuple(name for name, _, _ in ours)
    cpus = visible()
    return ours + [(name, entries.node(name), kind) for name, kind in entries.children("")
                   if shows(name, cpus, rendered)]


@dataclasses.dataclass
class _Handle:
    path: str
    data: bytes      # the text of the current pass
    passes: int = 0  # reads at offset 0 so far


class PerReaderFiles:
    """The Filesystem (daemon/fuse_session.py) of the per-reader mount."""

    def __init__(self, server: ContentServer, observer: RequestObserver | None = None, generation: int = 0):
        """`generation`: this instance's number among those that served the same
        connection (daemon/handoff.py); it is in the high bits of every file handle,
        so a handle a predecessor gave out is never given out again."""
        self.server = server
        self.observer = observer or _NullRequestObserver()
        self.tree = StaticTree()
        self.host_entries = HostEntries(server.host.cpu_directory_fd)
        self._host_handles: dict[int, bytes] = {}  # opens of the host's entries
        self._handles: dict[int, _Handle] = {}
        self._generation = generation
        self._next_handle = (generation << HANDLE_GENERATION_SHIFT) + 1
        self._own_pid = os.getpid()
        self._mount_time_ns = time.time_ns()

    # -- metadata -------------------------------------------------------------

    def lookup(self, parent: int, name: str, caller: Caller) -> Entry:
        relative = host_child(self.tree, self.host_entries, parent, name, lambda: self.visible_cpus(caller.pid))
        if relative is not None:
            node = self.host_entries.node(relative)
            attributes, timeout_s = self.getattr(node, None, caller)
            return Entry(attributes, 0.0 if "/" not in relative else HOST_ENTRY_TIMEOUT_S, timeout_s)
        node, path = self.tree.child(parent, name)
        attributes, timeout_s = self.getattr(node, None, caller)
        return Entry(attributes, ENTRY_TIMEOUT_S, timeout_s)

    def visible_cpus(self, pid: int) -> tuple[int, ...]:
        """The cpus whose cpuN directories `pid` sees: what our `online` says to it."""
        try:
            return parse_cpu_list(self.server.content(HOST_ONLINE, pid).decode("ascii", "replace"))
        except ParseError:
            return ()

    def getattr(self, node: int, fh: int | None, caller: Caller) -> tuple[fp.Attributes, float]:
        if self.host_entries.owns(node):
            relative = self.host_entries.path(node)
            attributes = self.host_entries.attributes(node, relative)
            return attributes, 0.0 if stat.S_ISREG(attributes.mode) else HOST_ENTRY_TIMEOUT_S
        path = self.tree.path(node)
        if path in DIRECTORIES:
            return self.tree.directory_attributes(node, self._mount_time_ns), DIRECTORY_ATTR_TIMEOUT_S
        size = self._size(path, fh, caller.pid)
        return fp.Attributes(node, stat.S_IFREG | 0o444, size=size, mtime_ns=self._mount_time_ns), 0.0

    def _size(self, path: str, fh: int | None, caller: int) -> int:
        handle = self._handles.get(fh) if fh is not None else None
        if handle is not None:
            return len(handle.data)  # fstat() of an open file: that open's current text
        if is_own_thread(caller, self._own_pid):
            return FILE_SIZE_BOUND
        try:
            return len(self.server.content(path, caller))  # cached: the open that follows reuses it
        except Exception:
            log.exception("sizing %s for pid %d failed", path, caller)
            return FILE_SIZE_BOUND

    def is_directory(self, node: int) -> bool:
        if self.host_entries.owns(node):
            return self.host_entries.is_directory(self.host_entries.path(node))
        return self.tree.path(node) in DIRECTORIES

    def readdir(self, node: int, caller: Caller) -> list[tuple[str, int, int]]:
        listing = host_listing(self.tree, self.host_entries, node, lambda: self.visible_cpus(caller.pid))
        return self.tree.children(node) if listing is None else listing

    def readlink(self, node: int) -> bytes:
        if not self.host_entries.owns(node):
            raise FuseError(errno.EINVAL)
        return self.host_entries.readlink(self.host_entries.path(node))

    # -- content --------------------------------------------------------------

    def open(self, node: int, flags: int, caller: Caller) -> tuple[int, int]:
        if self.host_entries.owns(node):
            return self._open_host_entry(node, flags, caller)
        started = time.perf_counter()
        path = self.tree.path(node)
        error = None
        try:
            if path not in FILES:
                error = errno.EISDIR
            elif flags & _WRITE_FLAGS:
                error = errno.EROFS
            elif is_own_thread(caller.pid, self._own_pid):
                # The daemon reading its own mount would deadlock a single-threaded loop;
                # any thread of ours that gets here is refused instead.
                log.error("refused a read of %s by the daemon itself (thread %d)", path, caller.pid)
                error = errno.EDEADLK
            if error is not None:
                raise FuseError(error)
            data = self._render(path, caller.pid)
            handle = self._next_handle
            self._next_handle += 1
            self._handles[handle] = _Handle(path, data)
            return handle, fp.FOPEN_DIRECT_IO | fp.FOPEN_NOFLUSH
        except FuseError as failed:
            error = failed.errno
            raise
        finally:
            self.observer.request(path, time.perf_counter() - started, error)

    def _render(self, path: str, pid: int) -> bytes:
        try:
            return self.server.content(path, pid)
        except FileNotFoundError:
            raise FuseError(errno.ENOENT) from None  # a host file this kernel lacks (no PSI)
        except Exception:
            log.exception("rendering %s for pid %d failed", path, pid)
            raise FuseError(errno.EIO) from None

    def _open_host_entry(self, node: int, flags: int, caller: Caller) -> tuple[int, int]:
        relative = self.host_entries.path(node)
        if flags & _WRITE_FLAGS:
            raise FuseError(errno.EROFS)
        if self.host_entries.is_directory(relative):
            raise FuseError(errno.EISDIR)
        # No default_permissions on this mount: the kernel leaves the check to us.
        if caller.uid != 0 and not self.host_entries.world_readable(relative):
            raise FuseError(errno.EACCES)
        handle = self._next_handle
        self._next_handle += 1
        self._host_handles[handle] = self.host_entries.read(relative)
        return handle, fp.FOPEN_DIRECT_IO | fp.FOPEN_NOFLUSH

    def read(self, node: int, fh: int, offset: int, size: int, from_page_cache: bool,
             caller: Caller) -> bytes:
        host_text = self._host_handles.get(fh)
        if host_text is None and self.host_entries.owns(node):
            host_text = self._adopt_host_entry(node, fh, caller)
        if host_text is not None:
            return host_text[offset:offset + size]
        if from_page_cache:
            # A page-cache fill (splice/sendfile, mmap): refuse, see the module docstring.
            raise FuseError(errno.EIO)
        handle = self._handles.get(fh)
        if handle is None:
            handle = self._adopt(node, fh, caller)
        if offset == 0 and handle.passes:
            # A new pass (rewind, pread at 0): fresh text, as seq_file gives.  The first
            # pass reads the text rendered at open.
            handle.data = self._render(handle.path, caller.pid)
        if offset == 0:
            handle.passes += 1
        return handle.data[offset:offset + size]

    def _adopt_host_entry(self, node: int, fh: int, caller: Caller) -> bytes:
        """_adopt() for a host entry of the cpu directory."""
        if fh >> HANDLE_GENERATION_SHIFT == self._generation:
            raise FuseError(errno.EBADF)
        relative = self.host_entries.path(node)
        if caller.uid != 0 and not self.host_entries.world_readable(relative):
            raise FuseError(errno.EACCES)
        text = self._host_handles[fh] = self.host_entries.read(relative)
        return text

    def _adopt(self, node: int, fh: int, caller: Caller) -> _Handle:
        """A READ on a file a predecessor opened (the connection was taken over, its
        handle table was not): the reader gets its content as if it opened it now."""
        path = self.tree.path(node)
        if fh >> HANDLE_GENERATION_SHIFT == self._generation or path not in FILES:
            raise FuseError(errno.EBADF)
        handle = self._handles[fh] = _Handle(path, self._render(path, caller.pid))
        return handle

    def release(self, node: int, fh: int) -> None:
        self._handles.pop(fh, None)
        self._host_handles.pop(fh, None)

    @property
    def open_handles(self) -> int:
        return len(self._handles) + len(self._host_handles)
