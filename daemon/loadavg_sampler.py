"""The load-average sampler: every 5 s, the kernel's calc_load() per cgroup.

Each tick scans every thread on the host once (/proc/*/task/*/stat), takes those in
R or D state, and charges each to its cgroup and that cgroup's ancestors — so a
container's load includes its sub-cgroups, and a cgroup is tracked from the first
moment it has an active task, before anyone reads its loadavg.  Cgroups whose
three averages have decayed to 0 are dropped, which bounds memory by the number
of recently busy cgroups.
"""

from __future__ import annotations

import logging
import os
import threading

from cgroupfs.cgroups import CgroupReader, read_proc_cgroup
from cgroupfs.errors import CgroupfsError
from cgroupfs.files import loadavg
from cgroupfs.procs import read_thread_stat

log = logging.getLogger(__name__)


def active_threads(proc_root: str = "/proc") -> list[int]:
    """Thread ids of every host thread in state R (running) or D (uninterruptible)."""
    active = []
    for process in os.scandir(proc_root):
        if not process.name.isdigit():
            continue
        try:
            tasks = os.listdir(f"{proc_root}/{process.name}/task")
        except OSError:
            continue  # exited
        for tid in tasks:
            try:
                if read_thread_stat(int(tid), proc_root).state in ("R", "D"):
                    active.append(int(tid))
            except (CgroupfsError, OSError, ValueError):
                continue
    return active


class LoadavgSampler:
    def __init__(self, cgroups: CgroupReader, proc_root: str = "/proc",
                 interval_s: float = loadavg.SAMPLE_INTERVAL_S):
        self.cgroups = cgroups
        self.proc_root = proc_root
        self.interval_s = interval_s
        self._loads: dict[str, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0

    def lookup(self, task_key: str) -> tuple[int, int, int] | None:
        return self._loads.get(task_key)

    def tracked(self) -> int:
        return len(self._loads)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loadavg-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample_once()
            except Exception:  # never let the sampler die; a read of loadavg would freeze
                log.exception("load average sample failed")

    def count_active(self) -> dict[str, int]:
        """Active (R/D) threads per cgroup directory, each charged to its ancestors too."""
        counts: dict[str, int] = {}
        for tid in active_threads(self.proc_root):
            try:
                key = self.cgroups.task_key(read_proc_cgroup(tid, self.proc_root))
            except CgroupfsError:
                continue
            while key and key != "/":
                counts[key] = counts.get(key, 0) + 1
                parent = os.path.dirname(key)
                if parent == key:
                    break
                key = parent
        return counts

    def sample_once(self) -> None:
        counts = self.count_active()
        updated: dict[str, tuple[int, int, int]] = {}
        for key in set(self._loads) | set(counts):
            loads = loadavg.step(self._loads.get(key, (0, 0, 0)), counts.get(key, 0))
            if any(loads):
                updated[key] = loads
        self._loads = updated  # one assignment: readers see the old or the new dict
        self.samples += 1
