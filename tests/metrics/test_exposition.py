"""Families and the exposition, from fixture trees and hand-made snapshots: names, units, escaping.

(promtool's lint of the same expositions: test_promtool.py.)
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cgroupfs.cgroups.membership import CgroupPaths
from cgroupfs.cgroups.model import CpuStats, MemoryStats
from cgroupfs.errors import ParseError
from cgroupfs_daemon.container_metrics import container_families, docker_label_name
from cgroupfs_daemon.container_snapshot import ContainerSnapshot, SnapshotReader, Target
from cgroupfs_daemon.daemon_metrics import cumulative_buckets, daemon_families
from cgroupfs_daemon.exposition import encode, format_value
from cgroupfs_daemon.metrics import MetricsError, MetricsServer, build_registry, parse_address
from cgroupfs_daemon.stats import LATENCY_BUCKETS_S, ContainerInfo, DaemonStats
from tests.metrics.support import samples, values
from tests.unit.fixture_trees import V2, reader

pytestmark = pytest.mark.unit

MIB = 1 << 20


def v2_exporter(stats: DaemonStats):
    return build_registry(stats, SnapshotReader(reader(V2), proc_root=os.path.join(V2, "proc"), sys_root="/nonexistent"))


def v2_stats() -> DaemonStats:
    """The documented v2 tree: one Docker container, two served cgroups, one vanished."""
    from cgroupfs.cgroups.membership import parse_proc_cgroup

    stats = DaemonStats()
    stats.container_tracked(ContainerInfo(
        id="15m", name="/web", image="nginx:1.25", labels={"com.docker.compose.project": "shop", "tier": "front"},
        cgroup=parse_proc_cgroup("0::/system.slice/docker-15m.scope\n")))
    for path in ("/kubepods/pod1/ctr", "/unlimited", "/vanished.scope"):
        stats.note_served(parse_proc_cgroup(f"0::{path}\n"))
    stats.request("proc/meminfo", 0.0003, None)
    stats.request("proc/meminfo", 0.02, errno.EIO)
    stats.cache_lookup(True)
    return stats


def test_v2_exposition_values_and_cadvisor_conventions():
    stats = v2_stats()
    text = generate_latest(v2_exporter(stats)).decode()
    web = {"id": "/system.slice/docker-15m.scope", "name": "web", "image": "nginx:1.25"}
    assert values(text, "container_spec_memory_limit_bytes", **web) == [15 * MIB]
    assert values(text, "container_memory_working_set_bytes", **web) == [5 * MIB - 1572864]
    assert values(text, "container_memory_rss", **web) == [MIB]
    assert values(text, "container_memory_cache", **web) == [3 * MIB]
    assert values(text, "container_memory_swap", **web) == [4 * MIB]
    assert values(text, "container_oom_events_total", **web) == [1]
    assert values(text, "container_memory_failures_total", failure_type="pgfault", scope="hierarchy", **web) == [1234]
    assert values(text, "container_memory_failures_total", failure_type="pgmajfault", scope="hierarchy", **web) == [5]
    assert values(text, "container_cpu_usage_seconds_total", cpu="total", **web) == [3.0]
    assert values(text, "container_cpu_user_seconds_total", **web) == [2.0]
    assert values(text, "container_cpu_cfs_throttled_periods_total", **web) == [20]
    assert values(text, "container_cpu_cfs_throttled_seconds_total", **web) == [0.4]
    assert values(text, "container_spec_cpu_quota", **web) == [150000]
    assert values(text, "container_fs_writes_bytes_total", device="254:0", **web) == [4194304]
    assert values(text, "container_pressure_memory_waiting_seconds_total", **web) == [0.012345]
    assert values(text, "container_pressure_memory_stalled_seconds_total", **web) == [0.006789]
    # Unlimited: limit 0 (cAdvisor), and no quota/CFS series at all.
    assert values(text, "container_spec_memory_limit_bytes", id="/unlimited", name="", image="") == [0]
    assert values(text, "container_spec_cpu_quota", id="/unlimited") == []
    assert values(text, "container_cpu_cfs_periods_total", id="/unlimited") == []
    assert values(text, "container_spec_cpu_period", id="/unlimited") == [100000]
    # The vanished cgroup is absent, not an error, and forgotten.
    assert values(text, "container_memory_usage_bytes", id="/vanished.scope") == []
    assert [p.v2 for p in stats.served_recently()] == ["/kubepods/pod1/ctr", "/unlimited"]
    assert values(text, "cgroupfs_metrics_collector_errors_total") == [0]
    assert values(text, "cgroupfs_metrics_cgroups") == [3]
    # Docker labels only on the info series.
    [info] = [line for line in text.splitlines() if line.startswith("cgroupfs_container_info{")]
    assert 'container_label_com_docker_compose_project="shop"' in info and 'container_id="15m"' in info
    assert not [line for line in text.splitlines() if line.startswith("container_") and "container_label" in line]


def test_daemon_health_histogram_is_cumulative_and_counts_errors():
    text = generate_latest(v2_exporter(v2_stats())).decode()
    meminfo = {"file": "proc/meminfo"}
    assert values(text, "cgroupfs_fuse_requests_total", **meminfo) == [2]
    assert values(text, "cgroupfs_fuse_request_errors_total", errno="EIO", **meminfo) == [1]
    assert values(text, "cgroupfs_fuse_request_duration_seconds_bucket", le="0.00025", **meminfo) == [0]
    assert values(text, "cgroupfs_fuse_request_duration_seconds_bucket", le="0.0005", **meminfo) == [1]
    assert values(text, "cgroupfs_fuse_request_duration_seconds_bucket", le="0.025", **meminfo) == [2]
    assert values(text, "cgroupfs_fuse_request_duration_seconds_count", **meminfo) == [2]
    assert values(text, "cgroupfs_fuse_request_duration_seconds_sum", **meminfo) == [pytest.approx(0.0203)]
    assert values(text, "cgroupfs_render_cache_hits_total") == [1]
    assert values(text, "cgroupfs_docker_injections_total", result="failed") == [0]
    assert values(text, "cgroupfs_containers_tracked") == [1]
    assert values(text, "cgroupfs_views") == [0]  # no views connection


def test_views_are_counted_when_the_daemon_serves_them():
    stats = v2_stats()
    stats.watch_views(lambda: (3, 24, 57))
    text = generate_latest(v2_exporter(stats)).decode()
    assert values(text, "cgroupfs_views") == [3]
    assert values(text, "cgroupfs_view_renders_total") == [24]
    assert values(text, "cgroupfs_view_requests_total") == [57]


def test_cumulative_buckets_end_with_inf_equal_to_the_count():
    counts = [1] + [0] * (len(LATENCY_BUCKETS_S) - 1) + [2]
    buckets = cumulative_buckets(counts)
    assert buckets[0] == ("5e-05", 1) and buckets[-1] == ("+Inf", 3)
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1


def test_an_unexpected_error_leaves_one_container_out_and_is_counted(monkeypatch):
    stats = v2_stats()
    registry = v2_exporter(stats)
    original = SnapshotReader.read

    def broken_for_unlimited(self, target):
        if target.id == "/unlimited":
            raise ParseError("memory.stat: malformed line 'garbage'")
        return original(self, target)

    monkeypatch.setattr(SnapshotReader, "read", broken_for_unlimited)
    text = generate_latest(registry).decode()
    assert values(text, "container_memory_usage_bytes", id="/unlimited") == []
    assert len(values(text, "container_memory_usage_bytes", id="/kubepods/pod1/ctr")) == 1  # the rest is there
    assert values(text, "cgroupfs_metrics_collector_errors_total") == [1]
    assert "/unlimited" in [p.v2 for p in stats.served_recently()]  # kept: not known to be gone


def _snapshot(memory: MemoryStats | None = None, cpu: CpuStats | None = None) -> ContainerSnapshot:
    return ContainerSnapshot(target=Target("/c", CgroupPaths(v2="/c")), memory=memory, cpu=cpu, io=None,
                             processes=0, threads=0, start_time_s=None)


def test_working_set_never_goes_negative_and_missing_controllers_emit_nothing():
    memory = MemoryStats(limit_bytes=None, usage_bytes=100, swap_limit_bytes=None, swap_usage_bytes=None,
                         inactive_file_bytes=4096)
    families = {f.name: f for f in container_families([_snapshot(memory=memory)])}
    assert families["container_memory_working_set_bytes"].samples[0].value == 0
    assert families["container_spec_memory_limit_bytes"].samples[0].value == 0
    assert "container_oom_events_total" not in families  # no counter in this kernel
    assert "container_cpu_usage_seconds_total" not in families
    assert "container_start_time_seconds" not in families


def test_docker_label_names_are_sanitised_like_cadvisor():
    assert docker_label_name("com.docker.compose.project") == "container_label_com_docker_compose_project"
    assert docker_label_name("a-b/c") == "container_label_a_b_c"


@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1:9477", ("127.0.0.1", 9477)), ("[::1]:9477", ("::1", 9477)),
    ("localhost:0", ("localhost", 0)), (":9477", ("", 9477)),
])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9477", "::1:9477", "[::1]9477", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_address_rejects(address):
    with pytest.raises(MetricsError):
        parse_address(address)


def test_an_address_in_use_is_one_sentence():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"^metrics address 127.0.0.1:{port} is already in use; "):
            MetricsServer(f"127.0.0.1:{port}", DaemonStats(), reader(V2), proc_root=os.path.join(V2, "proc"))


def test_a_stats_snapshot_is_a_copy():
    stats = v2_stats()
    snapshot = stats.snapshot()
    stats.request("proc/meminfo", 0.001, None)
    stats.injection_ok()
    assert snapshot.requests["proc/meminfo"] == 2 and snapshot.injections_ok == 0
    assert stats.snapshot().requests["proc/meminfo"] == 3 and stats.snapshot().injections_ok == 1
    assert (snapshot.containers_tracked, snapshot.cache_hits, snapshot.cache_misses) == (1, 1, 0)
    assert daemon_families(snapshot)[0].name == "cgroupfs_build_info"


def test_the_lean_writer_says_what_prometheus_client_says():
    registry = v2_exporter(v2_stats())
    ours, theirs = samples(encode(registry).decode()), samples(generate_latest(registry).decode())
    volatile = ("process_", "python_gc_", "cgroupfs_metrics_collect_duration_seconds")
    assert {k: v for k, v in ours.items() if not k[0].startswith(volatile)} == \
        {k: v for k, v in theirs.items() if not k[0].startswith(volatile)}
    assert {k[0] for k in ours} == {k[0] for k in theirs}


@pytest.mark.parametrize("value,text", [
    (67108864, "67108864"), (0.4, "0.4"), (3.0, "3"), (float("inf"), "+Inf"), (float("nan"), "NaN"),
    (1e300, "1e+300"), (-2, "-2"),
])
def test_values_are_written_exactly(value, text):
    assert format_value(value) == text


def test_label_values_and_help_are_escaped():
    from prometheus_client.core import GaugeMetricFamily

    class Odd:
        def collect(self):
            family = GaugeMetricFamily("odd", 'help with \\ and\nnewline', labels=("path",))
            family.add_metric(('a"b\\c\nd',), 1)
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Odd())
    text = encode(registry).decode()
    assert 'odd{path="a\\"b\\\\c\\nd"} 1\n' in text
    assert "# HELP odd help with \\\\ and\\nnewline\n" in text
    assert values(text, "odd", path='a"b\\c\nd') == [1]
