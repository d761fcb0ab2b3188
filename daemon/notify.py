"""systemd's notify protocol: READY=1, STATUS=, STOPPING=1 and a watchdog that proves the loop answers.

sd_notify(3) is one datagram per message on the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or an abstract name written with a leading '@').  With
`WatchdogSec=` systemd sets $WATCHDOG_USEC (and $WATCHDOG_PID, the pid that must
ping) and restarts the service when no WATCHDOG=1 arrives in time.

A timer that pings regardless would keep a wedged daemon alive forever, so every
ping is earned.  In the daemon, by its FUSE loops: a ping is sent only while no loop
has been on one request for longer than the probe's timeout (Session.busy_for()).
No request of our own goes through the mount for it: one in hand when the daemon is
killed would never be answered, and the dying process could not exit (the fd store
keeps the connection alive).  READY=1, once, and a Notifier without the loops, use a
listing *through the mount* instead: the ping or READY is sent only if that listing
came back in time.  A listing is used, not a stat,
because the kernel answers a stat from its attribute cache (ATTR_TIMEOUT_S is an
hour) while OPENDIR/READDIR always reach the FUSE loop (measured: three
`os.stat`s of the root sent one GETATTR, three `os.listdir`s sent three OPENDIRs
and three READDIRs).  The directory listing is not a file read, so the daemon's
refusal to read its own files does not apply.  A probe stuck in a wedged loop is
never waited on forever and never duplicated: the next tick sees it still pending
and counts a miss.  The probe waits WatchdogSec/8 (3.75 s for the unit's 30 s): a
loop saturated by 16 concurrent readers answered listings in 2 ms (median) and
350 ms at worst, so only a loop that is really stuck misses.

Without $NOTIFY_SOCKET (not started by systemd) every method is a no-op.
"""

from __future__ import annotations

import array
import faulthandler
import logging
import os
import socket
import threading
import time

from cgroupfs_daemon.mount import mounts_at
from cgroupfs_daemon.stats import DaemonStats

log = logging.getLogger(__name__)

NOTIFY_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# The directory the probes list: it exists in every mount (cgroupfs/table.py's DIRECTORIES).
PROBE_DIRECTORY = "proc"
# Ping four times per WatchdogSec=: one slow or missed probe still leaves time for the next.
PINGS_PER_WATCHDOG_PERIOD = 4
MAX_PROBE_TIMEOUT_S = 5.0
# STATUS= is refreshed this often when there is no watchdog to drive the loop faster.
STATUS_INTERVAL_S = 5.0


def socket_address(value: str) -> str | None:
    """The sendto() address for a $NOTIFY_SOCKET value; None for kinds we do not speak (vsock:)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(environ, pid: int) -> float | None:
    """WatchdogSec= in seconds when the watchdog is meant for `pid`, as sd_watchdog_enabled(3) decides."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                return None  # set for another process (e.g. inherited from a parent)
        except ValueError:
            return None
    return usec / 1_000_000


def is_mounted_fuse(mountpoint: str) -> bool:
    """Whether the top mount at `mountpoint` is a FUSE file system (mountinfo, no syscall through it)."""
    try:
        types = mounts_at(os.path.abspath(mountpoint))
    except OSError:
        return False
    return bool(types) and types[-1].startswith("fuse")


class MountProbe:
    """Does the FUSE loop behind `mountpoint` answer?  One listing at a time, bounded waits."""

    def __init__(self, mountpoint: str, directory: str = PROBE_DIRECTORY):
        self.path = os.path.join(mountpoint, directory)
        self._pending: threading.Thread | None = None
        self.last_error = ""  # why the last probe failed, for STATUS= and logs

    def _list(self, outcome: dict) -> None:
        try:
            outcome["entries"] = os.listdir(self.path)
        except OSError as exc:
            outcome["error"] = exc.strerror or str(exc)

    def answers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if self._pending is not None and self._pending.is_alive():
            self._pending.join(timeout_s)  # the previous probe may just be finishing
            if self._pending.is_alive():
                self.last_error = "an earlier probe is still waiting for the FUSE loop"
                return False
        outcome: dict = {}
        probe = threading.Thread(target=self._list, args=(outcome,), name="mount-probe", daemon=True)
        self._pending = probe
        probe.start()
        probe.join(max(0.0, deadline - time.monotonic()))
        if probe.is_alive():
            self.last_error = f"no answer within {timeout_s:g} s"
            return False
        if "error" in outcome:
            self.last_error = outcome["error"]
            return False
        if not outcome.get("entries"):
            self.last_error = f"{self.path} is empty"
            return False
        self.last_error = ""
        return True


