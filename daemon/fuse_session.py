"""One FUSE connection: mount it, read requests from /dev/fuse, answer them.

The loop is single-threaded (one thread per connection): under the GIL more
threads only add contention (../shared/DESIGN.md's measurements), and one thread
needs no locks around a filesystem's handle table.  What is served comes from a
`Filesystem` (daemon/fuse_files.py: per-reader files; daemon/views.py: views);
this module knows the protocol and nothing about cgroups.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.mount import lazy_unmount
from cgroupfs_daemon.syscalls import mount_fuse

log = logging.getLogger(__name__)

MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
# A request is at most one header plus max_write bytes; reads are answered in full.
BUFFER_SIZE = 128 * 1024 + 4096


class FuseError(Exception):
    """Answer the request with this errno."""

    def __init__(self, errno_value: int):
        super().__init__(errno_value)
        self.errno = errno_value


@dataclass(frozen=True)
class Caller:
    pid: int  # thread id of the caller, in the daemon's pid namespace
    uid: int
    gid: int


@dataclass(frozen=True)
class Entry:
    """A looked-up node and how long the kernel may keep its name and attributes."""

    attributes: fp.Attributes
    entry_timeout_s: float
    attr_timeout_s: float


class Filesystem(Protocol):
    """What a connection serves.  Node ids are the kernel's inode numbers (root: 1).

    Methods raise FuseError for an errno answer."""

    def lookup(self, parent: int, name: str, caller: Caller) -> Entry: ...
    def getattr(self, node: int, fh: int | None, caller: Caller) -> tuple[fp.Attributes, float]: ...
    def open(self, node: int, flags: int, caller: Caller) -> tuple[int, int]: ...  # (fh, FOPEN_* flags)
    def read(self, node: int, fh: int, offset: int, size: int, from_page_cache: bool,
             caller: Caller) -> bytes: ...
    def release(self, node: int, fh: int) -> None: ...
    def readdir(self, node: int, caller: Caller) -> list[tuple[str, int, int]]: ...  # (name, node, DT_*)
    def readlink(self, node: int) -> bytes: ...
    def is_directory(self, node: int) -> bool: ...


def mount_source(mountpoint: str) -> str:
    """The source our mount of `mountpoint` shows in every mountinfo: names the daemon instance
    (heal_all.py heals only its own dead mounts) without showing containers the host's path."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:12]
    return f"cgroupfs@{digest}"


