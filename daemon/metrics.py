"""`/metrics` for Prometheus: per-container resource metrics and the daemon's health.

`MetricsServer` is a daemon component.  Its socket is bound at construction, before
anything is mounted, so an address in use is one clear startup error; start()
serves from a thread of its own, so a scrape never runs on the FUSE loop.  Every
scrape builds fresh families from the collectors in `build_registry` (the one
table of what is exported); a failing container is left out, never the scrape.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from cgroupfs.cgroups import CgroupReader
from cgroupfs.errors import CgroupGone, ProcessGone
from daemon.container_metrics import container_families
from daemon.container_snapshot import SnapshotReader, Target, list_targets
from daemon.daemon_metrics import copy_stats, daemon_families
from daemon.exposition import CONTENT_TYPE, encode
from daemon.stats import DaemonStats

log = logging.getLogger(__name__)


class MetricsError(Exception):
    """The metrics address cannot be served; one sentence for the operator."""


class ContainerCollector:
    """Reads every target's cgroup at each scrape (node_exporter style: its own cost is exported)."""

    def __init__(self, stats: DaemonStats, snapshots: SnapshotReader):
        self.stats = stats
        self.snapshots = snapshots
        self._logged: set[str] = set()

    def targets(self) -> list[Target]:
        with self.stats.lock:
            containers = dict(self.stats.containers)
        return list_targets(self.snapshots.hierarchy, containers, self.stats.served_recently())

    def collect(self):
        started = time.perf_counter()
        snapshots = []
        for target in self.targets():
            try:
                snapshots.append(self.snapshots.read(target))
            except (CgroupGone, ProcessGone):
                # Stopped between listing and reading: a normal event, not an error.
                if target.served:
                    self.stats.forget_served(target.paths)
            except Exception as exc:  # noqa: BLE001 - one container never fails the scrape
                self.stats.collector_error()
                kind = type(exc).__name__
                if kind not in self._logged:  # once per kind: a broken kernel file repeats every scrape
                    self._logged.add(kind)
                    log.warning("metrics: leaving cgroup %s out of the scrape: %s: %s", target.id, kind, exc)
        yield from container_families(snapshots)
        exported = GaugeMetricFamily("cgroupfs_metrics_cgroups", "Cgroups exported in this scrape.")
        exported.add_metric((), len(snapshots))
        yield exported
        duration = GaugeMetricFamily("cgroupfs_metrics_collect_duration_seconds",
                                     "Time this scrape spent reading the cgroups.")
        duration.add_metric((), time.perf_counter() - started)
        yield duration


class DaemonCollector:
    def __init__(self, stats: DaemonStats):
        self.stats = stats

    def collect(self):
        yield from daemon_families(copy_stats(self.stats))


def build_registry(stats: DaemonStats, snapshots: SnapshotReader) -> CollectorRegistry:
    # Containers before the daemon's own: collector errors of this scrape are then counted.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContainerCollector(stats, snapshots))
    registry.register(DaemonCollector(stats))
    ProcessCollector(registry=registry)   # process_cpu_seconds_total, process_resident_memory_bytes, ...
    PlatformCollector(registry=registry)  # python_info
    GCCollector(registry=registry)        # python_gc_*
    return registry


def parse_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" or "[IPV6]:PORT" -> (host, port)."""
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise MetricsError(f"metrics address {address!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise MetricsError(f"metrics address {address!r}: expected HOST:PORT")
        if ":" in host:
            raise MetricsError(f"metrics address {address!r}: write an IPv6 address in brackets, [{host}]:PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise MetricsError(f"metrics address {address!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.partition("?")[0]
        if path == "/metrics":
            try:
                body, status, content_type = encode(self.server.registry), 200, CONTENT_TYPE
            except Exception:  # noqa: BLE001 - a bug in a collector must not kill the server thread
                log.exception("metrics: building the exposition failed")
                body, status, content_type = b"exposition failed; see the daemon log\n", 500, "text/plain"
        elif path == "/":
            body, status, content_type = b'<a href="/metrics">/metrics</a>\n', 200, "text/html"
        else:
            body, status, content_type = b"not found; try /metrics\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - a scrape per second is not news
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scraper never holds up the daemon's exit
    registry: CollectorRegistry


class MetricsServer:
    """A daemon component: start() once the mount is up, stop() at shutdown."""

    def __init__(self, address: str, stats: DaemonStats, cgroups_reader: CgroupReader,
                 proc_root: str = "/proc", sys_root: str = "/sys"):
        self.address = address
        host, port = parse_address(address)
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise MetricsError(f"metrics address {address!r}: cannot resolve {host!r}: {exc.strerror}") from None
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        try:
            self._httpd = server_class(sockaddr, _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsError(f"metrics address {address} is already in use; choose another with "
                                   "--metrics-address or turn metrics off with --no-metrics") from None
            raise MetricsError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
        self._httpd.registry = build_registry(stats, SnapshotReader(cgroups_reader, proc_root, sys_root))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        host, port = self._httpd.server_address[:2]
        log.info("serving metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve_forever that must be running
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
