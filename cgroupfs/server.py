"""Content for (file, reader pid): resolution, the short render cache, fallbacks.

Used by the FUSE operations and by `cgroupfs show`.  Single entry point:
`ContentServer.content(path, pid)`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

from cgroupfs.cgroups import CgroupPaths, CgroupReader, Hierarchy, discover, read_proc_cgroup
from cgroupfs.errors import CgroupGone, ParseError, ProcessGone
from cgroupfs.host import HostReader
from cgroupfs.procs import pid_namespace
from cgroupfs.rising import RisingCounters
from cgroupfs.sources import LoadLookup, NamespaceInits, Options, ReaderSources
from cgroupfs.table import FILES, VirtualFile

log = logging.getLogger(__name__)


class Observer(Protocol):
    """What the server reports (the daemon turns it into metrics); all optional."""

    def cache_lookup(self, hit: bool) -> None: ...
    def fallback(self, path: str, reason: str) -> None: ...
    def note_served(self, paths: CgroupPaths) -> None: ...


class _NullObserver:
    def cache_lookup(self, hit: bool) -> None:
        pass

    def fallback(self, path: str, reason: str) -> None:
        pass

    def note_served(self, paths: CgroupPaths) -> None:
        pass


@dataclass
class _Entry:
    expires: float
    value: object


class TtlCache:
    """A dict whose entries expire.

    Expired entries are dropped at least every `sweep_interval_s` (and whenever the
    dict reaches `max_entries`), so its size follows the readers of the last few
    seconds, not every pid and cgroup ever seen: without the sweep, a host where
    containers come and go grew by ~4 KB per container until max_entries.
    """

    def __init__(self, ttl_s: float, max_entries: int = 20_000, sweep_interval_s: float | None = None):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.sweep_interval_s = max(1.0, 10 * ttl_s) if sweep_interval_s is None else sweep_interval_s
        self._entries: dict[object, _Entry] = {}
        self._next_sweep = float("-inf")

    def get(self, key: object, now: float):
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            return None
        return entry.value

    def put(self, key: object, value: object, now: float) -> None:
        if now >= self._next_sweep or len(self._entries) >= self.max_entries:
            # list(): one step under the GIL, so a put() from another thread (the sysinfo
            # responder shares this server with the FUSE loop) cannot change the dict
            # while it is copied; a put lost to the swap is one more miss.
            self._entries = {k: e for k, e in list(self._entries.items()) if e.expires > now}
            self._next_sweep = now + self.sweep_interval_s
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[key] = _Entry(now + self.ttl_s, value)

    def discard(self, key: object) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class ContentServer:
    def __init__(
        self,
        hierarchy: Hierarchy | None = None,
        host: HostReader | None = None,
        options: Options | None = None,
        cache_ttl_s: float = 0.1,
        load_lookup: LoadLookup | None = None,
        observer: Observer | None = None,
    ):
        self.options = options or Options()
        self.hierarchy = hierarchy or discover(self.options.proc_root)
        self.cgroups = CgroupReader(self.hierarchy)
        self.host = host or HostReader(self.options.proc_root)
        self.inits = NamespaceInits(self.options.proc_root)
        self.rising = RisingCounters()
        self.load_lookup = load_lookup
        self.observer = observer or _NullObserver()
        # pid -> CgroupPaths.  A pid is reused only after the pid space wraps, which
        # cannot happen within a TTL this short; a process moved to another cgroup is
        # seen after at most one TTL.
        self._paths = TtlCache(cache_ttl_s)
        self._rendered = TtlCache(cache_ttl_s)
        self.caching = cache_ttl_s > 0
        # The daemon runs in the host's pid namespace (DESIGN: it must, to see callers' pids).
        self.host_pid_namespace = _own_pid_namespace(self.options.proc_root)
        self._logged: set[tuple[str, str]] = set()

    def resolve(self, pid: int, now: float) -> CgroupPaths:
        paths = self._paths.get(pid, now) if self.caching else None
        if paths is None:
            paths = read_proc_cgroup(pid, self.options.proc_root)
            if self.caching:
                self._paths.put(pid, paths, now)
        return paths

    def content(self, path: str, pid: int) -> bytes:
        """What process `pid` reads at `path` (relative, e.g. "proc/meminfo")."""
        virtual = FILES[path]
        now = time.monotonic()
        try:
            paths = self.resolve(pid, now)
        except (ProcessGone, ParseError) as exc:
            # Nobody to tailor the file for: the host's file is the honest answer.
            self._fallback(path, "unresolved", exc)
            return self._host_text(virtual)
        try:
            return self._content_for(virtual, pid, paths, now)
        except CgroupGone:
            # Moved or removed between resolution and rendering: resolve once more and
            # render for where the process is now (under that cgroup's own key).
            self._paths.discard(pid)
            try:
                paths = read_proc_cgroup(pid, self.options.proc_root)
                return self._content_for(virtual, pid, paths, now)
            except (ProcessGone, ParseError, CgroupGone) as exc:
                self._fallback(path, "cgroup_gone", exc)
                return self._host_text(virtual)
        except ProcessGone as exc:
            self._fallback(path, "process_gone", exc)
            return self._host_text(virtual)
        except ParseError as exc:
            self._fallback(path, "parse_error", exc, warn=True)
            return self._host_text(virtual)
        except OSError as exc:
            # A counter file the kernel refuses to read (EIO, EISDIR, ...): like a parse
            # error, the host's file and one log line, not EIO and a traceback per read.
            self._fallback(path, "read_error", exc, warn=True)
            return self._host_text(virtual)

    def _content_for(self, virtual: VirtualFile, pid: int, paths: CgroupPaths, now: float) -> bytes:
        """The text for a reader in `paths`, from the cache when still valid.

        A text is cached under the key of the cgroup it was rendered for, with the
        cgroup's limit files as read just before rendering; it is reused only while
        they still read the same, so no text outlives a change of the limits it was
        computed from (a container's birth: runc's init stats our files before runc
        writes the limits).  Raises CgroupGone, ProcessGone, ParseError, OSError."""
        if self.cgroups.is_root(paths):
            return self._host_text(virtual)
        self.observer.note_served(paths)
        key: tuple = (virtual.path, paths.key())
        if virtual.per_namespace:
            key += (pid_namespace(pid, self.options.proc_root),)
        limits = self.cgroups.limits(paths, virtual.limits) if virtual.limits else ()
        if self.caching:
            cached = self._rendered.get(key, now)
            hit = cached is not None and cached[0] == limits
            self.observer.cache_lookup(hit)
            if hit:
                return cached[1]
        data = virtual.render(self._sources(pid, paths))
        if self.caching:
            self._rendered.put(key, (limits, data), now)
        return data

    def limits_of(self, path: str, paths: CgroupPaths) -> tuple:
        """The limit files that shape `path`'s text for `paths` (see CgroupReader.limits)."""
        virtual = FILES[path]
        return self.cgroups.limits(paths, virtual.limits) if virtual.limits else ()

    def render_for(self, path: str, paths: CgroupPaths, pid: int) -> tuple[tuple, bytes]:
        """A fresh text of `path` for the cgroup `paths`, whoever reads it (a view), with
        the limits it was rendered under.  `pid` is a process of that cgroup (the
        container's init: its pid namespace decides uptime).

        Raises CgroupGone or ProcessGone when the container is gone; a malformed or
        unreadable counter file gives the host's file (counted, logged once)."""
        virtual = FILES[path]
        self.observer.note_served(paths)
        limits = self.limits_of(path, paths)
        try:
            return limits, virtual.render(self._sources(pid, paths))
        except ParseError as exc:
            self._fallback(path, "parse_error", exc, warn=True)
        except OSError as exc:
            self._fallback(path, "read_error", exc, warn=True)
        return limits, self._host_text(virtual)

    def _host_text(self, virtual: VirtualFile) -> bytes:
        """What a host reader gets, and any reader we cannot tailor the file for."""
        return virtual.host_substitute() if virtual.host_substitute else self.host.raw(virtual.host_name)

    def _sources(self, pid: int, paths: CgroupPaths) -> ReaderSources:
        return ReaderSources(
            pid, paths, self.cgroups, self.host, self.inits, self.options,
            load_lookup=self.load_lookup, host_pid_namespace=self.host_pid_namespace, rising=self.rising,
        )

    def _fallback(self, path: str, reason: str, exc: Exception, warn: bool = False) -> None:
        self.observer.fallback(path, reason)
        # Log each kind of failure once per file; a vanished process is routine.
        if (path, reason) not in self._logged:
            self._logged.add((path, reason))
            (log.warning if warn else log.info)("%s: serving the host's file (%s: %s)", path, reason, exc)


def _own_pid_namespace(proc_root: str) -> str | None:
    try:
        return pid_namespace(os.getpid(), proc_root)
    except (ProcessGone, PermissionError):
        return None
