"""Watch the Docker engine and put the cgroupfs files into every running container.

One thread follows the engine's event stream; a small pool does the injections so
a slow container never delays the next start event.  On every (re)connection the
thread first subscribes to events, then walks all running containers, so a
container started in between is seen at least once (injecting twice is harmless:
the second pass finds the files present).  While Docker is down or its socket is
gone, the thread retries with backoff; the filesystem never waits on any of this.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import requests.exceptions
from docker.types.daemon import CancellableStream

from cgroupfs.cgroups.membership import CgroupPaths, read_proc_cgroup
from cgroupfs.errors import CgroupfsError, ProcessGone
from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs_daemon import inject
from cgroupfs_daemon.options import DEFAULT_DOCKER_HOST
from cgroupfs_daemon.stats import ContainerInfo, DaemonStats
from cgroupfs_daemon.views import Views

log = logging.getLogger("cgroupfs.docker")

OPT_OUT_LABEL = "cgroupfs.inject"
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 5.0
API_TIMEOUT_S = 10
# Injections mostly wait in the kernel (each mount change waits out an RCU grace
# period), so more workers than cpus overlap those waits.
WORKERS = 8
# A file that failed (a transient kernel or FUSE error) is tried again after these.
RETRY_DELAYS_S = (0.1, 0.5)
# Everything the SDK raises when the engine is down, restarting or its socket gone.
CONNECTION_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def opted_out(labels: dict[str, str] | None) -> bool:
    return (labels or {}).get(OPT_OUT_LABEL, "").strip().lower() in ("false", "0", "no", "off")


def init_cgroup(pid: int) -> CgroupPaths | None:
    """The cgroups of the container's init (the metrics exporter names the container after them)."""
    try:
        return read_proc_cgroup(pid)
    except (CgroupfsError, OSError):  # gone or exiting: nothing to label
        return None


