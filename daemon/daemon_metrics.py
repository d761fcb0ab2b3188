"""The daemon's own health as metric families (prefix cgroupfs_).

`copy_stats` takes one consistent copy of DaemonStats under its lock (held for
microseconds: the FUSE loop writes to it on every request); `daemon_families`
turns that copy into fresh families, a pure function.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from cgroupfs import __version__
from cgroupfs_daemon.stats import LATENCY_BUCKETS_S, DaemonStats


@dataclass(frozen=True)
class StatsCopy:
    requests: dict[str, int]
    request_errors: dict[tuple[str, str], int]
    latency_bucket_counts: dict[str, list[int]]
    latency_sum_s: dict[str, float]
    cache_hits: int
    cache_misses: int
    fallbacks: dict[tuple[str, str], int]
    injections_ok: int
    injections_failed: int
    injections_skipped: int
    heals_ok: int
    heals_failed: int
    docker_connected: bool
    containers_tracked: int
    collector_errors: int


def copy_stats(stats: DaemonStats) -> StatsCopy:
    with stats.lock:
        return StatsCopy(
            requests=dict(stats.requests),
            request_errors=dict(stats.request_errors),
            latency_bucket_counts={path: list(counts) for path, counts in stats.latency_bucket_counts.items()},
            latency_sum_s=dict(stats.latency_sum_s),
            cache_hits=stats.cache_hits, cache_misses=stats.cache_misses,
            fallbacks=dict(stats.fallbacks),
            injections_ok=stats.injections_ok, injections_failed=stats.injections_failed,
            injections_skipped=stats.injections_skipped,
            heals_ok=stats.heals_ok, heals_failed=stats.heals_failed,
            docker_connected=stats.docker_connected,
            containers_tracked=len(stats.containers),
            collector_errors=stats.collector_errors,
        )


def cumulative_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """DaemonStats keeps a count per bucket (+Inf last); Prometheus wants running totals."""
    bounds = [repr(bound) for bound in LATENCY_BUCKETS_S] + ["+Inf"]
    buckets, running = [], 0
    for bound, count in zip(bounds, counts):
        running += count
        buckets.append((bound, running))
    return buckets


def daemon_families(copy: StatsCopy) -> list[Metric]:
    build = GaugeMetricFamily("cgroupfs_build_info", "cgroupfs version and the Python running it; value is 1.",
                              labels=("version", "python_version"))
    build.add_metric((__version__, platform.python_version()), 1)

    requests = CounterMetricFamily("cgroupfs_fuse_requests_total", "Files opened through the mount, per file.",
                                   labels=("file",))
    for path, count in sorted(copy.requests.items()):
        requests.add_metric((path,), count)

    errors = CounterMetricFamily("cgroupfs_fuse_request_errors_total",
                                 "Opens answered with an error, per file and errno name.", labels=("file", "errno"))
    for (path, errno_name), count in sorted(copy.request_errors.items()):
        errors.add_metric((path, errno_name), count)

    latency = HistogramMetricFamily("cgroupfs_fuse_request_duration_seconds",
                                    "Time to serve an open (resolve, render, cache), per file.", labels=("file",))
    for path, counts in sorted(copy.latency_bucket_counts.items()):
        latency.add_metric((path,), cumulative_buckets(counts), copy.latency_sum_s.get(path, 0.0))

    hits = CounterMetricFamily("cgroupfs_render_cache_hits_total", "Opens answered from the render cache.")
    hits.add_metric((), copy.cache_hits)
    misses = CounterMetricFamily("cgroupfs_render_cache_misses_total", "Opens that rendered the file anew.")
    misses.add_metric((), copy.cache_misses)

    fallbacks = CounterMetricFamily("cgroupfs_fallbacks_total",
                                    "Opens answered with the host's file instead, per file and reason.",
                                    labels=("file", "reason"))
    for (path, reason), count in sorted(copy.fallbacks.items()):
        fallbacks.add_metric((path, reason), count)

    injections = CounterMetricFamily("cgroupfs_docker_injections_total",
                                     "Bind mounts of the files into Docker containers, by result.", labels=("result",))
    injections.add_metric(("ok",), copy.injections_ok)
    injections.add_metric(("failed",), copy.injections_failed)
    injections.add_metric(("skipped",), copy.injections_skipped)
    heals = CounterMetricFamily("cgroupfs_docker_heals_total",
                                "Stale bind mounts in containers repaired after a daemon restart, by result.",
                                labels=("result",))
    heals.add_metric(("ok",), copy.heals_ok)
    heals.add_metric(("failed",), copy.heals_failed)

    docker_up = GaugeMetricFamily("cgroupfs_docker_up", "1 when the daemon is connected to the Docker engine.")
    docker_up.add_metric((), 1 if copy.docker_connected else 0)
    tracked = GaugeMetricFamily("cgroupfs_containers_tracked", "Docker containers the daemon knows of.")
    tracked.add_metric((), copy.containers_tracked)
    collector_errors = CounterMetricFamily(
        "cgroupfs_metrics_collector_errors_total",
        "Containers left out of a scrape by an unexpected error (a vanished container is not one).")
    collector_errors.add_metric((), copy.collector_errors)
    return [build, requests, errors, latency, hits, misses, fallbacks, injections, heals,
            docker_up, tracked, collector_errors]
