"""The daemon's own counters, written by its parts and read by metrics, state file and systemd.

The FUSE loop, the Docker watcher and the metrics collector report events through
methods, one per event; readers take a `snapshot()`, a consistent, typed copy.
The lock is private and held for microseconds (the FUSE loop reports every open).
"""

from __future__ import annotations

import errno
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
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
    cgroup: CgroupPaths = field(default_factory=CgroupPaths)  # its init's, when tracked


@dataclass(frozen=True)
class StatsSnapshot:
    """The counters at one instant, for readers."""

    started_at: float                                    # unix time
    requests: Mapping[str, int]                          # file -> opens served
    request_errors: Mapping[tuple[str, str], int]        # (file, errno name) -> count
    latency_bucket_counts: Mapping[str, tuple[int, ...]]  # file -> count per bucket, +Inf last
    latency_sum_s: Mapping[str, float]
    cache_hits: int
    cache_misses: int
    fallbacks: Mapping[tuple[str, str], int]             # (file, reason) -> count
    injections_ok: int
    injections_failed: int
    injections_skipped: int                              # the container exited before or while we injected
    heals_ok: int
    heals_failed: int
    docker_connected: bool
    containers_tracked: int
    collector_errors: int
    views: int = 0                                       # views served now
    view_renders: int = 0                                # view files rendered (at most one per file per interval)
    view_requests: int = 0                               # requests that reached the views connection
    taken_over: frozenset[str] = frozenset()             # connections this instance took over (daemon/handoff.py)
    sysinfo_calls: Mapping[str, int] = field(default_factory=dict)  # outcome -> sysinfo(2) calls trapped
    sysinfo_bucket_counts: tuple[int, ...] = ()          # time to answer, count per bucket, +Inf last
    sysinfo_sum_s: float = 0.0
    sysinfo_listeners: int = 0                           # containers' (and execs') listeners held now


class DaemonStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started_at = time.time()
        # FUSE
        self._requests: dict[str, int] = defaultdict(int)
        self._request_errors: dict[tuple[str, str], int] = defaultdict(int)
        self._latency_bucket_counts: dict[str, list[int]] = {}
        self._latency_sum_s: dict[str, float] = defaultdict(float)
        self._cache_hits = 0
        self._cache_misses = 0
        self._fallbacks: dict[tuple[str, str], int] = defaultdict(int)
        # cgroups the filesystem served recently: CgroupPaths.key() -> (paths, monotonic
        # time last served), least recently served first (see note_served).
        self._served: dict[tuple, tuple[CgroupPaths, float]] = {}
        # Docker
        self._injections_ok = 0
        self._injections_failed = 0
        self._injections_skipped = 0
        self._heals_ok = 0
        self._heals_failed = 0
        self._docker_connected = False
        self._containers: dict[str, ContainerInfo] = {}  # Docker container id -> info
        # metrics
        self._collector_errors = 0
        # views: read from the Views registry and its session when a snapshot is taken
        self._views_source: Callable[[], tuple[int, int, int]] | None = None
        self._taken_over: set[str] = set()
        # sysinfo(2) (daemon/sysinfo_responder.py)
        self._sysinfo_calls: dict[str, int] = defaultdict(int)
        self._sysinfo_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sysinfo_sum_s = 0.0
        self._sysinfo_listeners: Callable[[], int] | None = None

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                started_at=self._started_at,
                requests=dict(self._requests),
                request_errors=dict(self._request_errors),
                latency_bucket_counts={path: tuple(counts) for path, counts in self._latency_bucket_counts.items()},
                latency_sum_s=dict(self._latency_sum_s),
                cache_hits=self._cache_hits,
                cache_misses=self._cache_misses,
                fallbacks=dict(self._fallbacks),
                injections_ok=self._injections_ok,
                injections_failed=self._injections_failed,
                injections_skipped=self._injections_skipped,
                heals_ok=self._heals_ok,
                heals_failed=self._heals_failed,
                docker_connected=self._docker_connected,
                containers_tracked=len(self._containers),
                collector_errors=self._collector_errors,
                taken_over=frozenset(self._taken_over),
                sysinfo_calls=dict(self._sysinfo_calls),
                sysinfo_bucket_counts=tuple(self._sysinfo_buckets),
                sysinfo_sum_s=self._sysinfo_sum_s,
                sysinfo_listeners=self._sysinfo_listeners() if self._sysinfo_listeners else 0,
                **self._views_counts(),
            )

    def note_takeover(self, connection: str) -> None:
        """This instance serves `connection` (a FUSE subtype) live from its predecessor."""
        with self._lock:
            self._taken_over.add(connection)

    def watch_views(self, counts: Callable[[], tuple[int, int, int]]) -> None:
        """`counts()` -> (views, renders, requests), asked at every snapshot."""
        self._views_source = counts

    def _views_counts(self) -> dict[str, int]:
        if self._views_source is None:
            return {}
        views, renders, requests = self._views_source()
        return {"views": views, "view_renders": renders, "view_requests": requests}

    # sysinfo(2) ----------------------------------------------------------------------------

    def watch_sysinfo(self, listeners: Callable[[], int]) -> None:
        """`listeners()` -> how many seccomp listeners are held, asked at every snapshot."""
        self._sysinfo_listeners = listeners

    def sysinfo_call(self, outcome: str, seconds: float) -> None:
        """A trapped sysinfo(2): "answered" (the container's struct), "kernel" (left to the
        kernel: its own result), "gone" (the caller was killed before the answer)."""
        with self._lock:
            self._sysinfo_calls[outcome] += 1
            self._sysinfo_buckets[_bucket(seconds)] += 1
            self._sysinfo_sum_s += seconds

    # FUSE loop (cgroupfs.fuse_ops and cgroupfs.server call these) ---------------------

    def request(self, path: str, seconds: float, error: int | None) -> None:
        with self._lock:
            self._requests[path] += 1
            if error is not None:
                self._request_errors[(path, errno.errorcode.get(error, str(error)))] += 1
            buckets = self._latency_bucket_counts.get(path)
            if buckets is None:
                buckets = self._latency_bucket_counts[path] = [0] * (len(LATENCY_BUCKETS_S) + 1)
            buckets[_bucket(seconds)] += 1
            self._latency_sum_s[path] += seconds

    def cache_lookup(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self._cache_hits += 1
            else:
                self._cache_misses += 1

    def fallback(self, path: str, reason: str) -> None:
        with self._lock:
            self._fallbacks[(path, reason)] += 1

    def note_served(self, paths: CgroupPaths, now: float | None = None) -> None:
        """The content server rendered a file for a process in `paths` (not the root cgroup)."""
        now = time.monotonic() if now is None else now
        key = paths.key()
        with self._lock:
            # Re-inserting moves the key to the end: the dict stays ordered by recency,
            # so expiry and eviction only ever look at its front.
            self._served.pop(key, None)
            self._served[key] = (paths, now)
            while len(self._served) > SERVED_MAX:
                del self._served[next(iter(self._served))]

    # metrics collector ------------------------------------------------------------------

    def served_recently(self, now: float | None = None) -> list[CgroupPaths]:
        """The cgroups served within SERVED_TTL_S, most recent last; drops older ones."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._served:
                key, (_, served_at) = next(iter(self._served.items()))
                if now - served_at <= SERVED_TTL_S:
                    break
                del self._served[key]
            return [paths for paths, _ in self._served.values()]

    def forget_served(self, paths: CgroupPaths) -> None:
        """The cgroup is gone: stop exporting it before its entry expires."""
        with self._lock:
            self._served.pop(paths.key(), None)

    def collector_error(self) -> None:
        with self._lock:
            self._collector_errors += 1

    # Docker watcher ---------------------------------------------------------------------

    def docker_connected(self, connected: bool) -> None:
        with self._lock:
            self._docker_connected = connected

    def injection_ok(self) -> None:
        with self._lock:
            self._injections_ok += 1

    def injection_failed(self) -> None:
        with self._lock:
            self._injections_failed += 1

    def injection_skipped(self) -> None:
        with self._lock:
            self._injections_skipped += 1

    def heal_ok(self) -> None:
        with self._lock:
            self._heals_ok += 1

    def heal_failed(self) -> None:
        with self._lock:
            self._heals_failed += 1

    def container_tracked(self, info: ContainerInfo) -> None:
        """Known from now on (replaces what was known of the same container id)."""
        with self._lock:
            self._containers[info.id] = info

    def container_forgotten(self, info: ContainerInfo) -> None:
        """Drop `info`, unless it was replaced meanwhile (a restarted container's new init)."""
        with self._lock:
            if self._containers.get(info.id) == info:
                del self._containers[info.id]

    def container(self, container_id: str) -> ContainerInfo | None:
        with self._lock:
            return self._containers.get(container_id)

    def containers(self) -> list[ContainerInfo]:
        with self._lock:
            return list(self._containers.values())


def _bucket(seconds: float) -> int:
    """The index of the latency bucket `seconds` falls in (the last: +Inf)."""
    for index, bound in enumerate(LATENCY_BUCKETS_S):
        if seconds <= bound:
            return index
    return len(LATENCY_BUCKETS_S)
