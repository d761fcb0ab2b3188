"""The daemon's state file: what `cgroupfs status`, a separate process, needs to know.

Facts only the running daemon has (its pid, containers served, whether Docker is
connected, where metrics are served) are written as JSON every few seconds to
/run/cgroupfs/state.json (systemd's RuntimeDirectory=; $CGROUPFS_STATE_FILE
overrides), atomically (write a temporary file, rename).  The file is a
convenience for the operator, not part of serving: if it cannot be written the
daemon says so in one log line and keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import cgroupfs
from cgroupfs_daemon.settings_file import default_state_path

if TYPE_CHECKING:
    from cgroupfs_daemon.stats import DaemonStats

log = logging.getLogger(__name__)

STATE_FORMAT = 1
UPDATE_INTERVAL_S = 5.0


def read_state(path: str) -> dict | None:
    """The last state written; None when there is none (daemon not running, or never wrote)."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None


class StateWriter:
    """A component: `start()` writes the file and keeps it fresh; `stop()` removes it."""

    def __init__(self, path: str | None, stats: DaemonStats, *, mountpoint: str, docker_host: str | None = None,
                 metrics_address: str | None = None, sysinfo_socket: str | None = None,
                 interval_s: float = UPDATE_INTERVAL_S):
        self.path = os.path.abspath(path or default_state_path())
        self.stats = stats
        self.mountpoint = os.path.abspath(mountpoint)
        self.docker_host = docker_host          # None: Docker watching off
        self.metrics_address = metrics_address  # None: no metrics endpoint
        self.sysinfo_socket = sysinfo_socket    # None: sysinfo(2) not answered
        self.interval_s = interval_s
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict:
        stats = self.stats.snapshot()
        return {
            "format": STATE_FORMAT,
            "version": cgroupfs.__version__,
            "pid": os.getpid(),
            "started_at": stats.started_at,
            "updated_at": time.time(),
            "update_interval_s": self.interval_s,
            "mountpoint": self.mountpoint,
            "containers": stats.containers_tracked,
            "docker": {
                "enabled": self.docker_host is not None,
                "host": self.docker_host,
                "connected": stats.docker_connected if self.docker_host else None,
            },
            "injections": {"ok": stats.injections_ok, "failed": stats.injections_failed},
            "metrics_address": self.metrics_address,
            "sysinfo": {
                "socket": self.sysinfo_socket,
                "listeners": stats.sysinfo_listeners,
                "answered": stats.sysinfo_calls.get("answered", 0),
                "kernel": stats.sysinfo_calls.get("kernel", 0),
            },
        }

    def write(self) -> None:
        """Write the file now; raises OSError."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(self.snapshot(), f, indent=1)
                f.write("\n")
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise

    def _write_logged(self) -> None:
        try:
            self.write()
        except OSError as exc:
            if not self._failing:
                log.error("cannot write the state file %s: %s; serving continues, `cgroupfs status` will not "
                          "see this daemon", self.path, exc.strerror or exc)
            self._failing = True
            return
        if self._failing:
            log.info("state file %s written again", self.path)
            self._failing = False

    def start(self) -> None:
        self._write_logged()
        self._thread = threading.Thread(target=self._run, name="state-file", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write_logged()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1)
        state = read_state(self.path)
        if state is not None and state.get("pid") == os.getpid():  # never remove another instance's file
            try:
                os.unlink(self.path)
            except OSError:
                pass
