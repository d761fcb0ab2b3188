"""A views mount for benchmarks: `python -m benchmarks.views_server MOUNTPOINT INTERVAL_MS ID=PID...`.

The daemon adds views for the containers the Docker watcher sees; the benchmarks
have no Docker, so this serves the daemon's own Views and Session (the product code,
nothing else) with one view per ID=PID (the cgroup of PID), until SIGTERM.
"""

from __future__ import annotations

import sys

from cgroupfs.server import ContentServer
from cgroupfs_daemon.fuse_session import Session, mount, serve_in_main_thread
from cgroupfs_daemon.main import VIEWS_FLAGS
from cgroupfs_daemon.mount import prepare_mountpoint
from cgroupfs_daemon.views import Views


def main(argv: list[str]) -> int:
    mountpoint, interval_ms, pairs = argv[0], float(argv[1]), argv[2:]
    prepare_mountpoint(mountpoint)
    views = Views(ContentServer(), mountpoint, interval_s=interval_ms / 1000)
    for pair in pairs:
        view_id, _, pid = pair.partition("=")
        views.add(view_id, int(pid))
    session = Session(mount(mountpoint, "cgroupfs-views", "cgroupfs-views"), views, "bench-views",
                      wanted_flags=VIEWS_FLAGS)
    views.attach(session)
    serve_in_main_thread(session, mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
