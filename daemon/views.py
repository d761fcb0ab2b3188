"""Views: one directory per container whose files show that container, whoever reads.

Because a view's text does not depend on the reader, the kernel can serve it from
its page cache, and reads never wake the daemon.  The connection answers OPEN with
ENOSYS, so the kernel stops sending OPEN and RELEASE for good and keeps the cached
pages across opens (fs/fuse/file.c: FOPEN_KEEP_CACHE is then its default).  Each
file's attributes are valid for one refresh interval; with AUTO_INVAL_DATA the
kernel asks GETATTR on the first read after that, and drops the cached pages when
the size or mtime we answer changed.  So the daemon renders a view file at most
once per interval, whatever the read rate (../shared/DESIGN.md, "Serving from the
page cache").

A view's text changes only in GETATTR (and LOOKUP): READ serves the text whose size
was last announced, so the kernel's i_size and its pages always come from the same
text.  One exception keeps a container's birth right: when the cgroup's limit
files changed since that text was rendered, READ renders again (runc's init stats
the files before runc writes the limits; the first instruction must not read what
was rendered then).

Layout: <views mount>/<container id>/proc/meminfo ... the per-reader mount's
relative paths under a directory per container.  Views are added by whoever
injects them (the Docker watcher) and removed when the container goes; a view whose
cgroup is gone answers ENOENT and is dropped.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import re
import stat
import threading
import time
from collections.abc import Callable

from cgroupfs.cgroups import CgroupPaths, read_proc_cgroup
from cgroupfs.cgroups.files import parse_cpu_list
from cgroupfs.errors import CgroupGone, ParseError, ProcessGone
from cgroupfs.server import ContentServer
from cgroupfs.table import DIRECTORIES, FILES
from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_files import HOST_ENTRY_TIMEOUT_S, HOST_ONLINE, StaticTree, host_child, host_listing
from cgroupfs_daemon.fuse_session import Caller, Entry, FuseError, Session
from cgroupfs_daemon.host_entries import HOST_NODE_BIT, HostEntries, split_view, with_view

log = logging.getLogger(__name__)

# Container ids as runtimes write them (Docker: 64 hex digits; others: names).
VIEW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# A view's node ids: view number * NODE_STRIDE + the node's id in the static tree
# (its directory is static node 1); for a host entry of the cpu directory, its id
# with the view number in the bits above the entry's (host_entries.with_view).
# Numbers are never reused, so a node id held by the kernel can never name another
# container's file.
NODE_STRIDE = 64
# How long the kernel may remember that a container's directory exists (or not).
VIEW_ENTRY_TIMEOUT_S = 1.0
STATIC_TIMEOUT_S = 3600.0
# How long after its last READ a file counts as read through the page cache.
READ_ACTIVE_S = 10.0

_TREE = StaticTree()
assert len(_TREE.path_of) < NODE_STRIDE


@dataclasses.dataclass
class _Text:
    data: bytes
    limits: tuple
    mtime_ns: int
    rendered_at: float  # monotonic


@dataclasses.dataclass
class View:
    id: str
    number: int
    paths: CgroupPaths
    pid: int  # the container's init, in the daemon's pid namespace
    texts: dict[str, _Text] = dataclasses.field(default_factory=dict)


class Views:
    """The registry of views and the Filesystem (daemon/fuse_session.py) that serves them.

    The watcher threads add and remove views; the views loop reads them: one lock
    around the two dicts, held for dictionary operations only (never while rendering)."""

    def __init__(self, server: ContentServer, mountpoint: str, interval_s: float = 0.1):
        self.server = server
        self.mountpoint = mountpoint
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._by_id: dict[str, View] = {}
        self._by_number: dict[int, View] = {}
        self._next_number = 1
        self._mount_time_ns = time.time_ns()
        self.host_entries = HostEntries(server.host.cpu_directory_fd)
        self.renders = 0
        # The connection serving the views (attach()), once it exists.
        self.session: Session | None = None
        # Texts are rendered by the views loop (GETATTR, READ) and by the refresher.
        self._texts_lock = threading.Lock()
        self._read_at: dict[int, float] = {}     # node -> when the kernel last asked READ
        self._getattr_at: dict[int, float] = {}  # node -> when it last asked GETATTR
        self._stopped = threading.Event()
        # Called after every change of the registry (the daemon keeps it for a successor).
        self.on_change: Callable[[], None] | None = None

    def attach(self, session: Session) -> None:
        """Serve through `session` (the views' Filesystem is `self`); refresh what is
        read from the page cache without GETATTR (see refresh_page_cache_readers)."""
        self.session = session
        threading.Thread(target=self._refresh_loop, name="views-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    # -- the registry ---------------------------------------------------------

    def add(self, view_id: str, pid: int) -> str:
        """Serve a view of the cgroup of `pid` (a container's init) as `view_id`; its directory.

        Raises ProcessGone when the process is gone, ValueError for an unusable id."""
        if not VIEW_ID.match(view_id):
            raise ValueError(f"not a usable view id: {view_id!r}")
        paths = read_proc_cgroup(pid, self.server.options.proc_root)
        with self._lock:
            existing = self._by_id.get(view_id)
            replaced = existing is not None and (existing.paths != paths or existing.pid != pid)
            if existing is None or replaced:
                if existing is not None:
                    del self._by_number[existing.number]
                view = View(view_id, self._next_number, paths, pid)
                self._next_number += 1
                self._by_id[view_id] = self._by_number[view.number] = view
        if replaced:
            self._forget(view_id)
        if existing is None or replaced:
            self._changed()
        return self.directory(view_id)

    def remove(self, view_id: str) -> None:
        """Stop serving a view (its container is gone).  Not from the views loop."""
        if self._drop(view_id):
            self._forget(view_id)
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("keeping the views registry for a successor failed")

    def export(self) -> dict:
        """The registry, for a successor serving the same connection (daemon/handoff.py):
        the kernel keeps the node ids it has seen, so the numbers must not change."""
        with self._lock:
            return {"next_number": self._next_number,
                    "views": [{"id": view.id, "number": view.number, "pid": view.pid,
                               "v1": dict(view.paths.v1), "v2": view.paths.v2} for view in self._by_id.values()]}

    def restore(self, exported: dict) -> None:
        """Take over a predecessor's registry (export()); its numbers are never reused."""
        with self._lock:
            for entry in exported.get("views", []):
                view = View(str(entry["id"]), int(entry["number"]), CgroupPaths(dict(entry["v1"]), entry["v2"]),
                            int(entry["pid"]))
                self._by_id[view.id] = self._by_number[view.number] = view
            self._next_number = max(self._next_number, int(exported.get("next_number", 1)),
                                    max(self._by_number, default=0) + 1)

    def _drop(self, view_id: str) -> bool:
        with self._lock:
            view = self._by_id.pop(view_id, None)
            if view is not None:
                del self._by_number[view.number]
        return view is not None

    def _forget(self, view_id: str) -> None:
        # A removed or replaced view's name must not stay in the kernel's dentry cache
        # (its files' names are cached for an hour), or a container restarted under the
        # same id would be handed the old view's nodes.
        if self.session is not None:
            self.session.forget_name(fp.ROOT_ID, view_id)

    def directory(self, view_id: str) -> str:
        return f"{self.mountpoint.rstrip('/')}/{view_id}"

    def __len__(self) -> int:
        return len(self._by_id)

    def _view(self, node: int) -> tuple[View, int]:
        number, static = split_view(node) if node & HOST_NODE_BIT else divmod(node, NODE_STRIDE)
        with self._lock:
            view = self._by_number.get(number)
        if view is None:
            raise FuseError(errno.ENOENT)
        return view, static

    # -- the Filesystem -------------------------------------------------------

    def is_directory(self, node: int) -> bool:
        if node == fp.ROOT_ID:
            return True
        _view, static = self._view(node)
        if self.host_entries.owns(static):
            return self.host_entries.is_directory(self.host_entries.path(static))
        return _TREE.path(static) in DIRECTORIES

    def visible_cpus(self, view: View) -> tuple[int, ...]:
        """The cpus whose cpuN directories the view shows: what its `online` says."""
        try:
            return parse_cpu_list(self._current(view, HOST_ONLINE, self.interval_s).data.decode("ascii", "replace"))
        except ParseError:
            return ()

    def lookup(self, parent: int, name: str, caller: Caller) -> Entry:
        if parent == fp.ROOT_ID:
            with self._lock:
                view = self._by_id.get(name)
            if view is None:
                raise FuseError(errno.ENOENT)
            node = view.number * NODE_STRIDE + fp.ROOT_ID
            return Entry(self._directory_attributes(node, fp.ROOT_ID), VIEW_ENTRY_TIMEOUT_S, STATIC_TIMEOUT_S)
        view, static = self._view(parent)
        relative = host_child(_TREE, self.host_entries, static, name, lambda: self.visible_cpus(view))
        if relative is not None:
            node = with_view(self.host_entries.node(relative), view.number)
            attributes, timeout_s = self.getattr(node, None, caller)
            # which cpuN directories exist follows the view's limits: valid one interval
            return Entry(attributes, self.interval_s if "/" not in relative else HOST_ENTRY_TIMEOUT_S, timeout_s)
        child, path = _TREE.child(static, name)
        attributes, timeout_s = self.getattr(view.number * NODE_STRIDE + child, None, caller)
        if path in DIRECTORIES:
            return Entry(attributes, STATIC_TIMEOUT_S, timeout_s)
        # A file's name is valid one interval too: an open by path after that looks it
        # up again, and the LOOKUP's fresh attributes refresh the cached pages for
        # readers that never ask GETATTR (sendfile: busybox `cat`).  Inside a container
        # the file is a bind mount's root, which the kernel never looks up again: there
        # a sendfile-only reader sees the text of the last GETATTR (any read(2) or
        # stat of the file refreshes it).
        return Entry(attributes, timeout_s, timeout_s)

    def getattr(self, node: int, fh: int | None, caller: Caller) -> tuple[fp.Attributes, float]:
        if node == fp.ROOT_ID:
            return fp.Attributes(node, stat.S_IFDIR | 0o555, nlink=2, mtime_ns=self._mount_time_ns), 0.0
        view, static = self._view(node)
        if self.host_entries.owns(static):
            attributes = self.host_entries.attributes(node, self.host_entries.path(static))
            return attributes, self.interval_s if stat.S_ISREG(attributes.mode) else HOST_ENTRY_TIMEOUT_S
        path = _TREE.path(static)
        if path in DIRECTORIES:
            return self._directory_attributes(node, static), STATIC_TIMEOUT_S
        text = self._current(view, path, refresh_after_s=self.interval_s)
        self._getattr_at[node] = time.monotonic()
        return fp.Attributes(node, stat.S_IFREG | 0o444, size=len(text.data), mtime_ns=text.mtime_ns), self.interval_s

    def _directory_attributes(self, node: int, static: int) -> fp.Attributes:
        return dataclasses.replace(_TREE.directory_attributes(static, self._mount_time_ns), ino=node)

    def readdir(self, node: int, caller: Caller) -> list[tuple[str, int, int]]:
        if node == fp.ROOT_ID:
            with self._lock:
                views = list(self._by_id.values())
            return [(view.id, view.number * NODE_STRIDE + fp.ROOT_ID, fp.DT_DIR) for view in views]
        view, static = self._view(node)
        listing = host_listing(_TREE, self.host_entries, static, lambda: self.visible_cpus(view))
        return [(name, with_view(child, view.number) if self.host_entries.owns(child)
                 else view.number * NODE_STRIDE + child, kind)
                for name, child, kind in (listing or _TREE.children(static))]

    def readlink(self, node: int) -> bytes:
        _view, static = self._view(node)
        if not self.host_entries.owns(static):
            raise FuseError(errno.EINVAL)
        return self.host_entries.readlink(self.host_entries.path(static))

    def open(self, node: int, flags: int, caller: Caller) -> tuple[int, int]:
        # ENOSYS makes the kernel stop sending OPEN/RELEASE on this connection and
        # serve reads from its page cache (the point of views).  A kernel without
        # no_open (before 4.20; it does not offer NO_OPEN_SUPPORT) would fail the open
        # instead: there, one OPEN round trip per open, keeping the cache.
        kernel_flags = self.session.kernel_flags if self.session is not None else None
        if kernel_flags is None or kernel_flags & fp.NO_OPEN_SUPPORT:
            raise FuseError(errno.ENOSYS)
        return 0, fp.FOPEN_KEEP_CACHE

    def read(self, node: int, fh: int, offset: int, size: int, from_page_cache: bool,
             caller: Caller) -> bytes:
        view, static = self._view(node)
        if self.host_entries.owns(static):
            relative = self.host_entries.path(static)
            # Served from the page cache to whoever reads next (no OPEN to check the
            # reader at): a file the host keeps from other users is kept from all.
            if not self.host_entries.world_readable(relative):
                raise FuseError(errno.EACCES)
            return self.host_entries.read(relative)[offset:offset + size]
        path = _TREE.path(static)
        if path not in FILES:
            raise FuseError(errno.EISDIR)
        text = self._current(view, path, refresh_after_s=None)
        self._read_at[node] = time.monotonic()
        return text.data[offset:offset + size]

    def release(self, node: int, fh: int) -> None:
        pass

    # -- texts ----------------------------------------------------------------

    # -- readers that never ask GETATTR ------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.refresh_page_cache_readers()
            except Exception:
                log.exception("refreshing the views' cached pages failed; retrying next interval")

    def refresh_page_cache_readers(self) -> None:
        """Renew the cached pages of files read through the page cache lately.

        sendfile (busybox `cat`) and mmap read pages without asking GETATTR, and inside
        a container a view file is a bind mount's root, which the kernel never looks up
        again: without this, such readers would see one text forever.  Every interval,
        each file the kernel READ within the last READ_ACTIVE_S gets its new text: the
        kernel drops its pages (the next read asks READ, which marks it active again),
        or, for a text longer than the cached size (which a READ cannot grow), is
        given the new pages with FUSE_NOTIFY_STORE.  A file the kernel asked GETATTR
        about lately has read(2) readers, which the kernel refreshes itself: left alone."""
        session = self.session
        if session is None:
            return
        now = time.monotonic()
        for node, read_at in list(self._read_at.items()):
            if now - read_at > READ_ACTIVE_S:
                self._read_at.pop(node, None)
                self._getattr_at.pop(node, None)
                continue
            if now - self._getattr_at.get(node, float("-inf")) < 2 * self.interval_s:
                continue
            try:
                view, static = self._view(node)
                path = _TREE.path(static)
                old = view.texts.get(path)
                new = self._current(view, path, refresh_after_s=self.interval_s)
            except FuseError:
                self._read_at.pop(node, None)  # the container is gone
                continue
            if old is None or new.mtime_ns == old.mtime_ns:
                continue
            if len(new.data) > len(old.data):
                session.store_contents(node, new.data)
            else:
                session.forget_contents(node)

    def _current(self, view: View, path: str, refresh_after_s: float | None) -> _Text:
        with self._texts_lock:
            return self._current_locked(view, path, refresh_after_s)

    def _current_locked(self, view: View, path: str, refresh_after_s: float | None) -> _Text:
        """The view's text of `path`: rendered again when older than `refresh_after_s`
        (None: only when there is none yet) or when the cgroup's limits changed."""
        text = view.texts.get(path)
        now = time.monotonic()
        try:
            if text is not None and (refresh_after_s is None or now - text.rendered_at < refresh_after_s):
                if text.limits == self.server.limits_of(path, view.paths):
                    return text
            limits, data = self.server.render_for(path, view.paths, view.pid)
        except FileNotFoundError:
            raise FuseError(errno.ENOENT) from None  # a host file this kernel lacks (no PSI)
        except (CgroupGone, ProcessGone):
            log.info("view %s: the container is gone; removing its view", view.id[:12])
            if self._drop(view.id):
                # We may be the views loop: the kernel's entry is dropped from another thread.
                threading.Thread(target=self._forget, args=(view.id,), name="views-forget", daemon=True).start()
            raise FuseError(errno.ENOENT) from None
        self.renders += 1
        if text is not None and text.data == data:
            text.rendered_at, text.limits = now, limits  # same bytes: keep the mtime, keep the pages
        else:
            text = view.texts[path] = _Text(data, limits, time.time_ns(), now)
        return text
