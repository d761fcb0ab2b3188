"""`cgroupfs daemon`: wire the parts together and serve until signalled.

Order matters: host files are opened before anything is mounted (so the daemon
can never read them through its own mount), components that need the mount start
only once the kernel has completed the FUSE handshake, and everything is stopped
in reverse order after the loop returns.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from cgroupfs.errors import CgroupfsError
from cgroupfs.host import HostReader
from cgroupfs.host.reader import CPU_ONLINE, PROC_FILES
from cgroupfs.layout import DEFAULT_MOUNTPOINT
from cgroupfs.server import ContentServer
from cgroupfs.sources import Options
from cgroupfs_daemon import fuse_protocol
from cgroupfs_daemon.docker_watcher import DockerWatcher
from cgroupfs_daemon.fuse_files import PerReaderFiles
from cgroupfs_daemon.fuse_session import Session, mount, mount_source, serve_in_main_thread, unmount
from cgroupfs_daemon.heal_all import NamespaceHealer
from cgroupfs_daemon.inject import DEFAULT_RUNNER
from cgroupfs_daemon.loadavg_sampler import LoadavgSampler
from cgroupfs_daemon.metrics import MetricsError, MetricsServer
from cgroupfs_daemon.mount import MountError, fuse_covered, prepare_mountpoint
from cgroupfs_daemon.notify import Notifier
from cgroupfs_daemon.runtime_containers import RuntimeContainers
from cgroupfs_daemon.state import StateWriter
from cgroupfs_daemon.stats import DaemonStats
from cgroupfs_daemon.views import Views

log = logging.getLogger("cgroupfs")

# Views are served from the kernel's page cache, which AUTO_INVAL_DATA refreshes
# when a file's mtime or size changes (daemon/views.py).
VIEWS_FLAGS = fuse_protocol.ASYNC_READ | fuse_protocol.AUTO_INVAL_DATA


def docker_host_problem(url: str) -> str | None:
    """Why the Docker SDK cannot use `url` (unix://, tcp://, ssh://...), None when it can."""
    import docker.errors
    import docker.utils

    try:
        docker.utils.parse_host(url, is_win32=False, tls=False)
    except (docker.errors.DockerException, ValueError) as exc:
        return str(exc).rstrip(".")
    return None


class StartupError(Exception):
    """A problem the operator must fix; printed as one sentence, exit status 2."""


@dataclass
class DaemonConfig:
    mountpoint: str = DEFAULT_MOUNTPOINT
    docker_host: str | None = None       # None: --no-docker
    metrics_address: str | None = None   # None: --no-metrics
    cache_ttl_s: float = 0.1
    cap_cpus_by_quota: bool = True
    # The views mount (daemon/views.py); None: no views, the watcher injects the
    # per-reader files.  Default: the mount point's sibling "<mountpoint>-views".
    views_mountpoint: str | None = ""


class Daemon:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.mountpoint = os.path.abspath(config.mountpoint)
        self.stats = DaemonStats()
        if config.docker_host is not None:
            # A malformed address would otherwise be retried, with a traceback, forever.
            problem = docker_host_problem(config.docker_host)
            if problem:
                raise StartupError(f"Docker address {config.docker_host!r} is not usable ({problem}); fix "
                                   "--docker-host or DOCKER_HOST, or turn Docker off with --no-docker")
        host_paths = [f"/proc/{name}" for name in PROC_FILES] + [f"/sys/{CPU_ONLINE}"]
        covered = fuse_covered(host_paths)
        if covered:
            raise StartupError(f"{', '.join(covered)} is covered by a FUSE mount in the daemon's mount "
                               "namespace; the daemon must read the kernel's own files (unmount it first)")
        try:
            host = HostReader()  # opened now, before our mount exists: never read through it
        except OSError as exc:
            raise StartupError(f"cannot open the host's files: {exc}") from None
        try:
            self.server = ContentServer(
                host=host,
                options=Options(cap_cpus_by_quota=config.cap_cpus_by_quota),
                cache_ttl_s=config.cache_ttl_s,
                observer=self.stats,
            )
        except (CgroupfsError, OSError) as exc:
            raise StartupError(f"cannot read the cgroup hierarchy: {exc}") from None
        self.sampler = LoadavgSampler(self.server.cgroups)
        self.server.load_lookup = self.sampler.lookup
        self.operations = PerReaderFiles(self.server, observer=self.stats)
        self.views: Views | None = None
        if config.views_mountpoint is not None:
            views_mountpoint = os.path.abspath(config.views_mountpoint or self.mountpoint.rstrip("/") + "-views")
            self.views = Views(self.server, views_mountpoint, interval_s=config.cache_ttl_s)
        # Started once the mount answers, stopped in reverse order.
        self.components: list = [self.sampler]
        self.mounted = threading.Event()
        self.on_ready: list = []
        if config.metrics_address is not None:
            # Bound here, before anything is mounted: an address in use stops the start-up
            # with one sentence instead of leaving a daemon without its metrics.
            try:
                self.add_component(MetricsServer(config.metrics_address, self.stats, self.server.cgroups))
            except MetricsError as exc:
                raise StartupError(str(exc)) from None
        watcher = None
        if config.docker_host is not None:
            watcher = DockerWatcher(self.mountpoint, config.docker_host, self.stats, views=self.views)
            self.add_component(watcher)
        self.add_component(RuntimeContainers(self.stats, mountpoint=self.mountpoint,
                                             docker_watched=watcher is not None))
        self.add_component(NamespaceHealer(self.mountpoint, self.stats, self.views,
                                           after=watcher.first_sweep_done if watcher is not None else None))
        self.add_component(StateWriter(None, self.stats, mountpoint=self.mountpoint,
                                       docker_host=config.docker_host, metrics_address=config.metrics_address))
        # Last: started once everything else runs (READY=1 means "all up"), stopped first
        # (STOPPING=1 before the rest shuts down).
        self.add_component(Notifier(self.mountpoint, self.stats, docker_enabled=config.docker_host is not None))

    def add_component(self, component) -> None:
        self.components.append(component)

    def _on_mounted(self) -> None:
        # Called inside the FUSE loop during the handshake: must not block it.
        threading.Thread(target=self._start_components, name="startup", daemon=True).start()

    def _start_components(self) -> None:
        self.mounted.set()
        log.info("serving %s (cgroup hierarchy: %s)", self.mountpoint, self.server.hierarchy.mode)
        for component in self.components:
            try:
                component.start()
            except Exception:
                log.exception("starting %s failed; the filesystem keeps serving", type(component).__name__)
        for callback in self.on_ready:
            callback()

    def _mount(self, mountpoint: str, subtype: str) -> int:
        try:
            # A source naming this mount point: a dead mount in a container names the
            # daemon it belonged to (heal_all.py heals only its own).
            return mount(mountpoint, mount_source(mountpoint), subtype)
        except OSError as exc:
            raise StartupError(f"mounting {mountpoint} failed ({exc.strerror})") from None

    def run(self) -> None:
        views_session = None
        try:
            prepare_mountpoint(self.mountpoint)
            if self.views is not None:
                prepare_mountpoint(self.views.mountpoint)
                views_session = Session(self._mount(self.views.mountpoint, "cgroupfs-views"), self.views,
                                        "cgroupfs-views", wanted_flags=VIEWS_FLAGS)
                self.views.attach(views_session)
                views, session = self.views, views_session
                self.stats.watch_views(lambda: (len(views), views.renders, session.requests_served))
        except MountError as exc:
            raise StartupError(str(exc)) from None
        if self.config.docker_host is not None:
            # The watcher's injections enter containers through this helper process;
            # started now so its own start-up overlaps the mount's.  Not fatal: it is
            # started again with the first injection.
            try:
                DEFAULT_RUNNER.start()
            except OSError as exc:
                log.warning("cannot start the namespace helper yet (%s); injection will try again", exc)
        session = Session(self._mount(self.mountpoint, "cgroupfs"), self.operations, "cgroupfs",
                          wanted_flags=fuse_protocol.ASYNC_READ, on_init=self._on_mounted)
        if views_session is not None:
            # Its own thread: a view is read from the page cache and asks the daemon
            # about once per refresh interval, so this loop is nearly idle.
            threading.Thread(target=views_session.serve, name="views", daemon=True).start()
        try:
            serve_in_main_thread(session, self.mountpoint)
        finally:
            if views_session is not None and self.views is not None:
                self.views.stop()
                views_session.stop()
                unmount(self.views.mountpoint)
            log.info("unmounted %s; stopping", self.mountpoint)
            for component in reversed(self.components):
                try:
                    component.stop()
                except Exception:
                    log.exception("stopping %s failed", type(component).__name__)
            DEFAULT_RUNNER.stop()
