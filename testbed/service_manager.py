"""systemd's side of a service, for tests and benchmarks: sd_notify(3) and the fd store.

NotifyListener is an AF_UNIX datagram socket with SO_PASSCRED, so every message
carries the sender's pid as the kernel saw it, and it keeps a file descriptor store
as systemd does (FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME=).  popen_with_descriptors()
starts a process with those descriptors handed back as systemd hands them to a
restarted service (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID; fds from 3 on).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_FD = array.array("i")
# Where the stand-in fd store keeps its copies: above anything a daemon is handed.
_STORE_FDS_FROM = 1000


@dataclass(frozen=True)
class Message:
    received: float  # time.monotonic()
    pid: int         # sender, from SCM_CREDENTIALS
    lines: tuple[str, ...]

    def has(self, line: str) -> bool:
        return line in self.lines

    def value(self, name: str) -> str | None:
        for line in self.lines:
            if line.startswith(name + "="):
                return line[len(name) + 1:]
        return None


class NotifyListener:
    """Collects every datagram in a background thread."""

    def __init__(self, address: str):
        self.name = address  # the NOTIFY_SOCKET value ('@...' for an abstract name)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.settimeout(0.05)
        self.messages: list[Message] = []
        self.stored: dict[str, int] = {}  # the fd store: FDNAME -> our copy of the descriptor
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data, ancillary, _, _ = self.socket.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * _FD.itemsize))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = 0
            fds: list[int] = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[:_UCRED.size])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[:len(payload) - len(payload) % _FD.itemsize])
                    fds.extend(received)
            message = Message(time.monotonic(), pid, tuple(data.decode().split("\n")))
            with self._changed:
                self._store(message, fds)
                self.messages.append(message)
                self._changed.notify_all()

    def _store(self, message: Message, fds: list[int]) -> None:
        """What systemd does with FDSTORE=1 and FDSTOREREMOVE=1 (one name, newest kept).
        Our copies sit above the fds a restarted daemon gets, so placing those is simple."""
        name = message.value("FDNAME") or "stored"
        if message.has("FDSTORE=1"):
            for fd in fds:
                if name in self.stored:
                    os.close(self.stored.pop(name))
                self.stored[name] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _STORE_FDS_FROM)
                os.close(fd)
            return
        for fd in fds:
            os.close(fd)
        if message.has("FDSTOREREMOVE=1") and name in self.stored:
            os.close(self.stored.pop(name))

    def release_stored(self) -> None:
        """Close every stored descriptor, as systemd does when a service stops for good."""
        with self._changed:
            for fd in self.stored.values():
                os.close(fd)
            self.stored.clear()

    def wait_stored(self, names: set[str], timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not names <= set(self.stored):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the fd store has {sorted(self.stored)}, not {sorted(names)}")
                self._changed.wait(remaining)
            return dict(self.stored)

    def wait_for(self, line: str, timeout: float, after: float = 0.0) -> Message:
        """The first message received after `after` (monotonic) that has `line`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self.messages:
                    if message.received > after and message.has(line):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {line!r} within {timeout} s; got {self.summary()}")
                self._changed.wait(remaining)

    def count(self, line: str, start: float, end: float | None = None) -> int:
        end = time.monotonic() if end is None else end
        with self._changed:
            return sum(1 for m in self.messages if start < m.received <= end and m.has(line))

    def summary(self) -> str:
        with self._changed:
            return "; ".join("|".join(m.lines) for m in self.messages[-12:]) or "nothing"

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        self.socket.close()
        self.release_stored()
        if not self.name.startswith("@"):
            try:
                os.unlink(self.name)
            except FileNotFoundError:
                pass


def popen_with_descriptors(args: list[str], handed: dict[str, int], env: dict[str, str],
                           **popen_kwargs) -> subprocess.Popen:
    """Popen `args` with `handed` (name -> fd) at fds 3, 4, ... and LISTEN_* set as
    sd_listen_fds_with_names(3) expects; a shell exports its own pid as LISTEN_PID and
    execs the command, which keeps that pid."""
    args = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *args]
    env = dict(env, LISTEN_FDS=str(len(handed)), LISTEN_FDNAMES=":".join(handed))
    sources = list(handed.values())

    def place() -> None:  # in the child: the store's copies at 3, 4, ...
        for index, fd in enumerate(sources):
            os.dup2(fd, 3 + index)

    # dup2() leaves the placed copies inheritable; Python's own descriptors are
    # close-on-exec anyway.
    return subprocess.Popen(args, env=env, preexec_fn=place, close_fds=False, **popen_kwargs)