class DockerWatcher:
    def __init__(self, mountpoint: str, docker_host: str | None = None, stats: DaemonStats | None = None,
                 views: Views | None = None):
        self.mountpoint = os.path.abspath(mountpoint)
        # With views, each container gets its own directory of the views mount (read from
        # the page cache); without, the shared per-reader files of `mountpoint`.
        self.views = views
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.stats = stats if stats is not None else DaemonStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Its threads start with the first injection.
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="inject")
        self._events: CancellableStream | None = None  # the open event stream, closed by stop() to wake the thread
        self._client: docker.DockerClient | None = None
        self._container_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._ours: dict[str, dict[str, tuple[str, str]]] = {}  # mount point -> inject.own_identities()
        # Set once the first check of every running container has finished (or Docker
        # could not be reached): the engine-agnostic heal (heal_all.py) waits for it, so
        # the two do not heal the same containers at once.
        self.first_sweep_done = threading.Event()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docker-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        events = self._events
        if events is not None:
            try:
                events.close()
            except Exception:  # closing a stream whose socket already died
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    # -- the connection loop --------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        failures = 0
        while not self._stop.is_set():
            try:
                self._connect_and_follow()
                backoff = BACKOFF_INITIAL_S  # the stream ended after a good connection
                failures = 0
            except CONNECTION_ERRORS as exc:
                if self._stop.is_set():  # stop() closed the stream under us
                    break
                failures += 1
                self.first_sweep_done.set()
                # once per outage at warning level, the retries at debug
                (log.warning if failures == 1 else log.debug)(
                    "Docker at %s unavailable (%s); retrying with backoff, the filesystem keeps serving",
                    self.docker_host, exc)
            except Exception:
                failures += 1
                log.exception("Docker watcher failed; reconnecting")
            finally:
                self.stats.docker_connected(False)
                self._events = None
            if failures:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _connect_and_follow(self) -> None:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=API_TIMEOUT_S)
        client = self._client
        client.ping()
        # Subscribe before the walk, so a container starting during the walk is not missed.
        events = client.api.events(decode=True, filters={"type": "container", "event": ["start", "die"]})
        self._events = events
        if self._stop.is_set():
            return
        self.stats.docker_connected(True)
        log.info("connected to Docker at %s; checking every running container", self.docker_host)
        self._sweep(client)
        for event in events:
            if self._stop.is_set():
                return
            container_id = event.get("id") or event.get("Actor", {}).get("ID")
            if not container_id:
                continue
            if event.get("Action") == "start":
                self._pool.submit(self._handle, client, container_id, event.get("timeNano"))
            elif event.get("Action") == "die":
                self._forget(container_id)
                if self.views is not None:
                    self.views.remove(container_id)
        if not self._stop.is_set():
            log.warning("Docker event stream from %s ended; reconnecting", self.docker_host)

    def _sweep(self, client: docker.DockerClient) -> None:
        started = time.monotonic()
        running_ids = {entry["Id"] for entry in client.api.containers(quiet=True)}
        for info in self.stats.containers():
            if info.id not in running_ids:
                self._forget(info.id)
        futures = [self._pool.submit(self._handle, client, container_id, None) for container_id in running_ids]
        if not futures:
            self.first_sweep_done.set()
            return
        remaining = [len(futures)]
        remaining_lock = threading.Lock()

        def one_done(_future) -> None:
            with remaining_lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    log.info("checked %d running containers in %.0f ms", len(futures),
                             (time.monotonic() - started) * 1000)
                    self.first_sweep_done.set()

        for future in futures:
            future.add_done_callback(one_done)

    # -- one container --------------------------------------------------------------

    def _lock_for(self, container_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._container_locks.setdefault(container_id, threading.Lock())

    def _handle(self, client: docker.DockerClient, container_id: str, event_time_ns: int | None) -> None:
        """Inject or heal one container; every outcome logged and counted, none raised."""
        try:
            with self._lock_for(container_id):
                self._handle_locked(client, container_id, event_time_ns)
        except Exception:
            self.stats.injection_failed()
            log.exception("container %s: injection failed unexpectedly", container_id[:12])

    def _handle_locked(self, client: docker.DockerClient, container_id: str, event_time_ns: int | None) -> None:
        short_id = container_id[:12]
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            log.debug("container %s vanished before it could be inspected", short_id)
            self.stats.injection_skipped()
            return
        name = attrs.get("Name", "").lstrip("/") or short_id
        who = f"{name} ({short_id})"
        state = attrs.get("State") or {}
        pid = state.get("Pid") or 0
        if not state.get("Running") or pid <= 0:
            log.info("container %s exited before injection; nothing to do", who)
            self.stats.injection_skipped()
            return
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        cgroup = init_cgroup(pid)
        if cgroup is not None:
            self.stats.container_tracked(ContainerInfo(id=container_id, name=name, image=config.get("Image", ""),
                                                       labels=dict(labels), init_pid=pid, cgroup=cgroup))
        if opted_out(labels):
            log.info("container %s has %s=%s; not injecting", who, OPT_OUT_LABEL, labels[OPT_OUT_LABEL])
            return
        try:
            source, ours = self._source(container_id, pid)
        except ProcessGone:
            log.info("container %s exited before injection; nothing to do", who)
            self.stats.injection_skipped()
            return
        # With views, the per-reader files (bound by `cgroupfs-runtime` or the flags) are ours too.
        per_reader = self._our_identities(self.mountpoint) if self.views is not None else None
        outcomes: dict[str, inject.FileResult] = {}
        for delay in (*RETRY_DELAYS_S, None):
            try:
                results = inject.inject(pid, source, ours=ours, also_ours=per_reader)
            except inject.ContainerGone:
                log.info("container %s exited during injection; nothing to do", who)
                self.stats.injection_skipped()
                self._forget(container_id)
                return
            except inject.InjectionRefused as exc:
                log.error("container %s: not injecting: %s", who, exc)
                self.stats.injection_failed()
                return
            for result in results:  # a retry finds earlier successes "present": keep those
                if result.outcome != "present" or result.target not in outcomes:
                    outcomes[result.target] = result
            failed = [r for r in results if r.outcome == "failed"]
            if not failed or delay is None:
                break
            log.debug("container %s: retrying in %.1f s: %s", who, delay, "; ".join(r.describe() for r in failed))
            time.sleep(delay)
        self._account(who, list(outcomes.values()), event_time_ns)

    def _source(self, container_id: str, pid: int) -> tuple[str, dict[str, tuple[str, str]] | None]:
        """The directory whose files go into the container, and what they look like there."""
        if self.views is None:
            return self.mountpoint, self._our_identities(self.mountpoint)
        directory = self.views.add(container_id, pid)
        # A view's files are its directory's: (device, /<id>/<relative>) of the views mount.
        views = self._our_identities(self.views.mountpoint, {"": ""})
        if views is None:
            return directory, None
        device, root = views[""]
        # os.path.join: with root "/", "/" + "/<id>" would be "//<id>", which normpath keeps.
        return directory, {relative: (device, os.path.normpath(os.path.join(root, container_id, relative)))
                           for relative in CONTAINER_TARGETS}

    def _our_identities(self, mountpoint: str, targets=CONTAINER_TARGETS) -> dict[str, tuple[str, str]] | None:
        # Parsing the host's mountinfo costs a few ms with many containers; our
        # mounts' identities do not change while we serve them.
        if mountpoint not in self._ours:
            try:
                self._ours[mountpoint] = inject.own_identities(mountpoint, targets)
            except OSError:
                return None
        return self._ours[mountpoint]

    def _account(self, who: str, results: list[inject.FileResult], event_time_ns: int | None) -> None:
        failed = [r for r in results if r.outcome == "failed"]
        mounted = [r for r in results if r.outcome == "mounted"]
        healed = [r for r in results if r.outcome == "healed"]
        foreign = [r for r in results if r.outcome == "foreign"]
        since_event = ""
        if event_time_ns:
            since_event = f" {(time.time_ns() - int(event_time_ns)) / 1e6:.1f} ms after its start event"
        if healed:
            (self.stats.heal_failed if failed else self.stats.heal_ok)()
        elif mounted or failed:
            (self.stats.injection_failed if failed else self.stats.injection_ok)()
        if failed:
            log.warning("container %s: %d of %d files not injected: %s", who, len(failed), len(results),
                        "; ".join(r.describe() for r in failed))
        if healed:
            log.info("container %s: healed %d stale files%s", who, len(healed), since_event)
        if mounted:
            log.info("container %s: injected %d files%s", who, len(mounted), since_event)
        if foreign:
            log.info("container %s: left %s alone (another filesystem is mounted there)",
                     who, ", ".join(r.target for r in foreign))
        if not (failed or healed or mounted or foreign):
            log.debug("container %s: files already in place", who)

    # -- what the metrics exporter sees ---------------------------------------------

    def _forget(self, container_id: str) -> None:
        info = self.stats.container(container_id)
        if info is not None:
            # A `docker restart` may already have tracked the new init: keep a live one.
            if info.init_pid > 0 and os.path.exists(f"/proc/{info.init_pid}"):
                return
            self.stats.container_forgotten(info)  # unless the new init was tracked just now
        with self._locks_guard:
            lock = self._container_locks.get(container_id)
            if lock is not None and not lock.locked():
                del self._container_locks[container_id]
