"""A real notify socket and a real daemon subprocess, cleaned up whatever happens.

NotifyListener plays systemd's side of sd_notify(3): an AF_UNIX datagram socket
with SO_PASSCRED, so every message carries the sender's pid as the kernel saw it,
and the file descriptor store (FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME=); a
ServiceDaemon started with `handed=` gets those back as systemd hands them to a
restarted service (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID; fds from 3 on).
ServiceDaemon runs `python -m cgroupfs_daemon.cli daemon` the way the unit does (the
environment systemd would set: NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), with
its settings and state file in the test's directory, never the host's.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from cgroupfs_daemon.mount import mounts_at
from testbed.daemon_process import detach_daemon_mounts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
        for fd in self.stored.values():
            os.close(fd)
        self.stored.clear()
        if not self.name.startswith("@"):
            try:
                os.unlink(self.name)
            except FileNotFoundError:
                pass


def is_fuse_mounted(mountpoint: str) -> bool:
    return any(t.startswith("fuse") for t in mounts_at(os.path.abspath(mountpoint)))


class ServiceDaemon:
    """`cgroupfs daemon` (by default --no-docker --no-metrics) in a test directory, as systemd would start it."""

    def __init__(self, directory: str, *, notify: NotifyListener | None = None, watchdog_usec: int | None = None,
                 watchdog_pid: str | None = "self", wedge: bool = False, extra_args: tuple[str, ...] = (),
                 env: dict | None = None, command: tuple[str, ...] | None = None, mountpoint_flag: bool = True,
                 cwd: str = REPO, docker_host: str | None = None, metrics_address: str | None = None):
        self.directory = directory
        self.cwd = cwd
        self.mountpoint = os.path.join(directory, "mnt")
        self.state_file = os.path.join(directory, "run", "state.json")
        self.wedge_file = os.path.join(directory, "wedge") if wedge else None
        self.log_path = os.path.join(directory, "daemon.log")
        self.env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(name, None)
        for name in list(self.env):
            if name.startswith("CGROUPFS_"):
                self.env.pop(name)
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")
        # Never the host's /etc/default/cgroupfs or /run/cgroupfs.
        self.env["CGROUPFS_CONFIG"] = os.path.join(directory, "no-such-config")
        self.env["CGROUPFS_STATE_FILE"] = self.state_file
        if notify is not None:
            self.env["NOTIFY_SOCKET"] = notify.name
        if watchdog_usec is not None:
            self.env["WATCHDOG_USEC"] = str(watchdog_usec)
            if watchdog_pid not in (None, "self"):
                self.env["WATCHDOG_PID"] = watchdog_pid
        self.watchdog_pid_self = watchdog_usec is not None and watchdog_pid == "self"
        self.env.update(env or {})
        if command:
            base = command
        elif self.wedge_file:
            base = (sys.executable, "-m", "tests.wedged_daemon", self.wedge_file, "daemon")  # reads block on it
        else:
            base = (sys.executable, "-m", "cgroupfs_daemon.cli", "daemon")
        self.args = [*base, *(("--mountpoint", self.mountpoint) if mountpoint_flag else ()),
                     *(("--docker-host", docker_host) if docker_host else ("--no-docker",)),
                     *(("--metrics-address", metrics_address) if metrics_address else ("--no-metrics",)),
                     *extra_args]
        self.process: subprocess.Popen | None = None
        self.readers: list[subprocess.Popen] = []

    def start(self, handed: dict[str, int] | None = None) -> ServiceDaemon:
        """Start; with `handed` (name -> fd, e.g. a NotifyListener's store), as systemd
        restarts a service with a file descriptor store."""
        args = self.args
        env = dict(self.env)
        if self.watchdog_pid_self:
            # systemd sets WATCHDOG_PID to the main pid, known only once forked: the shell
            # exports its own pid and execs the daemon, which keeps that pid.
            args = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *args]
        place = None
        if handed:
            args = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *args]
            env.update(LISTEN_FDS=str(len(handed)), LISTEN_FDNAMES=":".join(handed))
            sources = list(handed.values())

            def place() -> None:  # in the child: the store's copies at 3, 4, ... (sd_listen_fds)
                for index, fd in enumerate(sources):
                    os.dup2(fd, 3 + index)

        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        cwd=self.cwd, preexec_fn=place,
                                        # dup2() leaves the placed copies inheritable; Python's
                                        # own descriptors are close-on-exec anyway.
                                        close_fds=place is None)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, mountpoint: str | None = None, timeout: float = 20) -> None:
        mountpoint = mountpoint or self.mountpoint
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}: {self.log()}")
            if is_fuse_mounted(mountpoint):
                try:
                    if os.listdir(os.path.join(mountpoint, "proc")):
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"daemon did not serve {mountpoint} within {timeout} s: {self.log()}")

    def start_reader(self, relative: str) -> subprocess.Popen:
        reader = subprocess.Popen(["cat", os.path.join(self.mountpoint, relative)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.readers.append(reader)
        return reader

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def cleanup(self, mountpoints: tuple[str, ...] = ()) -> None:
        """Release the wedge, stop readers and the daemon by pid, detach any mount left."""
        if self.wedge_file:
            try:
                os.unlink(self.wedge_file)
            except FileNotFoundError:
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for reader in self.readers:
            if reader.poll() is None:
                reader.kill()
            reader.communicate(timeout=10)
        for mountpoint in (self.mountpoint, *mountpoints):
            detach_daemon_mounts(mountpoint)
        if getattr(self, "_log", None):
            self._log.close()
