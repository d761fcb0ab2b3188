"""Answering containers' sysinfo(2) with their own numbers (seccomp user notification).

`cgroupfs-runtime` gives each container a seccomp rule that traps sysinfo
(SCMP_ACT_NOTIFY) and names this daemon's socket as the filter's listenerPath
(runtime_bundle.py).  Once the filter is installed, the OCI runtime (runc, crun)
connects to the socket and sends the filter's listener descriptor (SCM_RIGHTS)
with the container's state as JSON.  From then on every sysinfo(2) in that
container, and in its `exec`s (each one a listener of its own), waits until this
thread answers it:

- with the struct cgroupfs.sysinfo derives from the caller's own /proc texts
  (the content server's), kept per (listener, cgroup) for the cache interval,
  written into the caller's memory (daemon/seccomp_notify.py: only after the call
  is checked still waiting);
- or, when anything goes wrong (a caller of another ABI, an unreadable cgroup, a
  bad pointer), by letting the kernel run the call: its own result and errno,
  never a hang and never an invented error.

One thread, one epoll: the listening socket, the connections sending descriptors,
every listener.  A ready listener gets one answer per round, so a container
calling sysinfo in a tight loop is served in turn with the others; the FUSE loops
run in their own threads (the ioctls release the GIL).  A listener whose
processes are all gone reads as hung up (EPOLLHUP) and is closed.

The listeners outlive the daemon: without one, the kernel fails the call with
ENOSYS, so `free` would break in every container after a restart.  Each is kept
in systemd's fd store (and handed across a re-exec) under a name of its own,
`sysinfo-listener-…`, the socket as `sysinfo-socket`, and the call being answered
in a memfd, `sysinfo-in-hand` (InHand), which a successor answers: the kernel never
offers a taken call again (daemon/handoff.py).
"""

from __future__ import annotations

import array
import json
import logging
import mmap
import os
import secrets
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cgroupfs.server import ContentServer
from cgroupfs.sysinfo import Sysinfo, for_reader
from cgroupfs_daemon import seccomp_notify
from cgroupfs_daemon.runtime_seccomp import socket_answers
from cgroupfs_daemon.stats import DaemonStats

log = logging.getLogger("cgroupfs.sysinfo")

SOCKET_NAME = "sysinfo-socket"
IN_HAND_NAME = "sysinfo-in-hand"
LISTENER_PREFIX = "sysinfo-listener-"
# A runtime's message: the container's state, a few KiB (annotations included).
MAX_MESSAGE_BYTES = 1 << 20
MAX_PENDING_CONNECTIONS = 64
CONNECTION_TIMEOUT_S = 5.0
MAX_CACHED_STRUCTS = 4096  # beyond it, expired ones are dropped (see _packed_for)
SECCOMP_NOTIFY_LINK = "anon_inode:seccomp notify"


class SysinfoError(Exception):
    """The socket cannot be served (printed as one sentence at start-up)."""


@dataclass
class Listener:
    name: str        # in the fd store: listener_name()
    container: str   # the runtime's container id, "" when it did not say


