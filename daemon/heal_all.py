"""Heal our dead mounts in every mount namespace on the host, whatever engine made it.

After the daemon was killed, every file it had put into a container (by the Docker
watcher, the flags or `cgroupfs-runtime`) answers "Transport endpoint is not
connected".  At start-up the new daemon finds them without asking any engine:
one process per mount namespace from /proc, that process's mountinfo at the
eight targets, and a top mount there that is one of ours (its source names our
mount point: fuse_session.mount_source(), so a dead mount of another daemon
instance is not taken for ours) and whose filesystem no longer answers.  Only
those targets are healed (inject.py: a fresh mount beneath the dead one); a
namespace without such a mount is never touched.

A dead view (its root is /<container id>/<file>) is healed with a view of the same
id; a dead per-reader file with the per-reader file.  With the Docker watcher on,
this waits (at most WAIT_FOR_WATCHER_S) for the watcher's first check of every
running container, which heals Docker's containers: the two would otherwise heal
the same containers at once.  Should they still meet, both heal beneath the top
mount and detach it, which leaves one live mount whichever goes first.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs.mountinfo import MountEntry, read_mountinfo, top_mounts
from cgroupfs_daemon import inject
from cgroupfs_daemon.fuse_session import mount_source
from cgroupfs_daemon.inject_plan import DEAD_MOUNT_ERRNOS
from cgroupfs_daemon.stats import DaemonStats
from cgroupfs_daemon.views import VIEW_ID, Views

log = logging.getLogger("cgroupfs.heal")

TARGET_RELATIVE = {target: relative for relative, target in CONTAINER_TARGETS.items()}
WAIT_FOR_WATCHER_S = 10.0


def namespaces(proc_root: str = "/proc") -> dict[int, int]:
    """mount namespace inode -> one process in it (the lowest pid: usually the container's init)."""
    found: dict[int, int] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            inode = os.stat(f"{proc_root}/{entry}/ns/mnt").st_ino
        except OSError:  # gone, or a kernel thread
            continue
        pid = int(entry)
        if inode not in found or pid < found[inode]:
            found[inode] = pid
    return found


def dead_targets(pid: int, sources: set[str]) -> dict[str, MountEntry]:
    """target -> our dead top mount there, in the mount namespace of `pid`."""
    tops = top_mounts(read_mountinfo(f"/proc/{pid}/mountinfo", mount_points=set(TARGET_RELATIVE)))
    dead = {}
    for target, top in tops.items():
        if not top.fstype.startswith("fuse.cgroupfs") or top.source not in sources:
            continue
        try:
            os.statvfs(f"/proc/{pid}/root{target}")
        except OSError as exc:
            if exc.errno in DEAD_MOUNT_ERRNOS:
                dead[target] = top
    return dead


class NamespaceHealer:
    """A component: heals once, in a thread of its own, when the daemon's mount answers."""

    def __init__(self, mountpoint: str, stats: DaemonStats, views: Views | None = None,
                 after: threading.Event | None = None):
        self.mountpoint = os.path.abspath(mountpoint)
        self.views = views
        self.stats = stats
        self.after = after  # the Docker watcher's first sweep, when it runs

    def start(self) -> None:
        threading.Thread(target=self._run, name="heal-namespaces", daemon=True).start()

    def _run(self) -> None:
        if self.after is not None:
            self.after.wait(WAIT_FOR_WATCHER_S)
        self.heal_all()

    def stop(self) -> None:
        pass

    def heal_all(self) -> int:
        """Heal every namespace; the number of namespaces healed."""
        started = time.monotonic()
        sources = {mount_source(self.mountpoint)}
        if self.views is not None:
            sources.add(mount_source(self.views.mountpoint))
        own = os.stat("/proc/self/ns/mnt").st_ino
        healed = 0
        for inode, pid in namespaces().items():
            if inode == own:
                continue
            try:
                dead = dead_targets(pid, sources)
                if dead and self._heal(pid, dead):
                    healed += 1
            except (OSError, inject.ContainerGone, inject.InjectionRefused) as exc:
                log.debug("mount namespace of pid %d: not healed (%s)", pid, exc)
            except Exception:
                log.exception("mount namespace of pid %d: healing failed unexpectedly", pid)
        if healed:
            log.info("healed stale files in %d mount namespaces in %.0f ms", healed,
                     (time.monotonic() - started) * 1000)
        return healed

    def _heal(self, pid: int, dead: dict[str, MountEntry]) -> bool:
        # directory to bind from -> ({relative: target}, our identities there or None: inject reads them)
        jobs: dict[str, tuple[dict[str, str], dict | None]] = {}
        for target, top in dead.items():
            relative = TARGET_RELATIVE[target]
            view_id = top.root.removesuffix("/" + relative).lstrip("/")
            if top.source == mount_source(self.mountpoint) or self.views is None or not VIEW_ID.match(view_id):
                jobs.setdefault(self.mountpoint, ({}, None))[0][relative] = target
                continue
            directory = self.views.add(view_id, pid)
            # A view's files are its directory's: (device, /<id>/<relative>) of the views
            # mount, derived as the Docker watcher does (no path walk through our own mount).
            device, root = inject.own_identities(self.views.mountpoint, {"": ""})[""]
            targets, ours = jobs.setdefault(directory, ({}, {}))
            targets[relative] = target
            assert ours is not None
            ours[relative] = (device, os.path.normpath(f"{root}/{view_id}/{relative}"))
        results = []
        for source, (targets, ours) in jobs.items():
            results += inject.inject(pid, source, targets, ours=ours)
        failed = [r for r in results if r.outcome == "failed"]
        (self.stats.heal_failed if failed else self.stats.heal_ok)()
        if failed:
            log.warning("mount namespace of pid %d: %d of %d stale files not healed: %s", pid, len(failed),
                        len(results), "; ".join(r.describe() for r in failed))
        else:
            log.info("mount namespace of pid %d: healed %d stale files", pid,
                     sum(r.outcome == "healed" for r in results))
        return bool(results) and not failed
