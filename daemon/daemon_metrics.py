"""The daemon's own health as metric families (prefix cgroupfs_).

`daemon_families` turns one DaemonStats snapshot into fresh families, a pure function.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from cgroupfs import __version__
from cgroupfs_daemon.stats import LATENCY_BUCKETS_S, StatsSnapshot


def cumulative_buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """DaemonStats keeps a count per bucket (+Inf last); Prometheus wants running totals."""
    bounds = [repr(bound) for bound in LATENCY_BUCKETS_S] + ["+Inf"]
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts):
        running += count
        buckets.append((bound, running))
    return buckets


def daemon_families(stats: StatsSnapshot) -> list[Metric]:
    build = GaugeMetricFamily("cgroupfs_build_info", "cgroupfs version and the Python running it; value is 1.",
                              labels=("version", "python_version"))
    build.add_metric((__version__, platform.python_version()), 1)

    requests = CounterMetricFamily("cgroupfs_fuse_requests_total", "Files opened through the mount, per file.",
                                   labels=("file",))
    for path, count in sorted(stats.requests.items()):
        requests.add_metric((path,), count)

    errors = CounterMetricFamily("cgroupfs_fuse_request_errors_total",
                                 "Opens answered with an error, per file and errno name.", labels=("file", "errno"))
    for (path, errno_name), count in sorted(stats.request_errors.items()):
        errors.add_metric((path, errno_name), count)

    latency = HistogramMetricFamily("cgroupfs_fuse_request_duration_seconds",
                                    "Time to serve an open (resolve, render, cache), per file.", labels=("file",))
    for path, counts in sorted(stats.latency_bucket_counts.items()):
        latency.add_metric((path,), cumulative_buckets(counts), stats.latency_sum_s.get(path, 0.0))

    hits = CounterMetricFamily("cgroupfs_render_cache_hits_total", "Opens answered from the render cache.")
    hits.add_metric((), stats.cache_hits)
    misses = CounterMetricFamily("cgroupfs_render_cache_misses_total", "Opens that rendered the file anew.")
    misses.add_metric((), stats.cache_misses)

    views = GaugeMetricFamily("cgroupfs_views", "Per-container views served now (one per live container).")
    views.add_metric((), stats.views)
    view_renders = CounterMetricFamily("cgroupfs_view_renders_total",
                                       "View files rendered; at most one per file per refresh interval.")
    view_renders.add_metric((), stats.view_renders)
    view_requests = CounterMetricFamily(
        "cgroupfs_view_requests_total", "Requests that reached the views connection (page-cache reads do not).")
    view_requests.add_metric((), stats.view_requests)

    taken_over = GaugeMetricFamily(
        "cgroupfs_connection_taken_over",
        "1 when this instance took the FUSE connection over live from its predecessor (restart or upgrade "
        "without a new mount), 0 when it mounted it.", labels=("connection",))
    for connection in ("cgroupfs", "cgroupfs-views"):
        taken_over.add_metric((connection,), 1 if connection in stats.taken_over else 0)

    sysinfo_calls = CounterMetricFamily(
        "cgroupfs_sysinfo_calls_total", "Containers' sysinfo(2) calls trapped, by outcome: answered (the "
        "container's values), kernel (left to the kernel: its own result), gone (the caller was killed).",
        labels=("outcome",))
    for outcome in ("answered", "kernel", "gone"):
        sysinfo_calls.add_metric((outcome,), stats.sysinfo_calls.get(outcome, 0))
    sysinfo_latency = HistogramMetricFamily("cgroupfs_sysinfo_answer_duration_seconds",
                                            "Time from taking a trapped sysinfo(2) to answering it.")
    if stats.sysinfo_bucket_counts:
        sysinfo_latency.add_metric((), cumulative_buckets(stats.sysinfo_bucket_counts), stats.sysinfo_sum_s)
    sysinfo_listeners = GaugeMetricFamily(
        "cgroupfs_sysinfo_listeners", "seccomp listeners held: one per container process tree the runtime "
        "started (its init, each exec) that is still alive.")
    sysinfo_listeners.add_metric((), stats.sysinfo_listeners)

    fallbacks = CounterMetricFamily("cgroupfs_fallbacks_total",
                                    "Opens answered with the host's file instead, per file and reason.",
                                    labels=("file", "reason"))
    for (path, reason), count in sorted(stats.fallbacks.items()):
        fallbacks.add_metric((path, reason), count)

    injections = CounterMetricFamily("cgroupfs_docker_injections_total",
                                     "Bind mounts of the files into Docker containers, by result.", labels=("result",))
    injections.add_metric(("ok",), stats.injections_ok)
    injections.add_metric(("failed",), stats.injections_failed)
    injections.add_metric(("skipped",), stats.injections_skipped)
    heals = CounterMetricFamily("cgroupfs_docker_heals_total",
                                "Stale bind mounts in containers repaired after a daemon restart, by result.",
                                labels=("result",))
    heals.add_metric(("ok",), stats.heals_ok)
    heals.add_metric(("failed",), stats.heals_failed)

    docker_up = GaugeMetricFamily("cgroupfs_docker_up", "1 when the daemon is connected to the Docker engine.")
    docker_up.add_metric((), 1 if stats.docker_connected else 0)
    tracked = GaugeMetricFamily("cgroupfs_containers_tracked", "Docker containers the daemon knows of.")
    tracked.add_metric((), stats.containers_tracked)
    collector_errors = CounterMetricFamily(
        "cgroupfs_metrics_collector_errors_total",
        "Containers left out of a scrape by an unexpected error (a vanished container is not one).")
    collector_errors.add_metric((), stats.collector_errors)
    return [build, requests, errors, latency, hits, misses, views, view_renders, view_requests, taken_over,
            sysinfo_calls, sysinfo_latency, sysinfo_listeners, fallbacks, injections, heals, docker_up, tracked,
            collector_errors]
