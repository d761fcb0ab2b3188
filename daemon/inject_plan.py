"""What injection does at each target of a container, decided from mount tables alone.

- our live mount (same device and root as our mount point's file): present, left alone;
- a mount whose filesystem is dead (statfs fails ENOTCONN/EIO: a previous daemon
  died): heal;
- anything else mounted there (LXCFS, a user's own -v bind): foreign, left alone;
- nothing: mount.

Pure: the caller reads the mount tables and passes the one probe that needs the
container (is the filesystem at this target alive?) as a function.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping

from cgroupfs.mountinfo import MountEntry, holder_of, top_mounts

# errnos that mean "the filesystem behind this mount is gone"
DEAD_MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.EIO, errno.ECONNABORTED})

# (device, root): how a bind of one of our files shows in any namespace's mountinfo
Identity = tuple[str, str]


def source_identities(mountpoint: str, relatives: Iterable[str], host_entries: Iterable[MountEntry]
                      ) -> dict[str, Identity]:
    """relative path -> (device, root) that a bind of `mountpoint/relative` shows in mountinfo.

    `mountpoint`: absolute, symlinks resolved; `host_entries`: the mount table it is in.
    """
    holder = holder_of(mountpoint, host_entries)
    if holder is None:
        raise OSError(errno.ENOENT, "no mount holds", mountpoint)
    inside = mountpoint[len(holder.mount_point.rstrip("/")):]
    return {relative: (holder.device, os.path.normpath(f"{holder.root.rstrip('/')}{inside}/{relative}"))
            for relative in relatives}


def decide(container_entries: Iterable[MountEntry], targets: Mapping[str, str], ours: Mapping[str, Identity],
           probe: Callable[[str], int], also_ours: Mapping[str, Identity] | None = None) -> dict[str, str]:
    """target -> mount | heal | present | foreign.

    `targets`: relative path in our mount -> path in the container; `ours`: their
    source_identities(); `also_ours`: other files of ours that count as present (the
    per-reader files `cgroupfs-runtime` binds, where the watcher injects views);
    `probe(target)`: the errno a statfs of `target` in the container fails with, 0
    if it answers; asked only about mounts that are not ours.
    """
    tops = top_mounts(container_entries)
    actions = {}
    for relative, target in targets.items():
        top = tops.get(target)
        if top is None:
            actions[target] = "mount"
        elif (top.device, top.root) == ours[relative] or (
                also_ours is not None and (top.device, top.root) == also_ours.get(relative)):
            actions[target] = "present"
        elif probe(target) in DEAD_MOUNT_ERRNOS:
            actions[target] = "heal"
        else:
            actions[target] = "foreign"
    return actions
