"""The daemon's side of the namespace helper (namespace_helper.py): start it, send it work.

The helper is started with subprocess (fork and exec in C, no Python in between:
safe from any thread), so it can be started on demand and restarted from any watcher
worker.  Each request carries its own reply pipe, so the workers share the socket
without waiting for each other: a send is one message, and each reads only its pipe.

A helper that died is replaced on the next request, logged once; a request it never
accepted is sent once more to the new one.  Nothing in the FUSE loop depends on it.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time

from cgroupfs_daemon.namespace_helper import ACCEPTED, CHILD_TIMEOUT_S, encode_request

log = logging.getLogger("cgroupfs.inject")

HELPER_MODULE = "cgroupfs_daemon.namespace_helper"
# The helper kills a child at CHILD_TIMEOUT_S; no answer well after that means the
# helper itself is stuck (or still starting on a loaded machine: a Python start-up).
REPLY_TIMEOUT_S = CHILD_TIMEOUT_S + 5.0
STOP_TIMEOUT_S = 2.0


class NamespaceRunner:
    """Runs [(detached mount fd, target, action)] in a mount namespace, through the helper."""

    def __init__(self):
        self._lock = threading.Lock()  # guards the helper's process and socket
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._healthy = True  # False from a replacement until a request is accepted again

    @property
    def helper_pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self) -> None:
        with self._lock:
            self._running()

    def stop(self) -> None:
        """Close the helper's socket (it exits and its children with it); wait for it briefly."""
        with self._lock:
            self._discard()

    def run(self, namespace_fd: int, jobs: list[tuple[int, str, str]], beneath: bool) -> list[tuple[str, int]]:
        """(outcome, errno) per job: mounted | healed | failed; ETIMEDOUT for a job with no answer."""
        reply = None
        for _attempt in range(2):
            process, reply = self._request(namespace_fd, jobs, beneath)
            if reply is None:  # a stuck helper, replaced; not resent: the work may be half done
                break
            if reply.startswith(ACCEPTED):
                self._healthy = True
                break
            # Never accepted: the helper died with the request (or before it).
            self._replace(process)
        results: list[tuple[str, int]] = [("failed", errno.ETIMEDOUT)] * len(jobs)
        if reply is not None and reply.startswith(ACCEPTED):
            for line in reply[len(ACCEPTED):].decode().splitlines():
                index, outcome, err = line.split()
                results[int(index)] = (outcome, int(err))
        return results

    # -- one request ------------------------------------------------------------------

    def _request(self, namespace_fd: int, jobs: list[tuple[int, str, str]], beneath: bool
                 ) -> tuple[subprocess.Popen, bytes | None]:
        """(the helper asked, its reply); the reply is None when it did not answer in time."""
        message = encode_request([(action, target) for _, target, action in jobs], beneath)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            with self._lock:
                process, control = self._running()
                try:
                    socket.send_fds(control, [message], [write_fd, namespace_fd, *(fd for fd, _, _ in jobs)])
                except OSError as exc:  # EPIPE, ECONNRESET: the helper is gone; a timeout: it is stuck
                    log.debug("namespace helper (pid %d) did not take a request: %s", process.pid, exc)
                    return process, b""
            os.close(write_fd)
            write_fd = -1
            reply = _read_to_end(read_fd, REPLY_TIMEOUT_S)
            if reply is None:
                log.warning("namespace helper (pid %d) did not answer within %.0f s", process.pid, REPLY_TIMEOUT_S)
                self._replace(process, stuck=True)
            return process, reply
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    # -- the helper process (with self._lock held) --------------------------------------

    def _running(self) -> tuple[subprocess.Popen, socket.socket]:
        if self._process is not None and self._process.poll() is None and self._control is not None:
            return self._process, self._control
        if self._process is not None:
            process = self._process
            self._discard()
            self._log_loss(process)
        control, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", HELPER_MODULE, str(helper_end.fileno())],
                pass_fds=(helper_end.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)  # no terminal signals: the daemon decides when it stops
        except BaseException:
            control.close()
            raise
        finally:
            helper_end.close()
        control.settimeout(REPLY_TIMEOUT_S)  # a send waits only while a stuck helper's queue is full
        self._control = control
        log.debug("namespace helper started (pid %d)", self._process.pid)
        return self._process, control

    def _replace(self, process: subprocess.Popen, stuck: bool = False) -> None:
        """Discard `process` unless another worker already replaced it; the next request starts a new one."""
        with self._lock:
            if process is self._process:
                self._discard(kill=stuck)
                self._log_loss(process)

    def _log_loss(self, process: subprocess.Popen) -> None:
        # Once per failure: a helper that kept dying right after its start would
        # otherwise log every injection; the first is a warning, the rest debug.
        (log.warning if self._healthy else log.debug)(
            "namespace helper (pid %d) lost (exit status %s); a new one starts with the next injection",
            process.pid, process.returncode)
        self._healthy = False

    def _discard(self, kill: bool = False) -> None:
        """Close the socket (a live helper exits on that) and reap the process; `kill`: do not wait for it."""
        process, control = self._process, self._control
        self._process = self._control = None
        if control is not None:
            control.close()
        if process is None:
            return
        try:
            process.wait(timeout=0 if kill else STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()  # our own child, by pid
            process.wait()


def _read_to_end(fd: int, timeout_s: float) -> bytes | None:
    """Everything written to pipe `fd` until every writer closed it; None after `timeout_s`."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
