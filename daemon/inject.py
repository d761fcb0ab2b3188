"""Put the cgroupfs files over a running container's /proc files, in its mount namespace.

How (DESIGN.md, "Injection into a running container"): in the host mount namespace,
`open_tree(OPEN_TREE_CLONE)` makes a detached mount of each source file (one fd, one
mount) and `mount_setattr` makes it read-only; a forked child then `setns`es into
the container's mount namespace (a multithreaded process cannot: EINVAL) and
`move_mount`s each fd over its target.  The child only makes syscalls and reports
one line per file over a pipe; the parent does all the deciding and logging.

What is already at a target is read from /proc/<pid>/mountinfo, never through the
mount itself where it can be avoided: the daemon must not read its own files.

- our live mount (same device and root as our mount point's file): left alone;
- a mount whose filesystem is dead (stat fails ENOTCONN/EIO: a previous daemon
  died): healed in place, a fresh mount put beneath it (MOVE_MOUNT_BENEATH,
  kernel >= 6.5) and the dead one detached, so readers never see the host file;
  on older kernels the dead one is detached first, then the fresh one mounted;
- anything else mounted there (LXCFS, a user's own -v bind): left alone;
- nothing: mounted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
from dataclasses import dataclass

from cgroupfs.cgroups.hierarchy import unescape_mountinfo
from cgroupfs.layout import CONTAINER_TARGETS

# x86_64 syscall numbers (the same on every other architecture using the generic table).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_BENEATH = 0x200
MOUNT_ATTR_RDONLY = 0x1
CLONE_NEWNS = 0x20000
MNT_DETACH = 2

# errnos that mean "the filesystem behind this mount is gone"
DEAD_MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.EIO, errno.ECONNABORTED})
# what /proc/<pid>/... answers for a process that is gone or exiting (EINVAL: it
# has already left its namespaces)
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH, errno.EINVAL})
# how long the child may take before it is killed (a wedged FUSE mount can hang a path walk)
CHILD_TIMEOUT_S = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


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


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    device: str        # "major:minor"
    root: str          # path inside the filesystem that is mounted
    mount_point: str
    fstype: str


# -- syscalls -----------------------------------------------------------------------


def _check(result: int, what: str, path: str | bytes = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", os.fsdecode(path) if path else None)
    return result


def open_tree_clone(path: str) -> int:
    """A detached, read-only copy of the mount of `path` (a file here), as an fd."""
    encoded = os.fsencode(path)
    fd = _check(_libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(encoded),
                              ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)), "open_tree", path)
    try:
        attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
        _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(fd), ctypes.c_char_p(b""),
                             ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
               "mount_setattr", path)
    except OSError:
        os.close(fd)
        raise
    return fd


def _move_mount(fd: int, target: bytes, flags: int) -> int:
    """0 or an errno; for the child, which must not raise."""
    if _libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | flags)) < 0:
        return ctypes.get_errno() or errno.EIO
    return 0


def _detach(target: bytes) -> int:
    if _libc.umount2(target, MNT_DETACH) != 0:
        return ctypes.get_errno() or errno.EIO
    return 0


# -- reading mount tables -----------------------------------------------------------


def parse_mountinfo(text: str, points: set[str] | None = None) -> list[MountEntry]:
    """Entries of a mountinfo file; only those mounted at `points` when given (faster)."""
    entries = []
    for line in text.splitlines():
        head = line.split(" ", 5)
        if len(head) < 6 or (points is not None and unescape_mountinfo(head[4]) not in points):
            continue
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if not sep or len(fields) < 5:
            continue
        entries.append(MountEntry(
            mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
            root=unescape_mountinfo(fields[3]), mount_point=unescape_mountinfo(fields[4]),
            fstype=after.split()[0] if after else ""))
    return entries


def top_mounts(entries: list[MountEntry]) -> dict[str, MountEntry]:
    """The visible (top-most) mount at each mount point.

    A mount stacked on another at the same path has the lower one as its parent, so
    the top is the one that is no other same-path mount's parent.
    """
    by_point: dict[str, list[MountEntry]] = {}
    for entry in entries:
        by_point.setdefault(entry.mount_point, []).append(entry)
    tops = {}
    for point, stack in by_point.items():
        parents = {entry.parent_id for entry in stack}
        candidates = [entry for entry in stack if entry.mount_id not in parents]
        tops[point] = (candidates or stack)[-1]
    return tops


def source_identities(mountpoint: str, relatives, mountinfo_text: str) -> dict[str, tuple[str, str]]:
    """relative path -> (device, root) that a bind of `mountpoint/relative` shows in mountinfo."""
    base = os.path.realpath(mountpoint)
    holder = None  # the visible mount holding `base`: the longest mount point above it
    for entry in top_mounts(parse_mountinfo(mountinfo_text)).values():
        point = entry.mount_point
        if base == point or base.startswith(point.rstrip("/") + "/"):
            if holder is None or len(point) > len(holder.mount_point):
                holder = entry
    if holder is None:
        raise OSError(errno.ENOENT, "no mount holds", base)
    inside = base[len(holder.mount_point.rstrip("/")):]
    return {relative: (holder.device, os.path.normpath(f"{holder.root.rstrip('/')}{inside}/{relative}"))
            for relative in relatives}


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


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


# -- the injection ------------------------------------------------------------------


def own_identities(mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS) -> dict[str, tuple[str, str]]:
    """What our files look like in a container's mountinfo; fixed while the daemon's mount lives."""
    return source_identities(mountpoint, targets, _read("/proc/self/mountinfo"))


def plan(pid: int, mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS,
         ours: dict[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """target -> action (mount | heal | present | foreign) for a container's init `pid`.

    `ours`: own_identities(), computed once by a caller that injects often.
    """
    try:
        text = _read(f"/proc/{pid}/mountinfo")
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:
            raise ContainerGone(pid) from None
        raise
    container_tops = top_mounts(parse_mountinfo(text, set(targets.values())))
    if ours is None:
        ours = own_identities(mountpoint, targets)
    actions = {}
    for relative, target in targets.items():
        top = container_tops.get(target)
        if top is None:
            actions[target] = "mount"
            continue
        if (top.device, top.root) == ours[relative]:
            actions[target] = "present"
        elif _probe_dead(pid, target) in DEAD_MOUNT_ERRNOS:
            actions[target] = "heal"
        else:
            actions[target] = "foreign"
    return actions


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


def _child(ns_fd: int, jobs: list[tuple[int, bytes, str]], write_fd: int, beneath: bool) -> None:
    """In the forked child: syscalls only, one `index outcome errno` line per job."""
    lines = []
    if _libc.setns(ns_fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno() or errno.EIO
        lines = [f"{index} failed {err}\n" for index in range(len(jobs))]
    else:
        for index, (fd, target, action) in enumerate(jobs):
            if action == "mount":
                err = _move_mount(fd, target, 0)
                outcome = "mounted"
            else:  # heal: fresh mount beneath the dead one, then drop the dead one
                err = _move_mount(fd, target, MOVE_MOUNT_BENEATH) if beneath else errno.EINVAL
                if err == 0:
                    err = _detach(target)
                elif err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                    # no MOVE_MOUNT_BENEATH (kernel < 6.5): detach first; a short window
                    # where readers see the host file, which beats "not connected"
                    err = _detach(target) or _move_mount(fd, target, 0)
                outcome = "healed"
            lines.append(f"{index} {'failed' if err else outcome} {err}\n")
    os.write(write_fd, "".join(lines).encode())


def _run_in_namespace(ns_fd: int, jobs: list[tuple[int, bytes, str]], beneath: bool) -> list[tuple[str, int]]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                os.close(read_fd)
                _child(ns_fd, jobs, write_fd, beneath)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_fd)
        write_fd = -1
        output = b""
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                os.kill(child, signal.SIGKILL)  # our own child, by pid
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            output += chunk
        os.waitpid(child, 0)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    results: list[tuple[str, int]] = [("failed", errno.ETIMEDOUT)] * len(jobs)
    for line in output.decode().splitlines():
        index, outcome, err = line.split()
        results[int(index)] = (outcome, int(err))
    return results


def inject(pid: int, mountpoint: str, targets: dict[str, str] = CONTAINER_TARGETS,
           beneath: bool = True, ours: dict[str, tuple[str, str]] | None = None) -> list[FileResult]:
    """Mount or heal every file in the mount namespace of `pid`; one result per target.

    `ours`: see plan().  `beneath=False` heals the old way (detach, then mount) even where the kernel has
    MOVE_MOUNT_BENEATH; the tests use it to cover kernels older than 6.5.
    Raises ContainerGone when the process is gone (a container that already exited),
    InjectionRefused when `pid` is not in a mount namespace of its own.
    """
    actions = plan(pid, mountpoint, targets, ours)
    results: dict[str, FileResult] = {}
    jobs: list[tuple[int, bytes, str]] = []
    job_targets: list[str] = []
    try:
        for relative, target in targets.items():
            action = actions[target]
            if action in ("present", "foreign"):
                results[target] = FileResult(target, action)
                continue
            try:
                fd = open_tree_clone(os.path.join(mountpoint, relative))
            except OSError as exc:
                results[target] = FileResult(target, "failed", exc.errno or errno.EIO)
                continue
            jobs.append((fd, os.fsencode(target), action))
            job_targets.append(target)
        if jobs:
            ns_fd = _open_namespace(pid)
            try:
                outcomes = _run_in_namespace(ns_fd, jobs, beneath)
            finally:
                os.close(ns_fd)
            for target, (outcome, err) in zip(job_targets, outcomes):
                results[target] = FileResult(target, outcome, err)
    finally:
        for fd, _, _ in jobs:
            os.close(fd)
    if any(r.outcome == "failed" for r in results.values()) and not os.path.exists(f"/proc/{pid}"):
        # failures against a process that has since exited are not failures
        raise ContainerGone(pid)
    return [results[target] for target in targets.values()]