def describe(mountpoint: str, stats: DaemonStats | None, docker_enabled: bool) -> str:
    """The STATUS= line for normal operation."""
    if not docker_enabled:
        return f"serving {mountpoint} (Docker watching off)"
    snapshot = stats.snapshot() if stats is not None else None
    containers = snapshot.containers_tracked if snapshot is not None else 0
    text = f"serving {containers} container{'' if containers == 1 else 's'} at {mountpoint}"
    if snapshot is not None and not snapshot.docker_connected:
        text += "; Docker not connected"
    return text


class Notifier:
    """The daemon's voice to systemd.  A component: `start()` once the loop runs, `stop()` at shutdown.

    `start()` (non-blocking) waits in its own thread for the mount to answer, sends
    READY=1, then pings the watchdog and refreshes STATUS= from `stats`
    (containers tracked, Docker connected).
    The lower-level methods can be used directly; `ready()` blocks, so never call
    it from the FUSE loop's thread.
    """

    def __init__(self, mountpoint: str, stats: DaemonStats | None = None, *, docker_enabled: bool = True,
                 environ=os.environ, ready_timeout_s: float = 60.0, loops_busy_for=None):
        self.mountpoint = os.path.abspath(mountpoint)
        self.stats = stats
        self.docker_enabled = docker_enabled
        self.ready_timeout_s = ready_timeout_s
        value = environ.get("NOTIFY_SOCKET", "")
        self.socket_name = value
        self.address = socket_address(value) if value else None
        if value and self.address is None:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket; not notifying systemd", value)
        self.watchdog_s = watchdog_interval_s(environ, os.getpid()) if self.address else None
        # Like sd_notify(unset_environment=1): forked helpers must not speak for the service.
        # Kept for a re-executed successor, which is the same service process.
        self.saved_environment = {name: environ.pop(name) for name in NOTIFY_ENVIRONMENT if name in environ}
        # Set before stop() when the process re-executes itself: systemd must not
        # hear STOPPING=1 from a service that goes on.
        self.handing_over = False
        self.probe = MountProbe(self.mountpoint)
        # () -> seconds the busiest FUSE loop has been on its request in hand.  With it,
        # the watchdog asks the loops instead of listing through the mount: a request of
        # our own in hand when the daemon is killed would keep the dying process from
        # exiting (nobody would ever answer it), and with the fd store it holds the
        # connection alive, so neither the restart nor the takeover could happen.
        self.loops_busy_for = loops_busy_for
        self._socket: socket.socket | None = None
        self._send_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status = ""
        self._stopping_sent = False
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # -- the protocol -----------------------------------------------------------

    def send(self, *assignments: str) -> bool:
        """One datagram of newline-separated VAR=value lines; False when it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self._socket_for_sending().sendto(message, self.address)
        except OSError as exc:
            if not self._send_failed:  # once, not every ping
                log.warning("cannot notify systemd at %s: %s", self.socket_name, exc.strerror or exc)
            self._send_failed = True
            return False
        if self._send_failed:
            log.info("notifying systemd works again")
            self._send_failed = False
        return True

    def _socket_for_sending(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._socket

    def keep_descriptors(self, descriptors: dict[str, int]) -> bool:
        """FDSTORE=1: systemd keeps each descriptor, under its name, for the service's
        next instance (daemon/handoff.py; the unit's FileDescriptorStoreMax=).  A
        descriptor already in the store is ignored by systemd, so this is idempotent."""
        if self.address is None:
            return False
        kept = True
        for name, fd in descriptors.items():
            message = f"FDSTORE=1\nFDNAME={name}".encode()
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
            try:
                self._socket_for_sending().sendmsg([message], rights, 0, self.address)
            except OSError as exc:
                log.warning("cannot hand %s to systemd's fd store: %s; a restart will mount afresh", name,
                            exc.strerror or exc)
                kept = False
        return kept

    def forget_descriptors(self, names: list[str]) -> None:
        """FDSTOREREMOVE=1: after a clean stop the next start mounts afresh."""
        for name in names:
            self.send("FDSTOREREMOVE=1", f"FDNAME={name}")

    def ready(self) -> bool:
        """READY=1 once the mount answers a listing; False (nothing sent) if it never does in time."""
        if not self.enabled:
            return False
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._stop.is_set():
            if is_mounted_fuse(self.mountpoint) and self.probe.answers(min(1.0, self.ready_timeout_s)):
                status = describe(self.mountpoint, self.stats, self.docker_enabled)
                self._last_status = status
                return self.send("READY=1", f"STATUS={status}")
            if time.monotonic() >= deadline:
                log.error("%s did not answer within %g s; not telling systemd we are ready (%s)",
                          self.mountpoint, self.ready_timeout_s, self.probe.last_error or "not mounted")
                return False
            self._stop.wait(0.02)
        return False

    def status(self, text: str) -> bool:
        self._last_status = text
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        if self._stopping_sent or self.handing_over:
            return True
        self._stopping_sent = True
        return self.send("STOPPING=1", f"STATUS=stopping, unmounting {self.mountpoint}")

    # -- the component ----------------------------------------------------------

    def start(self) -> None:
        """READY=1 when the mount answers, then the watchdog, in a thread of its own."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=MAX_PROBE_TIMEOUT_S + 1)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _run(self) -> None:
        if not self.ready():
            return
        if self.watchdog_s is not None:
            # When systemd gives up on us (SIGABRT), the journal gets every thread's Python stack.
            faulthandler.enable()
            interval_s = self.watchdog_s / PINGS_PER_WATCHDOG_PERIOD
            probe_timeout_s = min(interval_s / 2, MAX_PROBE_TIMEOUT_S)
            log.info("watchdog: %g s; probing %s every %g s", self.watchdog_s, self.probe.path, interval_s)
        else:
            interval_s, probe_timeout_s = STATUS_INTERVAL_S, None
        wedged_since: float | None = None
        if self.watchdog_s is not None and self.send("WATCHDOG=1"):
            self.pings += 1  # at once: a re-executed instance's first ping must not wait an interval
        while not self._stop.wait(interval_s):
            if probe_timeout_s is None:
                self._refresh_status()
                continue
            if self._stop.is_set():
                break
            if self._loops_answer(probe_timeout_s):
                if self._stop.is_set():
                    break
                if self.send("WATCHDOG=1"):
                    self.pings += 1
                if wedged_since is not None:
                    log.warning("the FUSE loop answers again after %.1f s", time.monotonic() - wedged_since)
                    wedged_since = None
                self._refresh_status()
            elif not self._stop.is_set():
                if wedged_since is None:
                    wedged_since = time.monotonic()
                    log.error("the FUSE loop does not answer (%s): withholding watchdog pings", self.probe.last_error)
                    self.status(f"FUSE loop not answering ({self.probe.last_error}); watchdog pings withheld")

    def _loops_answer(self, timeout_s: float) -> bool:
        if self.loops_busy_for is None:
            return self.probe.answers(timeout_s)
        if self.loops_busy_for() < timeout_s:
            self.probe.last_error = ""
            return True
        self.probe.last_error = f"no answer within {timeout_s:g} s"
        return False

    def _refresh_status(self) -> None:
        text = describe(self.mountpoint, self.stats, self.docker_enabled)
        if text != self._last_status:
            self.status(text)
