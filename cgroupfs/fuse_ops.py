"""The FUSE operations over the path table: a read-only tree of virtual files.

Content is rendered once, at open, for the opening process and kept with the file
handle, so every read of that open (any offset, any size) sees the same text.
Files are served with direct_io because their size is not known in advance.

The page cache must never serve these files: one inode is shared by every
container, so a cached page would hand one container another's numbers.  direct_io
keeps read(2) off the page cache, but the kernel still splices (sendfile, used by
busybox `cat` and Python's shutil) through it, bounded by st_size.  So:
- read requests that come from the page cache (the kernel sends them without a
  lock owner; direct reads always carry one) fail with EIO, and sendfile users fall
  back to read(2) — busybox and shutil do;
- st_size is the true length rather than /proc's 0 (with 0, sendfile returns an
  empty file without asking us): fstat() of an open file gives the length of that
  open's content, stat() by path the length of what the caller would read now.
  Attributes are therefore never cached by the kernel (attr_timeout 0), so programs
  that trust st_size (Node's readFileSync, GNU tail and wc) read exactly the text.
The loop is single-threaded (see daemon/mount.py): no locking for the handle table.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Protocol

# mfusepy loads libfuse2 unless told otherwise at import time; we use libfuse3.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

from cgroupfs.server import ContentServer
from cgroupfs.table import DIRECTORIES, FILES
from cgroupfs_daemon.syscalls import thread_of

log = logging.getLogger(__name__)

# Names never change while mounted: the kernel may cache lookups for long.  Sizes
# change with every reader, so attributes are not cached (see st_size above).
ENTRY_TIMEOUT_S = 3600.0
ATTR_TIMEOUT_S = 0.0

# st_size when the length cannot be known (a stat by the daemon itself): larger than
# any rendered file (cpuinfo, the largest, is ~1.4 KB per cpu).
FILE_SIZE_BOUND = 1 << 22

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class RequestObserver(Protocol):
    def request(self, path: str, seconds: float, error: int | None) -> None: ...


class _NullRequestObserver:
    def request(self, path: str, seconds: float, error: int | None) -> None:
        pass


def is_own_thread(tid: int, own_pid: int) -> bool:
    """True when the caller (a thread id, as FUSE reports it) belongs to this process."""
    if tid == own_pid:
        return True
    answer = thread_of(own_pid, tid)
    return os.path.exists(f"/proc/{own_pid}/task/{tid}") if answer is None else answer


class CgroupFsOperations(mfusepy.Operations):
    use_ns = True

    def __init__(self, server: ContentServer, observer: RequestObserver | None = None, on_init=None):
        self.server = server
        self.observer = observer or _NullRequestObserver()
        self.on_init = on_init
        self._handles: dict[int, bytes] = {}
        self._next_handle = 1
        self._own_pid = os.getpid()
        self._mount_time_ns = time.time_ns()

    # -- lifecycle ------------------------------------------------------------

    def init_with_config(self, conn, config) -> None:
        if config is not None:
            config.entry_timeout = ENTRY_TIMEOUT_S
            config.attr_timeout = ATTR_TIMEOUT_S
            config.negative_timeout = ENTRY_TIMEOUT_S
            config.direct_io = 1
        if self.on_init is not None:
            self.on_init()

    # -- metadata -------------------------------------------------------------

    def getattr(self, path: str, fh=None) -> dict:
        relative = path.strip("/")
        times = {"st_atime": self._mount_time_ns, "st_mtime": self._mount_time_ns, "st_ctime": self._mount_time_ns}
        if relative in DIRECTORIES:
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2 + sum(
                1 for child in DIRECTORIES[relative] if _join(relative, child) in DIRECTORIES), **times}
        if relative in FILES:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self._size(relative, fh), **times}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def _size(self, relative: str, fh) -> int:
        data = self._handles.get(fh.fh) if fh is not None else None
        if data is not None:
            return len(data)  # fstat() of an open file: that open's content
        caller = mfusepy.fuse_get_context()[2]
        if is_own_thread(caller, self._own_pid):
            return FILE_SIZE_BOUND
        try:
            return len(self.server.content(relative, caller))  # cached: the open that follows reuses it
        except Exception:
            log.exception("sizing %s for pid %d failed", relative, caller)
            return FILE_SIZE_BOUND

    def readdir(self, path: str, fh) -> list[str]:
        relative = path.strip("/")
        if relative not in DIRECTORIES:
            raise mfusepy.FuseOSError(errno.ENOTDIR if relative in FILES else errno.ENOENT)
        return [".", "..", *DIRECTORIES[relative]]

    def access(self, path: str, amode: int) -> int:
        """access(2): the mount is read-only and no file is executable.

        (Without default_permissions the kernel asks us; with no answer it would say
        yes to everything.)"""
        relative = path.strip("/")
        if relative not in FILES and relative not in DIRECTORIES:
            raise mfusepy.FuseOSError(errno.ENOENT)
        if amode & os.W_OK:
            raise mfusepy.FuseOSError(errno.EROFS)
        if amode & os.X_OK and relative in FILES:
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # -- content --------------------------------------------------------------

    def open(self, path: str, fi) -> int:
        started = time.perf_counter()
        relative = path.strip("/")
        error = None
        try:
            if relative not in FILES:
                error = errno.EISDIR if relative in DIRECTORIES else errno.ENOENT
                raise mfusepy.FuseOSError(error)
            if fi.flags & _WRITE_FLAGS:
                error = errno.EROFS
                raise mfusepy.FuseOSError(error)
            caller = mfusepy.fuse_get_context()[2]
            if is_own_thread(caller, self._own_pid):
                # The daemon reading its own mount would deadlock a single-threaded loop;
                # any thread of ours that gets here is refused instead.
                log.error("refused a read of %s by the daemon itself (thread %d)", relative, caller)
                error = errno.EDEADLK
                raise mfusepy.FuseOSError(error)
            try:
                data = self.server.content(relative, caller)
            except Exception:
                log.exception("rendering %s for pid %d failed", relative, caller)
                error = errno.EIO
                raise mfusepy.FuseOSError(error) from None
            handle = self._next_handle
            self._next_handle += 1
            self._handles[handle] = data
            fi.fh = handle
            fi.direct_io = 1
            return 0
        finally:
            self.observer.request(relative, time.perf_counter() - started, error)

    def read(self, path: str, size: int, offset: int, fh) -> bytes:
        if getattr(fh, "lock_owner", 1) == 0:
            # A page-cache fill (splice/sendfile, mmap): refuse, see the module docstring.
            raise mfusepy.FuseOSError(errno.EIO)
        data = self._handles.get(fh.fh if hasattr(fh, "fh") else fh)
        if data is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        if offset < 0:
            raise mfusepy.FuseOSError(errno.EINVAL)
        return data[offset:offset + size]

    def release(self, path: str, fh) -> int:
        self._handles.pop(fh.fh if hasattr(fh, "fh") else fh, None)
        return 0

    # -- everything that would change the tree: read-only ---------------------

    def _read_only(self, *args, **kwargs):
        raise mfusepy.FuseOSError(errno.EROFS)

    write = truncate = create = unlink = mkdir = rmdir = rename = link = symlink = _read_only
    chmod = chown = utimens = mknod = _read_only

    # No xattr operations: libfuse answers EOPNOTSUPP and the kernel then stops asking
    # (one round trip per mount instead of two per `ls -l` entry).

    @property
    def open_handles(self) -> int:
        return len(self._handles)


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child
