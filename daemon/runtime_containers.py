"""The daemon's side of the wrapper's records: containers of any engine, named for metrics and status.

Every SCAN_INTERVAL_S the records written by `cgroupfs-runtime` (runtime_records.py)
are read; a container whose pid file names a live process is tracked in the
daemon's stats (metrics label it with the record's name and image, `status`
counts it) unless the Docker watcher already tracks it (Docker's API knows more).
A record whose process is gone, or that never got a pid within ORPHAN_AFTER_S, is
removed: the records follow the live containers even when `delete` never came
(the engine was killed).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from cgroupfs.cgroups.membership import read_proc_cgroup
from cgroupfs.errors import CgroupfsError
from cgroupfs_daemon.runtime_records import read_pid, read_records, records_directory
from cgroupfs_daemon.stats import ContainerInfo, DaemonStats

log = logging.getLogger("cgroupfs.runtime")

SCAN_INTERVAL_S = 2.0
# A record without a live pid this long after it was written belongs to a container
# that never started (or whose engine forgot to delete it).
ORPHAN_AFTER_S = 600.0


class RuntimeContainers:
    def __init__(self, stats: DaemonStats, directory: str | None = None, interval_s: float = SCAN_INTERVAL_S):
        self.stats = stats
        self.directory = directory or records_directory()
        self.interval_s = interval_s
        self._tracked: dict[str, ContainerInfo] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="runtime-records", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1)

    def _run(self) -> None:
        while True:
            try:
                self.scan()
            except Exception:
                log.exception("reading the runtime wrapper's records failed; trying again")
            if self._stop.wait(self.interval_s):
                return

    def scan(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        live: set[str] = set()
        for record in read_records(self.directory):
            container_id = record["id"]
            pid = read_pid(str(record.get("pid_file") or ""))
            if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
                if pid > 0 or now - self._written_at(container_id, now) > ORPHAN_AFTER_S:
                    self._remove(container_id)
                continue
            live.add(container_id)
            known = self.stats.container(container_id)
            if known is not None and known.init_pid == pid:
                continue  # the Docker watcher's, or ours already
            try:
                cgroup = read_proc_cgroup(pid)
            except (CgroupfsError, OSError):
                continue
            labels = {str(k): str(v) for k, v in (record.get("labels") or {}).items()}
            info = ContainerInfo(id=container_id, name=str(record.get("name") or container_id[:12]),
                                 image=str(record.get("image") or ""), labels=labels, init_pid=pid, cgroup=cgroup)
            self.stats.container_tracked(info)
            self._tracked[container_id] = info
        for container_id in [c for c in self._tracked if c not in live]:
            self.stats.container_forgotten(self._tracked.pop(container_id))

    def _written_at(self, container_id: str, default: float) -> float:
        try:
            return os.stat(os.path.join(self.directory, container_id + ".json")).st_mtime
        except OSError:
            return default

    def _remove(self, container_id: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, container_id + ".json"))
        except OSError:
            pass
