"""Fixtures shared by the live metrics tests: an exporter, test cgroups, always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

import pytest

from cgroupfs.cgroups import CgroupReader, discover, read_proc_cgroup
from cgroupfs_daemon.metrics import MetricsServer
from cgroupfs_daemon.stats import DaemonStats
from testbed.daemon_process import detach_daemon_mounts
from tests.metrics.prometheus_server import PrometheusServer
from tests.metrics.support import (
    PROMETHEUS,
    PYTHON,
    REPO,
    LiveCgroup,
    free_port,
    require,
    require_root_cgroups,
    scrape,
    wait_for,
)


@dataclass
class Exporter:
    """MetricsServer in this process; `register` is what the FUSE path does for a reader."""

    server: MetricsServer
    stats: DaemonStats

    @property
    def port(self) -> int:
        return self.server.port

    def register(self, pid: int) -> None:
        self.stats.note_served(read_proc_cgroup(pid))

    def scrape(self) -> str:
        return scrape(self.port)


@pytest.fixture
def exporter():
    stats = DaemonStats()
    server = MetricsServer("127.0.0.1:0", stats, CgroupReader(discover()))
    server.start()
    try:
        yield Exporter(server, stats)
    finally:
        server.stop()


@pytest.fixture
def make_cgroup(request):
    """make_cgroup(suffix) -> LiveCgroup named cgroupfs-metrics-test-<pid>-<suffix>; all removed at the end."""
    hierarchy = require_root_cgroups()
    made: list[LiveCgroup] = []

    def make(suffix: str = "a") -> LiveCgroup:
        cgroup = LiveCgroup(f"cgroupfs-metrics-test-{os.getpid()}-{suffix}", hierarchy)
        made.append(cgroup)
        return cgroup

    try:
        yield make
    finally:
        for cgroup in made:
            cgroup.remove()


@pytest.fixture
def prometheus_for(tmp_path):
    require(os.access(PROMETHEUS, os.X_OK), "prometheus missing (Debian package prometheus)")
    started: list[PrometheusServer] = []

    def start(target_port: int) -> PrometheusServer:
        server = PrometheusServer(str(tmp_path), target_port)
        started.append(server)
        wait_for(server.ready, 60, what="prometheus to be ready")
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class MetricsDaemon:
    """The real `cgroupfs daemon` as a subprocess, with metrics on `address`."""

    def __init__(self, mountpoint: str, address: str, log_path: str, docker_host: str | None = None):
        self.mountpoint = mountpoint
        self.address = address
        self.host, _, port = address.rpartition(":")
        self.host = self.host.strip("[]")
        self.port = int(port)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "cgroupfs_daemon.cli", "daemon", "--mountpoint", mountpoint,
             *(["--docker-host", docker_host] if docker_host else ["--no-docker"]),
             "--metrics-address", address],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited with {self.process.returncode}: {self.log()}")
        try:
            with open(os.path.join(self.mountpoint, "proc/uptime"), "rb") as f:
                f.read()
            scrape(self.port, self.host, timeout=2)
            return True
        except OSError:
            return False

    def scrape(self) -> str:
        return scrape(self.port, self.host)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM; whatever happens, nothing stays mounted."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        detach_daemon_mounts(self.mountpoint)
        self._log.close()


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(host="127.0.0.1") -> a serving MetricsDaemon; stopped and unmounted at the end."""
    require(os.geteuid() == 0, "the daemon needs root")
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    started: list[MetricsDaemon] = []

    def start(host: str = "127.0.0.1") -> MetricsDaemon:
        mountpoint = tmp_path / f"mnt{len(started)}"
        mountpoint.mkdir()
        address = f"[{host}]:{free_port(host)}" if ":" in host else f"{host}:{free_port(host)}"
        daemon = MetricsDaemon(str(mountpoint), address, str(tmp_path / f"daemon{len(started)}.log"))
        started.append(daemon)
        wait_for(daemon.serving, 30, what="the daemon to mount and serve /metrics")
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
