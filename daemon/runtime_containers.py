"""The daemon's side of the wrapper's records: containers of any engine, named for metrics and status.

Every SCAN_INTERVAL_S the records written by `cgroupfs-runtime` (runtime_records.py)
are read; a container whose pid file names a live process is tracked in the
daemon's stats (metrics label it with the record's name and image, `status`
counts it) unless the Docker watcher already tracks it (Docker's API knows more).
A record whose process is gone, or that never got a pid within ORPHAN_AFTER_S, is
removed: the records follow the live containers even when `delete` never came
(the engine was killed).

A container the wrapper could not give the files (the daemon was not answering
when it was created) gets them injected once its process is seen, like the Docker
watcher does for Docker's containers (which are left to the watcher when it runs).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from cgroupfs.cgroups.membership import read_proc_cgroup
from cgroupfs.errors import CgroupfsError
from cgroupfs_daemon import inject
from cgroupfs_daemon.runtime_records import FILES_MISSING, read_pid, read_records, records_directory
from cgroupfs_daemon.stats import ContainerInfo, DaemonStats

log = logging.getLogger("cgroupfs.runtime")

SCAN_INTERVAL_S = 2.0
# A record without a live pid this long after it was written belongs to a container
# that never started (or whose engine forgot to delete it).
ORPHAN_AFTER_S = 600.0


class RuntimeContainers:
    def __init__(self, stats: DaemonStats, directory: str | None = None, interval_s: float = SCAN_INTERVAL_S,
                 mountpoint: str | None = None, docker_watched: bool = False):
        self.stats = stats
        self.directory = directory or records_directory()
        self.interval_s = interval_s
        self.mountpoint = mountpoint  # None: inject nothing
        self.docker_watched = docker_watched
        self._tracked: dict[str, ContainerInfo] = {}
        self._injected: set[tuple[str, int]] = set()  # (container id, pid) given the files by this daemon
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
            if record.get("files") == FILES_MISSING:
                self._inject(record, pid)
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
        self._injected = {(c, pid) for c, pid in self._injected if c in live}

    def _inject(self, record: dict, pid: int) -> None:
        """The per-reader files into a container created while the mount did not answer."""
        container_id = record["id"]
        if self.mountpoint is None or (container_id, pid) in self._injected:
            return
        if record.get("engine") == "docker" and self.docker_watched:
            return  # the watcher's
        self._injected.add((container_id, pid))
        try:
            results = inject.inject(pid, self.mountpoint)
        except (inject.ContainerGone, OSError):
            return
        except inject.InjectionRefused as exc:
            log.warning("container %s: not injecting: %s", container_id[:12], exc)
            return
        failed = [r for r in results if r.outcome == "failed"]
        (self.stats.injection_failed if failed else self.stats.injection_ok)()
        mounted = sum(r.changed for r in results)
        if failed:
            log.warning("container %s: %d of %d files not injected: %s", container_id[:12], len(failed),
                        len(results), "; ".join(r.describe() for r in failed))
        elif mounted:
            log.info("container %s (created while the mount did not answer): injected %d files",
                     container_id[:12], mounted)

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