def mount(mountpoint: str, fsname: str, subtype: str) -> int:
    """Mount a new FUSE connection read-only at `mountpoint`; returns its /dev/fuse fd."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode={stat.S_IFDIR:o},user_id=0,group_id=0,allow_other"
    err = mount_fuse(fsname, mountpoint, subtype, MS_RDONLY | MS_NOSUID | MS_NODEV, options)
    if err:
        os.close(fd)
        raise OSError(err, f"mounting FUSE at {mountpoint}: {os.strerror(err)}")
    return fd


def unmount(mountpoint: str) -> None:
    """Detach `mountpoint` (lazily: readers holding files keep them until they close)."""
    lazy_unmount(mountpoint)


class Session:
    """Serves `filesystem` on an already mounted connection `fd` until it is unmounted."""

    def __init__(self, fd: int, filesystem: Filesystem, name: str, *,
                 wanted_flags: int = 0, on_init=None, read_only_error: int = errno.EROFS,
                 negotiated: tuple[int, int] | None = None):
        """`negotiated`: (minor, kernel flags) of a connection taken over from a
        predecessor (daemon/handoff.py), whose kernel will not send FUSE_INIT again."""
        self.fd = fd
        self.filesystem = filesystem
        self.name = name
        self.wanted_flags = wanted_flags
        self.on_init = on_init
        self.read_only_error = read_only_error
        self.minor: int | None = negotiated[0] if negotiated else None
        # What the kernel offered in FUSE_INIT (flags2 as bits 32-63).
        self.kernel_flags: int | None = negotiated[1] if negotiated else None
        self.requests_served = 0
        self.request_started: float | None = None  # monotonic, while a request is in hand
        self._stopping = threading.Event()
        # stop() wakes a loop waiting for requests through this pipe.
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._loop_thread: int | None = None
        self._dirs: dict[int, list[tuple[str, int, int]]] = {}  # OPENDIR handle -> entries
        self._next_dir_handle = 1

    def serve(self) -> None:
        """Answer requests until the connection ends (unmounted: ENODEV) or stop().

        stop() ends the loop between two requests, never between reading one and
        answering it: a successor taking the connection over must find no request
        lost.  The descriptor is non-blocking; an empty queue is waited for with
        poll(2), beside stop()'s wake-up pipe."""
        self._loop_thread = threading.get_ident()
        os.set_blocking(self.fd, False)
        waiting = select.poll()
        waiting.register(self.fd, select.POLLIN)
        waiting.register(self._wake_read, select.POLLIN)
        buffer = bytearray(BUFFER_SIZE)
        while not self._stopping.is_set():
            try:
                length = os.readv(self.fd, [buffer])
            except BlockingIOError:
                waiting.poll()
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR):
                    continue  # ENOENT: the request was interrupted before we read it
                if exc.errno == errno.ENODEV:
                    return  # unmounted
                raise
            if length == 0:
                return
            self.request_started = time.monotonic()
            answer = self._dispatch(fp.parse_request(memoryview(buffer)[:length]))
            if answer is not None:
                self._send(answer)
            self.request_started = None

    def busy_for(self) -> float:
        """Seconds the loop has been on the request in hand (0 when it waits for one):
        the watchdog's measure of a wedged loop, which costs no request of our own."""
        started = self.request_started
        return 0.0 if started is None else time.monotonic() - started

    def stop(self) -> None:
        """End serve() after the request in hand, if any (safe in a signal handler)."""
        self._stopping.set()
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # already woken

    def resend_unanswered(self) -> bool:
        """Ask the kernel to queue again the requests a dead predecessor read and never
        answered; False where the kernel cannot (before 6.9)."""
        if not (self.kernel_flags or 0) & fp.HAS_RESEND:
            return False
        try:
            os.write(self.fd, fp.notify_resend())
        except OSError as exc:
            log.warning("%s: FUSE_NOTIFY_RESEND failed: %s", self.name, exc)
            return False
        return True

    def forget_name(self, parent: int, name: str) -> None:
        """Make the kernel drop its cached entry `name` in `parent` (and what is below it)."""
        self._notify(fp.notify_inval_entry(parent, os.fsencode(name)), name)

    def forget_contents(self, node: int) -> None:
        """Make the kernel drop a file's cached attributes and pages."""
        self._notify(fp.notify_inval_inode(node), f"node {node}")

    def store_contents(self, node: int, data: bytes) -> None:
        """Replace a file's cached pages with `data` (growing its size to fit)."""
        self._notify(fp.notify_store(node, data), f"node {node}")

    def _notify(self, message: bytes, what: str) -> None:
        # Never from the loop's own thread: the kernel takes a directory's lock or a
        # page's, which a request waiting for this very loop may hold.
        assert threading.get_ident() != self._loop_thread, "a notification from the FUSE loop deadlocks"
        try:
            os.write(self.fd, message)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):  # ENOENT: not cached
                log.warning("%s: notifying the kernel about %s failed: %s", self.name, what, exc)

    def _send(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except OSError as exc:
            # ENOENT: the request was interrupted and the kernel no longer waits for it.
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.warning("%s: writing a reply failed: %s", self.name, exc)

    def _dispatch(self, request: fp.Request) -> bytes | None:
        self.requests_served += 1
        opcode = request.opcode
        if opcode in fp.NO_REPLY_OPCODES:
            return None
        try:
            handler = _HANDLERS.get(opcode)
            if handler is None:
                if opcode in fp.WRITE_OPCODES:
                    raise FuseError(self.read_only_error)
                raise FuseError(errno.ENOSYS)
            return fp.reply(request.unique, handler(self, request))
        except FuseError as exc:
            return fp.reply(request.unique, error=exc.errno)
        except Exception:
            log.exception("%s: request %d on node %d failed", self.name, opcode, request.node)
            return fp.reply(request.unique, error=errno.EIO)

    # -- handlers (each returns the reply payload or raises FuseError) ---------

    def _init(self, request: fp.Request) -> bytes:
        major, minor, flags = fp.init_flags(request.body)
        if major != fp.KERNEL_VERSION:
            log.error("%s: the kernel speaks FUSE %d.%d; we need 7.x", self.name, major, minor)
            raise FuseError(errno.EPROTO)
        payload, self.minor = fp.init_out(major, minor, flags, self.wanted_flags)
        self.kernel_flags = flags
        log.debug("%s: the kernel speaks FUSE %d.%d (flags %#x); we answer 7.%d with flags %#x",
                  self.name, major, minor, flags, self.minor, flags & self.wanted_flags)
        if self.on_init is not None:
            self.on_init()
        return payload

    def _caller(self, request: fp.Request) -> Caller:
        return Caller(request.pid, request.uid, request.gid)

    def _lookup(self, request: fp.Request) -> bytes:
        name = bytes(request.body).rstrip(b"\0").decode("utf-8", "surrogateescape")
        entry = self.filesystem.lookup(request.node, name, self._caller(request))
        return fp.entry_out(entry.attributes, entry.entry_timeout_s, entry.attr_timeout_s)

    def _getattr(self, request: fp.Request) -> bytes:
        flags, _dummy, fh = fp.GETATTR_IN.unpack_from(request.body)
        attributes, timeout_s = self.filesystem.getattr(
            request.node, fh if flags & fp.GETATTR_FH else None, self._caller(request))
        return fp.attr_out(attributes, timeout_s)

    def _open(self, request: fp.Request) -> bytes:
        flags, _open_flags = fp.OPEN_IN.unpack_from(request.body)
        fh, open_flags = self.filesystem.open(request.node, flags, self._caller(request))
        return fp.OPEN_OUT.pack(fh, open_flags, 0)

    def _read(self, request: fp.Request) -> bytes:
        fh, offset, size, read_flags, _owner, _flags, _pad = fp.READ_IN.unpack_from(request.body)
        # Reads through the page cache (readahead, splice, mmap) carry no lock owner;
        # read(2) on a direct_io file always does.
        return self.filesystem.read(request.node, fh, offset, size,
                                    from_page_cache=not read_flags & fp.READ_LOCKOWNER,
                                    caller=self._caller(request))

    def _release(self, request: fp.Request) -> bytes:
        fh = fp.RELEASE_IN.unpack_from(request.body)[0]
        self.filesystem.release(request.node, fh)
        return b""

    def _opendir(self, request: fp.Request) -> bytes:
        if not self.filesystem.is_directory(request.node):
            raise FuseError(errno.ENOTDIR)
        handle = self._next_dir_handle
        self._next_dir_handle += 1
        # The listing is taken once per opendir, so offsets stay valid while it is read.
        self._dirs[handle] = [(".", request.node, fp.DT_DIR), ("..", fp.ROOT_ID, fp.DT_DIR),
                              *self.filesystem.readdir(request.node, self._caller(request))]
        return fp.OPEN_OUT.pack(handle, 0, 0)

    def _readdir(self, request: fp.Request) -> bytes:
        fh, offset, size = fp.READ_IN.unpack_from(request.body)[:3]
        entries = self._dirs.get(fh)
        if entries is None:
            raise FuseError(errno.EBADF)
        out = bytearray()
        for index in range(offset, len(entries)):
            name, node, kind = entries[index]
            record = fp.dirent(node, index + 1, os.fsencode(name), kind)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)

    def _readlink(self, request: fp.Request) -> bytes:
        return self.filesystem.readlink(request.node)

    def _releasedir(self, request: fp.Request) -> bytes:
        self._dirs.pop(fp.RELEASE_IN.unpack_from(request.body)[0], None)
        return b""

    def _access(self, request: fp.Request) -> bytes:
        """access(2): the tree is read-only and no file is executable.

        (Without default_permissions the kernel asks us; a missing answer would be yes.)"""
        mask = fp.ACCESS_IN.unpack_from(request.body)[0]
        directory = self.filesystem.is_directory(request.node)  # raises ENOENT for unknown nodes
        if mask & os.W_OK:
            raise FuseError(errno.EROFS)
        if mask & os.X_OK and not directory:
            raise FuseError(errno.EACCES)
        return b""

    def _statfs(self, request: fp.Request) -> bytes:
        return fp.statfs_out()

    def _destroy(self, request: fp.Request) -> bytes:
        self._stopping.set()
        return b""