def listener_name(token: str, number: int, container: str) -> str:
    """The fd-store name of a listener: unique (this instance's token, a counter) and
    naming its container, so that a successor knows it without any other state.
    LISTEN_FDNAMES separates names with ':', and systemd takes printable ASCII only."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in container)[:64]
    return f"{LISTENER_PREFIX}{token}.{number}-{safe}"


def container_of(name: str) -> str:
    return name.removeprefix(LISTENER_PREFIX).partition("-")[2]


class InHand:
    """The call being answered, in a shared memfd kept in the fd store beside the listeners.

    A call taken with NOTIF_RECV is never offered again: if the daemon dies before it
    answers, its caller waits forever (while the listener lives on in the store).  So
    the call is written here, into a shared mapping (no system call), between taking
    and answering it, and a successor answers it (README: a crash in the few
    microseconds between the ioctl's return and this write still loses it).  One slot:
    one thread answers one call at a time."""

    # valid; notification id; pid; nr; arch; buffer address; listener name.
    RECORD = struct.Struct("=B7xQIiIQ128s")

    def __init__(self, fd: int | None = None):
        self.fd = fd if fd is not None else os.memfd_create("cgroupfs-sysinfo-in-hand", os.MFD_CLOEXEC)
        if os.fstat(self.fd).st_size < self.RECORD.size:
            os.ftruncate(self.fd, self.RECORD.size)
        self._map = mmap.mmap(self.fd, self.RECORD.size)

    def hold(self, listener: str, notification: seccomp_notify.Notification) -> None:
        self._map[:self.RECORD.size] = self.RECORD.pack(
            1, notification.id, notification.pid, notification.nr, notification.arch, notification.args[0],
            listener.encode()[:128])

    def release(self) -> None:
        self._map[0] = 0

    def held(self) -> tuple[str, seccomp_notify.Notification] | None:
        """(listener name, the call) a predecessor was answering when it died, if any."""
        valid, id_, pid, nr, arch, address, name = self.RECORD.unpack(self._map[:self.RECORD.size])
        if not valid:
            return None
        return (name.rstrip(b"\0").decode(errors="replace"),
                seccomp_notify.Notification(id_, pid, nr, arch, (address, 0, 0, 0, 0, 0)))


@dataclass
class _Connection:
    sock: socket.socket
    data: bytearray
    fds: list[int]
    deadline: float


def is_listener_descriptor(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == SECCOMP_NOTIFY_LINK
    except OSError:
        return False


def parse_state(data: bytes) -> tuple[str, int, list[str]]:
    """(container id, pid, names of the descriptors sent) of the runtime's message, the
    OCI "container process state"; what cannot be parsed is left empty."""
    try:
        message = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return "", 0, []
    if not isinstance(message, dict):
        return "", 0, []
    state, pid, names = message.get("state"), message.get("pid"), message.get("fds")
    return (str(state.get("id") or "")[:128] if isinstance(state, dict) else "",
            pid if isinstance(pid, int) else 0,
            [str(name) for name in names] if isinstance(names, list) else [])


class SysinfoResponder:
    def __init__(self, server: ContentServer, socket_path: str, stats: DaemonStats, cache_ttl_s: float = 0.1,
                 in_hand: int | None = None,
                 keep: Callable[[dict[str, int]], object] | None = None,
                 forget: Callable[[list[str]], object] | None = None):
        self.server = server
        self.socket_path = socket_path
        self.stats = stats
        self._token = secrets.token_hex(4)  # this instance's listener names (listener_name)
        self._keep = keep or (lambda descriptors: None)
        self._forget = forget or (lambda names: None)
        calls = seccomp_notify.SYSINFO_CALLS.get(os.uname().machine)
        self._native_call = calls  # (audit arch, sysinfo's number), None: leave every call to the kernel
        self._listeners: dict[int, Listener] = {}
        try:
            self.in_hand = InHand(in_hand)  # a predecessor's, kept in the fd store once: reused
        except (OSError, ValueError) as exc:
            log.warning("the handed-over sysinfo call-in-hand record is unusable (%s); starting a new one", exc)
            if in_hand is not None:
                os.close(in_hand)
            self.in_hand = InHand()
        self.cache_ttl_s = cache_ttl_s
        # (listener fd, cgroup key) -> (expires, packed struct): _packed_for().
        self._structs: dict[tuple, tuple[float, bytes]] = {}
        self._connections: dict[int, _Connection] = {}
        self._numbers = iter(range(1 << 62))
        self._sock: socket.socket | None = None
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_read, select.EPOLLIN)
        self._lock = threading.Lock()  # the listeners table: the loop and a handoff read it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()
        stats.watch_sysinfo(lambda: len(self._listeners))

    # -- set-up: the socket and the listeners, fresh or handed over ------------------

    def listen(self, handed_socket: int | None = None) -> None:
        """Serve the socket handed over by a predecessor while it is still the one at
        socket_path, else bind a fresh one there.  Raises SysinfoError."""
        if handed_socket is not None:
            sock = socket.socket(fileno=handed_socket)
            if self._still_bound(sock):
                self._adopt_socket(sock)
                log.info("serving sysinfo(2) at %s (socket handed over)", self.socket_path)
                return
            sock.close()
        self._adopt_socket(self._bind())
        log.info("serving sysinfo(2) at %s", self.socket_path)

    def _still_bound(self, sock: socket.socket) -> bool:
        try:
            name = sock.getsockname()
            return name == self.socket_path and stat.S_ISSOCK(os.lstat(self.socket_path).st_mode)
        except OSError:
            return False

    def _bind(self) -> socket.socket:
        path = self.socket_path
        if len(os.fsencode(path)) >= 108:
            raise SysinfoError(f"the sysinfo socket path {path!r} is longer than a unix socket allows (107 bytes)")
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise SysinfoError(f"{path} exists and is not a socket; remove it or choose another "
                                       "--sysinfo-socket")
                if socket_answers(path):
                    raise SysinfoError(f"another daemon serves sysinfo at {path}; give each daemon its own "
                                       "--sysinfo-socket")
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            # Bound at its own name (not renamed into place): getsockname() then tells a
            # successor that the socket it is handed is still the one at the path.
            sock.bind(path)
            # Connecting needs write permission: the runtimes run as root; nobody else
            # may hand the daemon descriptors.
            os.chmod(path, 0o600)
            sock.listen(128)
        except OSError as exc:
            raise SysinfoError(f"cannot listen for sysinfo at {path}: {exc.strerror or exc}") from None
        return sock

    def _adopt_socket(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._keep({SOCKET_NAME: sock.fileno()})

    def adopt(self, handed: dict[str, int]) -> None:
        """Serve the listeners a predecessor handed over (by fd-store name), and answer the
        call it had in hand."""
        for name, fd in handed.items():
            if not is_listener_descriptor(fd):
                log.warning("descriptor %s handed over is not a seccomp listener; closed", name)
                os.close(fd)
                continue
            self._add(fd, Listener(name, container_of(name)), keep=False)
        if handed:
            log.info("answering sysinfo(2) again for %d listeners handed over", len(self._listeners))
        held = self.in_hand.held()
        if held is not None:
            self._answer_held(*held)
            self.in_hand.release()
        self._keep({IN_HAND_NAME: self.in_hand.fd})  # (the predecessor's memfd: already there)

    def _answer_held(self, name: str, notification: seccomp_notify.Notification) -> None:
        fd = next((fd for fd, listener in self._listeners.items() if listener.name == name), None)
        if fd is None or not seccomp_notify.still_waiting(fd, notification.id):
            return  # answered after all, or its caller is gone
        log.info("answering the sysinfo(2) call of pid %d the previous instance had in hand", notification.pid)
        self._answer_safely(fd, notification, time.monotonic())

    def descriptors(self) -> dict[str, int]:
        """Every descriptor to hand over, by fd-store name."""
        with self._lock:
            named = {listener.name: fd for fd, listener in self._listeners.items()}
        if self._sock is not None:
            named[SOCKET_NAME] = self._sock.fileno()
        named[IN_HAND_NAME] = self.in_hand.fd
        return named

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sysinfo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering; the listeners and the socket stay open (a successor's, or the
        process's end closes them).  Trapped calls wait meanwhile."""
        self._stop.set()
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close_socket(self) -> None:
        """A clean stop: new containers must not be given a socket nobody serves."""
        if self._sock is None:
            return
        try:
            if self._still_bound(self._sock):
                os.unlink(self.socket_path)
        except OSError:
            pass
        self._forget([SOCKET_NAME])
        self._sock.close()
        self._sock = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._epoll.poll(1.0)
            except InterruptedError:
                continue
            for fd, mask in events:
                if self._stop.is_set():
                    return
                try:
                    self._on_event(fd, mask)
                except Exception:  # one bad event never ends the thread that serves every container
                    log.exception("handling a sysinfo event on descriptor %d failed", fd)
            self._expire_connections()

    def _on_event(self, fd: int, mask: int) -> None:
        if fd == self._wake_read:
            return
        if self._sock is not None and fd == self._sock.fileno():
            self._accept()
        elif fd in self._connections:
            self._read_connection(fd)
        elif fd in self._listeners:
            if mask & select.EPOLLIN:
                self._answer_one(fd)
            elif mask & (select.EPOLLHUP | select.EPOLLERR):
                self._remove(fd)

    # -- descriptors arriving ---------------------------------------------------------

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._connections) >= MAX_PENDING_CONNECTIONS:
            self._note_once("too_many", f"more than {MAX_PENDING_CONNECTIONS} runtimes connected at once; "
                                        "dropping the oldest")
            oldest = min(self._connections, key=lambda fd: self._connections[fd].deadline)
            self._close_connection(oldest)
        conn.setblocking(False)
        self._connections[conn.fileno()] = _Connection(conn, bytearray(), [],
                                                        time.monotonic() + CONNECTION_TIMEOUT_S)
        self._epoll.register(conn.fileno(), select.EPOLLIN)

    def _read_connection(self, fd: int) -> None:
        connection = self._connections[fd]
        space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        try:
            # Close-on-exec: no process the daemon starts (the namespace helper) may hold a
            # listener; a re-exec hands them over explicitly.
            data, ancillary, _flags, _ = connection.sock.recvmsg(65536, space, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("reading a runtime's message failed: %s", exc)
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                connection.fds.extend(fds)
        connection.data += data
        if data and len(connection.data) <= MAX_MESSAGE_BYTES and not _complete(connection.data):
            return  # more to come: runc and crun close the connection once they have sent it
        self._close_connection(fd, received=True)

    def _close_connection(self, fd: int, received: bool = False) -> None:
        connection = self._connections.pop(fd)
        self._epoll.unregister(fd)
        connection.sock.close()
        container, pid, names = parse_state(bytes(connection.data)) if received else ("", 0, [])
        for index, listener_fd in enumerate(connection.fds):
            named_listener = index < len(names) and names[index] == "seccompFd"
            if received and (named_listener or not names) and is_listener_descriptor(listener_fd):
                name = listener_name(self._token, next(self._numbers), container)
                self._add(listener_fd, Listener(name, container), keep=True)
                log.debug("listener %s for container %s (pid %d)", name, container or "?", pid)
            else:
                os.close(listener_fd)
        if received and connection.data and not connection.fds:  # (no data: a wrapper's probe)
            self._note_once("no_descriptor", "a runtime connected to the sysinfo socket without sending a "
                                             "seccomp listener; ignored")

    def _expire_connections(self) -> None:
        now = time.monotonic()
        for fd in [fd for fd, connection in self._connections.items() if connection.deadline <= now]:
            self._close_connection(fd)

    def _add(self, fd: int, listener: Listener, keep: bool) -> None:
        os.set_blocking(fd, False)
        with self._lock:
            self._listeners[fd] = listener
        self._epoll.register(fd, select.EPOLLIN)
        if keep:
            self._keep({listener.name: fd})

    def _remove(self, fd: int) -> None:
        with self._lock:
            listener = self._listeners.pop(fd)
        self._epoll.unregister(fd)
        os.close(fd)  # its number may come back for another container's listener:
        self._structs = {key: value for key, value in self._structs.items() if key[0] != fd}
        self._forget([listener.name])
        log.debug("listener %s closed: its processes are gone", listener.name)

    # -- answering ------------------------------------------------------------------------

    def _answer_one(self, fd: int) -> None:
        started = time.monotonic()
        try:
            notification = seccomp_notify.receive(fd)
        except BlockingIOError:
            return  # another round took it, or the caller was interrupted
        if notification is None:
            self.stats.sysinfo_call("gone", 0.0)
            return
        self.in_hand.hold(self._listeners[fd].name, notification)
        self._answer_safely(fd, notification, started)

    def _answer_safely(self, fd: int, notification: seccomp_notify.Notification, started: float) -> None:
        try:
            outcome = self._answer(fd, notification)
        except Exception as exc:  # whatever it was, the kernel's own answer is a right one
            self._note_once(type(exc).__name__, f"sysinfo for pid {notification.pid} left to the kernel: {exc}")
            outcome = "kernel" if self._let_kernel_run(fd, notification.id) else "gone"
        self.in_hand.release()
        self.stats.sysinfo_call(outcome, time.monotonic() - started)

    def _answer(self, fd: int, notification: seccomp_notify.Notification) -> str:
        if self._native_call is None or (notification.arch, notification.nr) != self._native_call:
            # i386 or x32 callers (another struct layout), or a call we did not ask for.
            return "kernel" if self._let_kernel_run(fd, notification.id) else "gone"
        packed = self._packed_for(fd, notification.pid)
        if not seccomp_notify.write_to_caller(fd, notification, notification.args[0], packed):
            return "gone"
        return "answered" if seccomp_notify.answer(fd, notification.id) else "gone"

    def _packed_for(self, listener: int, pid: int) -> bytes:
        """The struct for `pid`, kept per (listener, cgroup) for the cache interval.

        A listener is one process tree of one container (the pid namespace its uptime
        counts from); its processes' cgroup is looked up per call (cached per pid for
        the same interval).  Within the interval a call costs a dict lookup instead of
        three rendered texts, each with its own limits check (~100 µs; measured with
        `make bench-sysinfo`); a limit changed (`docker update -m`) shows after at most
        one interval, as in the views."""
        now = time.monotonic()
        key = (listener, self.server.resolve(pid, now).key())
        cached = self._structs.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        packed = self.sysinfo_for(pid).pack()
        if self.cache_ttl_s > 0:
            if len(self._structs) >= MAX_CACHED_STRUCTS:
                self._structs = {k: v for k, v in self._structs.items() if v[0] > now}
                if len(self._structs) >= MAX_CACHED_STRUCTS:
                    self._structs.clear()
            self._structs[key] = (now + self.cache_ttl_s, packed)
        return packed

    def _let_kernel_run(self, fd: int, notification_id: int) -> bool:
        try:
            return seccomp_notify.let_kernel_run(fd, notification_id)
        except OSError as exc:
            log.warning("cannot hand a sysinfo call back to the kernel: %s", exc)
            return False

    def sysinfo_for(self, pid: int) -> Sysinfo:
        """What process `pid` gets from sysinfo(2): from the texts it reads in /proc."""
        return for_reader(self.server.content, pid)

    def _note_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)


def _complete(data: bytearray) -> bool:
    try:
        json.loads(bytes(data).decode())
    except (UnicodeDecodeError, ValueError):
        return False
    return True
