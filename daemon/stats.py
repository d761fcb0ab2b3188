"""The daemon's own counters, shared by its parts and read by the metrics exporter.

Plain attributes and dicts updated under one lock: the FUSE loop, the Docker
watcher and the sampler write; the metrics collector and the state file read
a consistent `snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from cgroupfs.cgroups.membership import CgroupPaths

# Request latency buckets (seconds) fit for sub-millisecond reads.
LATENCY_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)

# The metrics export every cgroup the filesystem served within this window; the
# bound keeps a fork bomb of short-lived cgroups from growing the table forever.
SERVED_TTL_S = 600.0
SERVED_MAX = 4096


@dataclass(frozen=True)
class ContainerInfo:
    """What the Docker watcher knows of a container, for metric labels."""

    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    init_pid: int = 0


class DaemonStats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started_at = time.time()
        # FUSE
        self.requests: dict[str, int] = defaultdict(int)             # file -> opens served
        self.request_errors: dict[tuple[str, str], int] = defaultdict(int)  # (file, errno name) -> count
        self.latency_bucket_counts: dict[str, list[int]] = {}       # file -> per-bucket counts (+Inf last)
        self.latency_sum_s: dict[str, float] = defaultdict(float)
        self.cache_hits = 0
        self.cache_misses = 0
        self.fallbacks: dict[tuple[str, str], int] = defaultdict(int)  # (file, reason) -> count
        # Docker
        self.injections_ok = 0
        self.injections_failed = 0
        self.injections_skipped = 0  # the container exited before or while we injected
        self.heals_ok = 0
        self.heals_failed = 0
        self.docker_connected = False
        self.containers: dict[str, ContainerInfo] = {}  # cgroup path (v2 or memory v1) -> info
        # metrics
        self.collector_errors = 0
        # cgroups the filesystem served recently: CgroupPaths.key() -> (paths, monotonic
        # time last served), least recently served first (see note_served).
        self.served_cgroups: dict[tuple, tuple[CgroupPaths, float]] = {}

    # FUSE loop ----------------------------------------------------------------

    def request(self, path: str, seconds: float, error: int | None) -> None:
        import errno as errno_module

        with self.lock:
            self.requests[path] += 1
            if error is not None:
                self.request_errors[(path, errno_module.errorcode.get(error, str(error)))] += 1
            buckets = self.latency_bucket_counts.get(path)
            if buckets is None:
                buckets = self.latency_bucket_counts[path] = [0] * (len(LATENCY_BUCKETS_S) + 1)
            for index, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    buckets[index] += 1
                    break
            else:
                buckets[-1] += 1
            self.latency_sum_s[path] += seconds

    def cache_lookup(self, hit: bool) -> None:
        with self.lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1

    def fallback(self, path: str, reason: str) -> None:
        with self.lock:
            self.fallbacks[(path, reason)] += 1

    def note_served(self, paths: CgroupPaths, now: float | None = None) -> None:
        """The content server rendered a file for a process in `paths` (not the root cgroup)."""
        now = time.monotonic() if now is None else now
        key = paths.key()
        with self.lock:
            # Re-inserting moves the key to the end: the dict stays ordered by recency,
            # so expiry and eviction only ever look at its front.
            self.served_cgroups.pop(key, None)
            self.served_cgroups[key] = (paths, now)
            while len(self.served_cgroups) > SERVED_MAX:
                del self.served_cgroups[next(iter(self.served_cgroups))]

    def served_recently(self, now: float | None = None) -> list[CgroupPaths]:
        """The cgroups served within SERVED_TTL_S, most recent last; drops older ones."""
        now = time.monotonic() if now is None else now
        with self.lock:
            while self.served_cgroups:
                key, (_, served_at) = next(iter(self.served_cgroups.items()))
                if now - served_at <= SERVED_TTL_S:
                    break
                del self.served_cgroups[key]
            return [paths for paths, _ in self.served_cgroups.values()]

    def forget_served(self, paths: CgroupPaths) -> None:
        """The cgroup is gone: stop exporting it before its entry expires."""
        with self.lock:
            self.served_cgroups.pop(paths.key(), None)

    def collector_error(self) -> None:
        with self.lock:
            self.collector_errors += 1

    @property
    def containers_tracked(self) -> int:
        return len(self.containers)