# FLUSH, GETXATTR, LISTXATTR and the rest fall through to ENOSYS: the kernel then
# stops sending them on this connection (one round trip per close saved for FLUSH).
_HANDLERS = {
    fp.INIT: Session._init,
    fp.LOOKUP: Session._lookup,
    fp.GETATTR: Session._getattr,
    fp.OPEN: Session._open,
    fp.READ: Session._read,
    fp.RELEASE: Session._release,
    fp.OPENDIR: Session._opendir,
    fp.READDIR: Session._readdir,
    fp.RELEASEDIR: Session._releasedir,
    fp.READLINK: Session._readlink,
    fp.ACCESS: Session._access,
    fp.STATFS: Session._statfs,
    fp.DESTROY: Session._destroy,
}


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT (and SIGHUP without handoff) to end its loop.

    A BaseException, so that a request handler's `except Exception` cannot swallow it."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def serve_in_main_thread(session: Session, mountpoint: str, *, on_sighup: Callable[[], None] | None = None) -> bool:
    """Serve until unmounted or signalled.  True when asked to hand over, else False.

    SIGTERM and SIGINT end the loop, detach the mount and close the connection, as
    libfuse's loop did.  SIGHUP does the same unless `on_sighup` is given: then it
    calls on_sighup() once (which must end serving with session.stop(), e.g. from a
    thread, once whatever else reads through the mount has stopped), the connection
    is left as it is for the caller to pass to its successor (daemon/handoff.py),
    and True is returned."""
    handoff = False

    def request_handoff(signum, frame):
        nonlocal handoff
        if not handoff:
            handoff = True
            on_sighup()

    previous = {signum: signal.signal(signum, _raise_stopped) for signum in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_handoff if on_sighup else _raise_stopped)
    # Held back while starting (cgroupfs_daemon.cli); one that came meanwhile arrives now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        session.serve()
    except Stopped as stop:
        handoff = False
        log.info("%s: %s received", session.name, stop)
    finally:
        # From here to the successor's serve(), a SIGHUP waits (the mask survives exec).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if handoff:
            log.info("%s: handing the connection over", session.name)
        else:
            unmount(mountpoint)
            os.close(session.fd)
    return handoff
