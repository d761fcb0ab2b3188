"""Put the cgroupfs files over a running container's /proc files, in its mount namespace.

How (../shared/DESIGN.md, "Injection into a running container"): in the host mount namespace,
`open_tree(OPEN_TREE_CLONE)` makes a detached mount of each source file (one fd, one
mount) and `mount_setattr` makes it read-only; the namespace helper (a single-threaded
process of its own, namespace_helper.py) then forks a child that `setns`es into the
container's mount namespace and `move_mount`s each fd over its target.  The child
only makes syscalls and reports one line per file; the daemon does all the deciding
and logging.

What is already at a target is read from /proc/<pid>/mountinfo, never through the
mount itself where it can be avoided: the daemon must not read its own files.  What
to do with it is inject_plan.py's decision (present, heal, foreign, mount).  A dead
mount is healed in place: a fresh mount is put beneath it (MOVE_MOUNT_BENEATH,
kernel >= 6.5) and the dead one detached, so readers never see the host file; on
older kernels the dead one is detached first, then the fresh one mounted.

Modules: syscalls.py (the calls), cgroupfs/mountinfo.py (the tables), inject_plan.py
(the decision), inject_runner.py and namespace_helper.py (the setns half).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs.mountinfo import read_mountinfo
from cgroupfs_daemon.inject_plan import Identity, decide, source_identities
from cgroupfs_daemon.inject_runner import NamespaceRunner
from cgroupfs_daemon.syscalls import open_tree_clone_readonly

# what /proc/<pid>/... answers for a process that is gone or exiting (EINVAL: it
# has already left its namespaces)
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH, errno.EINVAL})

# The runner inject() uses unless given one; its helper starts on first use (the
# daemon starts it early, see main.py).
DEFAULT_RUNNER = NamespaceRunner()


class ContainerGone(Exception):
    """The container's init exited before or while we worked on it: a normal event."""


class InjectionRefused(Exception):
    """Injecting would be wrong (e.g. the target shares the daemon's mount namespace)."""


@dataclass(frozen=True)
class FileResult:
    target: str        # path inside the container, e.g. /proc/meminfo
    outcome: str       # mounted | healed | present | foreign | failed
    error: int = 0     # errno when outcome == "failed"

    @property
    def changed(self) -> bool:
        return self.outcome in ("mounted", "healed")

    def describe(self) -> str:
        if self.outcome == "failed":
            return f"{self.target}: failed ({errno.errorcode.get(self.error, self.error)}: {os.strerror(self.error)})"
        return f"{self.target}: {self.outcome}"


def own_identities(mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS) -> dict[str, Identity]:
    """What our files look like in a container's mountinfo; fixed while the daemon's mount lives."""
    return source_identities(os.path.realpath(mountpoint), targets, read_mountinfo("/proc/self/mountinfo"))


def _probe_dead(pid: int, target: str) -> int:
    """The errno a statfs of `target` in the container fails with; 0 if it answers.

    Only called for a mount that is not ours: a dead daemon's mount answers at once
    with ENOTCONN, another live filesystem answers normally.  statfs, not stat: FUSE
    answers stat from its attribute cache even after the daemon died.
    """
    try:
        os.statvfs(f"/proc/{pid}/root{target}")
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO


def plan(pid: int, mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS,
         ours: dict[str, Identity] | None = None, also_ours: dict[str, Identity] | None = None) -> dict[str, str]:
    """target -> action (mount | heal | present | foreign) for a container's init `pid`.

    `ours`: own_identities(), computed once by a caller that injects often; `also_ours`:
    other files of ours that count as present (inject_plan.decide).
    """
    try:
        entries = read_mountinfo(f"/proc/{pid}/mountinfo", mount_points=set(targets.values()))
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:
            raise ContainerGone(pid) from None
        raise
    if ours is None:
        ours = own_identities(mountpoint, targets)
    return decide(entries, targets, ours, lambda target: _probe_dead(pid, target), also_ours)


def _open_namespace(pid: int) -> int:
    try:
        ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:
            raise ContainerGone(pid) from None
        raise
    # A pid that is not in a container (a race, a bug upstream, --privileged tricks)
    # must never get the host's /proc/meminfo covered: the daemon reads it.
    if os.fstat(ns_fd).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
        os.close(ns_fd)
        raise InjectionRefused(f"pid {pid} shares the daemon's mount namespace")
    return ns_fd


def inject(pid: int, mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS,
           beneath: bool = True, ours: dict[str, Identity] | None = None,
           runner: NamespaceRunner = DEFAULT_RUNNER, also_ours: dict[str, Identity] | None = None
           ) -> list[FileResult]:
    """Mount or heal every file in the mount namespace of `pid`; one result per target.

    `ours`: see plan().  `beneath=False` heals the old way (detach, then mount) even where the kernel has
    MOVE_MOUNT_BENEATH; the tests use it to cover kernels older than 6.5.
    Raises ContainerGone when the process is gone (a container that already exited),
    InjectionRefused when `pid` is not in a mount namespace of its own.
    """
    actions = plan(pid, mountpoint, targets, ours, also_ours)
    results: dict[str, FileResult] = {}
    jobs: list[tuple[int, str, str]] = []  # (detached mount fd, target, action)
    try:
        for relative, target in targets.items():
            action = actions[target]
            if action in ("present", "foreign"):
                results[target] = FileResult(target, action)
                continue
            try:
                fd = open_tree_clone_readonly(os.path.join(mountpoint, relative))
            except OSError as exc:
                results[target] = FileResult(target, "failed", exc.errno or errno.EIO)
                continue
            jobs.append((fd, target, action))
        if jobs:
            ns_fd = _open_namespace(pid)
            try:
                outcomes = runner.run(ns_fd, jobs, beneath)
            finally:
                os.close(ns_fd)
            for (_, target, _), (outcome, err) in zip(jobs, outcomes):
                results[target] = FileResult(target, outcome, err)
    finally:
        for fd, _, _ in jobs:
            os.close(fd)
    if any(r.outcome == "failed" for r in results.values()) and not os.path.exists(f"/proc/{pid}"):
        # failures against a process that has since exited are not failures
        raise ContainerGone(pid)
    return [results[target] for target in targets.values()]
