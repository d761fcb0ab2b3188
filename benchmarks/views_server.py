"""A views mount with one view, for benchmarks.reads: `python -m benchmarks.views_server MOUNTPOINT PID`.

The daemon adds views for the containers the Docker watcher sees; the benchmark has no
Docker, so this serves the daemon's own Views and Session (the product code, nothing
else) with one view, "bench", of the cgroup of PID, until SIGTERM.
"""

from __future__ import annotations

import sys

from cgroupfs.server import ContentServer
from cgroupfs_daemon.fuse_session import Session, mount, serve_in_main_thread
from cgroupfs_daemon.main import VIEWS_FLAGS
from cgroupfs_daemon.mount import prepare_mountpoint
from cgroupfs_daemon.views import Views

VIEW_ID = "bench"


def main(argv: list[str]) -> int:
    mountpoint, pid = argv[0], int(argv[1])
    interval_s = float(argv[2]) / 1000 if len(argv) > 2 else 0.1
    prepare_mountpoint(mountpoint)
    views = Views(ContentServer(), mountpoint, interval_s=interval_s)
    views.add(VIEW_ID, pid)
    session = Session(mount(mountpoint, "cgroupfs-views", "cgroupfs-views"), views, "bench-views",
                      wanted_flags=VIEWS_FLAGS)
    views.forget_name = session.forget_name
    serve_in_main_thread(session, mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
