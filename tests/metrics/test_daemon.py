"""The real daemon serves /metrics: lint, its own health, addresses, Prometheus, served cgroups."""

from __future__ import annotations

import os
import socket
import subprocess

from tests.metrics.support import (
    MIB,
    PYTHON,
    REPO,
    SLEEP_FOREVER,
    ids_in,
    promtool_check,
    require,
    start_in,
    stop,
    values,
    wait_for,
)


def read_through(mountpoint: str, *names: str) -> None:
    for name in names:
        with open(os.path.join(mountpoint, name), "rb") as f:
            assert f.read()


def test_daemon_exposition_passes_promtool_and_counts_requests(start_daemon):
    daemon = start_daemon()
    read_through(daemon.mountpoint, "proc/meminfo", "proc/meminfo", "proc/stat", "proc/uptime")
    text = daemon.scrape()
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    [requests] = values(text, "cgroupfs_fuse_requests_total", file="proc/meminfo")
    assert requests >= 2
    [count] = values(text, "cgroupfs_fuse_request_duration_seconds_count", file="proc/meminfo")
    assert count == requests
    [inf_bucket] = values(text, "cgroupfs_fuse_request_duration_seconds_bucket", file="proc/meminfo", le="+Inf")
    assert inf_bucket == count
    assert values(text, "cgroupfs_build_info")[0] == 1
    assert values(text, "cgroupfs_docker_up") == [0]  # --no-docker
    assert values(text, "cgroupfs_containers_tracked") == [0]
    assert values(text, "process_cpu_seconds_total")  # the standard process metrics
    assert values(text, "process_resident_memory_bytes")[0] > 0


def test_daemon_serves_metrics_on_ipv6_loopback(start_daemon):
    require(socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"), "needs IPv6 on loopback")
    daemon = start_daemon("::1")
    assert values(daemon.scrape(), "cgroupfs_build_info")[0] == 1


def test_a_metrics_port_in_use_is_one_clear_error_line(tmp_path):
    require(os.geteuid() == 0, "the daemon needs root")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PYTHON, "-m", "cgroupfs_daemon.cli", "daemon", "--mountpoint", str(mountpoint), "--no-docker",
             "--metrics-address", f"127.0.0.1:{port}"],
            cwd=REPO, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"cgroupfs: metrics address 127.0.0.1:{port} is already in use; choose another with "
        "--metrics-address or turn metrics off with --no-metrics"]
    assert not os.path.ismount(mountpoint)


def test_prometheus_scrapes_the_daemon(start_daemon, prometheus_for):
    daemon = start_daemon()
    prometheus = prometheus_for(daemon.port)
    assert wait_for(lambda: prometheus.target_health() == "up", 30, what="target health up")
    result = wait_for(lambda: prometheus.query('cgroupfs_build_info{job="cgroupfs"}'), 30, what="build info")
    assert [float(r["value"][1]) for r in result] == [1]


def test_a_cgroup_whose_process_read_the_mount_is_exported(start_daemon, make_cgroup, prometheus_for):
    daemon = start_daemon()
    cgroup = make_cgroup("daemon")
    cgroup.set_memory_limit(64 * MIB)
    reader = cgroup.popen(["cat", os.path.join(daemon.mountpoint, "proc/meminfo")], stdout=subprocess.PIPE)
    assert b"MemTotal:          65536 kB" in reader.communicate(timeout=30)[0]
    keeper = start_in(cgroup, SLEEP_FOREVER)
    try:
        text = daemon.scrape()
        assert values(text, "container_spec_memory_limit_bytes", id=cgroup.path) == [67108864]
        assert values(text, "container_processes", id=cgroup.path) == [1]
        prometheus = prometheus_for(daemon.port)
        selector = f'container_spec_memory_limit_bytes{{id="{cgroup.path}"}}'
        result = wait_for(lambda: prometheus.query(selector), 30, what=selector)
        assert [float(r["value"][1]) for r in result] == [67108864]
        assert prometheus.target_health() == "up"
    finally:
        stop(keeper)
    cgroup.remove()
    assert cgroup.path not in ids_in(daemon.scrape())
