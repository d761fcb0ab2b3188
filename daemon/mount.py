"""Mount points: prepare one (recovering a stale mount), check what covers a path.

The connection itself is mounted and served by daemon/fuse_session.py.
"""

from __future__ import annotations

import errno
import logging
import os

from cgroupfs.mountinfo import read_mountinfo
from cgroupfs_daemon.syscalls import detach

log = logging.getLogger(__name__)


class MountError(Exception):
    """The mount point cannot be used; the message is for the operator."""


def mounts_at(path: str, mountinfo_path: str = "/proc/self/mountinfo") -> list[str]:
    """Filesystem types mounted exactly at `path`, oldest first."""
    return [entry.fstype for entry in read_mountinfo(mountinfo_path, mount_points=(path,))]


def fuse_covered(paths: list[str], mountinfo_path: str = "/proc/self/mountinfo") -> list[str]:
    """Those of `paths` that have a FUSE filesystem mounted exactly on them.

    The daemon must read the kernel's own /proc files: if one of them is covered by
    a FUSE file (say a cgroupfs file bind-mounted over the host's /proc/meminfo),
    reading it could route the daemon through a FUSE mount, its own included.
    """
    return [path for path in paths if any(t.startswith("fuse") for t in mounts_at(path, mountinfo_path))]


def lazy_unmount(path: str) -> None:
    err = detach(os.fsencode(path))
    if err not in (0, errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point any more
        raise OSError(err, os.strerror(err), path)


def _detached_if_stale(path: str, exc: OSError) -> bool:
    """Detach the mount at `path` when `exc` says its daemon is dead (ENOTCONN)."""
    if exc.errno != errno.ENOTCONN:
        return False
    log.warning("detaching a stale mount at %s left by a previous instance", path)
    lazy_unmount(path)
    return True


def prepare_mountpoint(path: str) -> None:
    """Make `path` an empty directory nothing is mounted on, or raise MountError.

    A mount left by a dead instance ("Transport endpoint is not connected") is
    detached.  A live one means another daemon is serving: refuse to stack on it.
    """
    path = os.path.abspath(path)
    for _ in range(8):  # a stale mount may hide another stale mount
        try:
            os.stat(path)
        except OSError as exc:
            if _detached_if_stale(path, exc):
                continue
            if exc.errno == errno.ENOENT:
                try:
                    os.makedirs(path, mode=0o755, exist_ok=True)
                except OSError as mkdir_exc:
                    raise MountError(f"cannot create mount point {path}: {mkdir_exc.strerror}") from None
                continue
            raise MountError(f"cannot use mount point {path}: {exc.strerror}") from None
        break
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a directory")
    for _ in range(8):
        fuse_mounts = [t for t in mounts_at(path) if t.startswith("fuse")]
        if not fuse_mounts:
            break
        # stat() may be answered from the kernel's attribute cache; statfs always
        # reaches the server, so it tells a live daemon from a dead one.
        try:
            os.statvfs(path)
        except OSError as exc:
            if _detached_if_stale(path, exc):
                continue
            raise MountError(f"cannot use mount point {path}: {exc.strerror}") from None
        raise MountError(f"{path} is already mounted ({fuse_mounts[-1]}); is another cgroupfs daemon running?")
    if os.listdir(path):
        raise MountError(f"mount point {path} is not empty; refusing to hide its files")
