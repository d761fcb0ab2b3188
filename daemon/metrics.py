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
from cgroupfs_daemon.container_metrics import container_families
from cgroupfs_daemon.container_snapshot import SnapshotReader, Target, list_targets
from cgroupfs_daemon.daemon_metrics import daemon_families
from cgroupfs_daemon.exposition import CONTENT_TYPE, encode
from cgroupfs_daemon.stats import DaemonStats

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
        return list_targets(self.snapshots.hierarchy, self.stats.containers(), self.stats.served_recently())

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
        yield from daemon_families(self.stats.snapshot())


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


# Handler threads at once, and how long a client may make no progress (reading its
# request or taking our response) before it is dropped.
MAX_CONNECTIONS = 8
CLIENT_TIMEOUT_S = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.partition("?")[0]
        if path == "/metrics":
            try:
                body, status, content_type = self.server.exposition(), 200, CONTENT_TYPE
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
    """Bounded: at most MAX_CONNECTIONS handler threads, each dropping a client that makes
    no progress for CLIENT_TIMEOUT_S; further connections wait in the listen backlog.
    One exposition is built at a time, and the requests that arrive while it is built
    share it.  (Every scrape thread competes with the FUSE loop for the GIL: 50 at once
    took the loop's p99 from 4 to 29 ms; 300 idle connections were 300 threads.)
    """

    daemon_threads = True  # a hung scraper never holds up the daemon's exit
    request_queue_size = 64
    registry: CollectorRegistry

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closing = False
        self._build_lock = threading.Lock()
        self._built = 0
        self._body = b""

    def exposition(self) -> bytes:
        """The exposition; a request that waited for a build in progress gets that build's."""
        seen = self._built
        with self._build_lock:
            if self._built != seen:
                return self._body
            body = encode(self.registry)
            self._body, self._built = body, self._built + 1
            return body

    def process_request(self, request, client_address) -> None:
        # Runs in the accept loop: while every slot is busy, stop accepting.
        while not self._slots.acquire(timeout=0.5):
            if self._closing:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A scraper that went away or stalled (timeout, reset): not the daemon's problem.
        log.debug("metrics: connection from %s ended with an error", client_address, exc_info=True)


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
        self._httpd._closing = True  # an accept loop waiting for a free slot gives up
        if self._thread is not None:  # shutdown() waits for a serve_forever that must be running
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
