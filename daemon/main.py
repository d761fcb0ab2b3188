"""`cgroupfs daemon`: wire the parts together and serve until signalled.

Order matters: host files are opened before anything is mounted (so the daemon
can never read them through its own mount), components that need the mount start
only once the kernel has completed the FUSE handshake, and everything is stopped
in reverse order after the loop returns.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from dataclasses import dataclass

from cgroupfs.errors import CgroupfsError
from cgroupfs.host import HostReader
from cgroupfs.host.reader import CPU_DIRECTORY, OPTIONAL_PROC_FILES, PROC_FILES, SYS_FILES
from cgroupfs.layout import DEFAULT_MOUNTPOINT
from cgroupfs.server import ContentServer
from cgroupfs.sources import Options
from cgroupfs_daemon import fuse_protocol
from cgroupfs_daemon.docker_watcher import DockerWatcher
from cgroupfs_daemon.fuse_files import PerReaderFiles
from cgroupfs_daemon.fuse_session import Session, mount, mount_source, serve_in_main_thread, unmount
from cgroupfs_daemon.handoff import (
    STATE_NAME,
    Connection,
    HandoffState,
    StateFile,
    abort_connection,
    fuse_name,
    is_fuse_device,
    mounted_device,
    received_descriptors,
    reexec,
    waiting_requests,
)
from cgroupfs_daemon.heal_all import NamespaceHealer
from cgroupfs_daemon.inject import DEFAULT_RUNNER
from cgroupfs_daemon.loadavg_sampler import LoadavgSampler
from cgroupfs_daemon.metrics import MetricsError, MetricsServer
from cgroupfs_daemon.mount import MountError, fuse_covered, prepare_mountpoint
from cgroupfs_daemon.notify import Notifier
from cgroupfs_daemon.runtime_containers import RuntimeContainers
from cgroupfs_daemon.state import StateWriter
from cgroupfs_daemon.stats import DaemonStats
from cgroupfs_daemon.sysinfo_responder import (
    IN_HAND_NAME,
    LISTENER_PREFIX,
    SOCKET_NAME,
    SysinfoError,
    SysinfoResponder,
)
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
    host_uptime: bool = False
    # The views mount (daemon/views.py); None: no views, the watcher injects the
    # per-reader files.  Default: the mount point's sibling "<mountpoint>-views".
    views_mountpoint: str | None = ""
    # The socket the runtime wrapper's containers send their seccomp listeners to
    # (daemon/sysinfo_responder.py); None: sysinfo(2) is not answered.
    sysinfo_socket: str | None = None


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (systemd's default soft limit is 1024).

    The daemon holds descriptors per container (the limit files it compares on every
    cached read, a view's files) and uses no select(2), the reason the soft limit is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)


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
        host_paths = ([f"/proc/{name}" for name in PROC_FILES + OPTIONAL_PROC_FILES]
                      + [f"/sys/{path}" for path in SYS_FILES] + [f"/sys/{CPU_DIRECTORY}"])
        covered = fuse_covered(host_paths)
        if covered:
            raise StartupError(f"{', '.join(covered)} is covered by a FUSE mount in the daemon's mount "
                               "namespace; the daemon must read the kernel's own files (unmount it first)")
        raise_open_files_limit()
        try:
            host = HostReader()  # opened now, before our mount exists: never read through it
        except OSError as exc:
            raise StartupError(f"cannot open the host's files: {exc}") from None
        try:
            self.server = ContentServer(
                host=host,
                options=Options(cap_cpus_by_quota=config.cap_cpus_by_quota, host_uptime=config.host_uptime),
                cache_ttl_s=config.cache_ttl_s,
                observer=self.stats,
            )
        except (CgroupfsError, OSError) as exc:
            raise StartupError(f"cannot read the cgroup hierarchy: {exc}") from None
        self.sampler = LoadavgSampler(self.server.cgroups)
        self.server.load_lookup = self.sampler.lookup
        # Connections handed over by a predecessor (daemon/handoff.py), and what it knew.
        self.handed = received_descriptors()
        state_fd = self.handed.pop(STATE_NAME, None)
        self.state_file = StateFile(state_fd)
        self.previous = self.state_file.load() if state_fd is not None else None
        self.handoff = HandoffState(generation=self.previous.generation + 1 if self.previous else 0)
        self.operations = PerReaderFiles(self.server, observer=self.stats, generation=self.handoff.generation)
        self.views: Views | None = None
        if config.views_mountpoint is not None:
            views_mountpoint = os.path.abspath(config.views_mountpoint or self.mountpoint.rstrip("/") + "-views")
            self.views = Views(self.server, views_mountpoint, interval_s=config.cache_ttl_s)
        self.sessions: dict[str, Session] = {}  # subtype -> its connection
        self._startup: threading.Thread | None = None  # starts the components once serving
        self._handoff_preparation: threading.Thread | None = None
        self._handoff_lock = threading.Lock()
        self.views_thread: threading.Thread | None = None
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
                                       docker_host=config.docker_host, metrics_address=config.metrics_address,
                                       sysinfo_socket=config.sysinfo_socket))
        # Last: started once everything else runs (READY=1 means "all up"), stopped first
        # (STOPPING=1 before the rest shuts down).
        self.notifier = Notifier(self.mountpoint, self.stats, docker_enabled=config.docker_host is not None,
                                 loops_busy_for=self._loops_busy_for)
        self.sysinfo = self._sysinfo_responder(config.sysinfo_socket)
        if self.sysinfo is not None:
            self.add_component(self.sysinfo)
        self.add_component(self.notifier)

    def _sysinfo_responder(self, socket_path: str | None) -> SysinfoResponder | None:
        """The sysinfo thread, serving the socket and the listeners handed over (taken
        from self.handed now: what is left there is closed once the mounts are up)."""
        handed_socket = self.handed.pop(SOCKET_NAME, None)
        in_hand = self.handed.pop(IN_HAND_NAME, None)
        listeners = {name: self.handed.pop(name) for name in list(self.handed) if name.startswith(LISTENER_PREFIX)}
        if socket_path is None:
            if listeners:
                log.warning("sysinfo(2) is off (--no-sysinfo): %d containers' listeners handed over are closed; "
                            "their sysinfo(2) now fails with ENOSYS until they restart", len(listeners))
            for fd in [*listeners.values(), *(fd for fd in (handed_socket, in_hand) if fd is not None)]:
                os.close(fd)
            return None
        responder = SysinfoResponder(self.server, os.path.abspath(socket_path), self.stats,
                                     cache_ttl_s=self.config.cache_ttl_s, in_hand=in_hand,
                                     keep=self.notifier.keep_descriptors, forget=self.notifier.forget_descriptors)
        try:
            responder.listen(handed_socket)
        except SysinfoError as exc:
            # Like an unusable state file: the files are served anyway.  New containers
            # find no socket, so the runtime wrapper leaves their sysinfo to the kernel.
            log.error("%s; containers' sysinfo(2) is left to the kernel, serving continues", exc)
        responder.adopt(listeners)
        return responder

    def add_component(self, component) -> None:
        self.components.append(component)

    def _on_mounted(self) -> None:
        # Called inside the FUSE loop during the handshake: must not block it.
        self._startup = threading.Thread(target=self._start_components, name="startup", daemon=True)
        self._startup.start()

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

    # -- connections: mounted afresh, or taken over from a predecessor ------------

    def _connect(self, mountpoint: str, subtype: str, filesystem, wanted_flags: int, on_init=None) -> Session:
        fd = self.handed.pop(fuse_name(subtype), None)
        if fd is not None:
            previous = self.previous.connections.get(subtype) if self.previous else None
            if previous is not None and self._can_take_over(fd, previous, mountpoint, subtype):
                assert self.previous is not None
                session = Session(fd, filesystem, subtype, wanted_flags=wanted_flags,
                                  negotiated=(previous.minor, previous.kernel_flags))
                resent = not self.previous.clean and session.resend_unanswered()
                log.info("took over the live connection at %s from the previous instance%s", mountpoint,
                         " (requests it left unanswered sent again)" if resent else "")
                self.stats.note_takeover(subtype)
                self._remember(session, mountpoint, previous.device)
                return session
            # Not taken over, but alive while anyone holds it (systemd's store may):
            # a stat of the mount point would wait forever.  End it, then mount afresh.
            stale = mounted_device(mountpoint, subtype)
            if stale is not None:
                try:
                    abort_connection(stale)
                except OSError as exc:
                    log.error("aborting the connection handed over for %s failed: %s", mountpoint, exc)
            os.close(fd)
        try:
            prepare_mountpoint(mountpoint)
        except MountError as exc:
            raise StartupError(str(exc)) from None
        session = Session(self._mount(mountpoint, subtype), filesystem, subtype, wanted_flags=wanted_flags)

        def initialised() -> None:
            # In the loop, during the handshake: only bookkeeping, then the caller's hook.
            self._remember(session, mountpoint, mounted_device(mountpoint, subtype))
            if on_init is not None:
                on_init()

        session.on_init = initialised
        return session

    def _can_take_over(self, fd: int, previous: Connection, mountpoint: str, subtype: str) -> bool:
        """Whether the handed-over `fd` still serves the mount at `mountpoint` and no
        reader would wait forever on a request the predecessor took with it."""
        assert self.previous is not None
        if not is_fuse_device(fd) or previous.mountpoint != mountpoint:
            log.warning("the descriptor handed over for %s is not its FUSE connection; mounting afresh", mountpoint)
            return False
        device = mounted_device(mountpoint, subtype)
        if device != previous.device:
            log.warning("%s is no longer the mount of the connection handed over; mounting afresh", mountpoint)
            return False
        if self.previous.clean or previous.kernel_flags & fuse_protocol.HAS_RESEND:
            return True
        try:
            waiting = waiting_requests(device)
        except (OSError, ValueError) as exc:
            waiting, why = -1, str(exc)
        else:
            why = f"{waiting} requests waiting"
        if waiting == 0:
            return True
        # This kernel cannot resend what the dead instance had read: a reader of one of
        # those requests would wait forever.  End the connection; mount and heal instead.
        log.warning("%s: the previous instance died with requests in hand and this kernel cannot send them "
                    "again (%s); aborting the connection, mounting afresh and healing", mountpoint, why)
        return False

    def _remember(self, session: Session, mountpoint: str, device: str | None) -> None:
        """Keep the connection where it outlives this process (systemd's fd store), and
        what a successor needs to serve it, in the state memfd kept beside it."""
        if device is None or session.minor is None or session.kernel_flags is None:
            log.warning("%s: cannot tell which connection is mounted; a restart will mount afresh", mountpoint)
            return
        with self._handoff_lock:
            self.sessions[session.name] = session
            self.handoff.connections[session.name] = Connection(session.name, mountpoint, device, session.minor,
                                                                session.kernel_flags)
        self._save_handoff()
        self.notifier.keep_descriptors({STATE_NAME: self.state_file.fd, fuse_name(session.name): session.fd})

    def _loops_busy_for(self) -> float:
        return max((session.busy_for() for session in list(self.sessions.values())), default=0.0)

    def _save_handoff(self) -> None:
        # One writer at a time: the two loops remember their connections concurrently,
        # and an older snapshot written last would leave a connection out of the state.
        with self._handoff_lock:
            if self.views is not None:
                self.handoff.views = self.views.export()
            try:
                self.state_file.save(self.handoff)
            except OSError as exc:
                log.warning("keeping the state for a successor failed: %s", exc)

    def run(self) -> None:
        views_session = None
        if self.views is not None:
            views_session = self._connect(self.views.mountpoint, "cgroupfs-views", self.views, VIEWS_FLAGS)
            if self.previous is not None and "cgroupfs-views" in self.sessions:
                self.views.restore(self.previous.views)
            self.views.on_change = self._save_handoff
            self.views.attach(views_session)
            views, session_ = self.views, views_session
            self.stats.watch_views(lambda: (len(views), views.renders, session_.requests_served))
        if self.config.docker_host is not None:
            # The watcher's injections enter containers through this helper process;
            # started now so its own start-up overlaps the mount's.  Not fatal: it is
            # started again with the first injection.
            try:
                DEFAULT_RUNNER.start()
            except OSError as exc:
                log.warning("cannot start the namespace helper yet (%s); injection will try again", exc)
        try:
            session = self._connect(self.mountpoint, "cgroupfs", self.operations, fuse_protocol.ASYNC_READ,
                                    on_init=self._on_mounted)
        except StartupError:
            if views_session is not None and self.views is not None:
                unmount(self.views.mountpoint)  # not left behind, dead, by a start that failed
            if self.sysinfo is not None:
                self.sysinfo.close_socket()
            raise
        for stale in self.handed.values():
            os.close(stale)  # handed over but not ours (any more): let them go
        self.handed.clear()
        if session.minor is not None:  # taken over: no handshake will come
            self._on_mounted()
        if views_session is not None:
            # Its own thread: a view is read from the page cache and asks the daemon
            # about once per refresh interval, so this loop is nearly idle.
            self.views_thread = threading.Thread(target=views_session.serve, name="views", daemon=True)
            self.views_thread.start()
        handing_over = False
        try:
            handing_over = serve_in_main_thread(
                session, self.mountpoint, on_sighup=lambda: self._begin_handoff(session, views_session))
        finally:
            if handing_over:
                self._hand_over()
            self._shut_down(views_session)

    def _begin_handoff(self, session: Session, views_session: Session | None) -> None:
        """SIGHUP (in the signal handler): stop everything else while the loops still
        serve (the watcher's checks read through the mounts), then the views loop, then
        the main loop, each between two requests."""
        def prepare() -> None:
            log.info("SIGHUP received: stopping the components, then handing the connections over")
            self.notifier.handing_over = True
            self._stop_components()
            if views_session is not None and self.views is not None:
                self.views.stop()
                views_session.stop()
                if self.views_thread is not None:
                    self.views_thread.join(timeout=30)
            session.stop()

        self._handoff_preparation = threading.Thread(target=prepare, name="handoff", daemon=True)
        self._handoff_preparation.start()

    def _hand_over(self) -> None:
        """Re-execute the installed program with the connections (daemon/handoff.py),
        once _begin_handoff() has stopped everything.  Does not return unless the exec
        fails (then the daemon shuts down as for SIGTERM)."""
        if self._handoff_preparation is not None:
            self._handoff_preparation.join(timeout=60)
        self.handoff.clean = True
        self._save_handoff()
        descriptors = {fuse_name(name): session.fd for name, session in self.sessions.items()}
        descriptors[STATE_NAME] = self.state_file.fd
        if self.sysinfo is not None:
            descriptors.update(self.sysinfo.descriptors())
        self.notifier.send("WATCHDOG=1")  # the successor's first ping comes once it serves
        try:
            reexec(descriptors, dict(os.environ, **self.notifier.saved_environment))
        except OSError as exc:
            log.error("re-executing failed (%s); stopping instead", exc)
            unmount(self.mountpoint)

    def _stop_components(self) -> None:
        if self._startup is not None:
            # A stop or a handoff right after the start: let every component finish starting first.
            self._startup.join(timeout=30)
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", type(component).__name__)
        self.components.clear()
        DEFAULT_RUNNER.stop()

    def _shut_down(self, views_session: Session | None) -> None:
        if views_session is not None and self.views is not None:
            self.views.stop()
            views_session.stop()
            unmount(self.views.mountpoint)
        log.info("unmounted %s; stopping", self.mountpoint)
        # A clean stop: a later start mounts afresh, it does not take these over.
        self.notifier.forget_descriptors([STATE_NAME, *(fuse_name(name) for name in self.sessions)])
        self._stop_components()
        if self.sysinfo is not None:
            # No new container may be given a socket nobody serves.  The listeners stay
            # in the fd store: a `systemctl restart` hands them to the next instance
            # (after a full stop systemd closes them: those containers' sysinfo(2) then
            # fails with ENOSYS, docs in the README).
            self.sysinfo.close_socket()
