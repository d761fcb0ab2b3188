"""The per-reader files with one of the protocol choices undone, for measuring what each buys.

    python -m benchmarks.per_reader_server MOUNTPOINT VARIANT

VARIANT is one of:
- `shipped`: what the daemon does (FOPEN_DIRECT_IO | FOPEN_NOFLUSH; FLUSH answered ENOSYS);
- `no-noflush`: without FOPEN_NOFLUSH: the kernel sends a FLUSH on the first close,
  gets ENOSYS and stops sending them on this connection;
- `flush-answered`: without FOPEN_NOFLUSH and with FLUSH answered 0, as libfuse does for
  a filesystem with a flush handler (mfusepy has one): one more round trip per close.

The product's ContentServer, PerReaderFiles and Session serve; only the open flags and
the FLUSH answer differ.  Runs until SIGTERM.
"""

from __future__ import annotations

import sys

from cgroupfs.server import ContentServer
from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon import fuse_session
from cgroupfs_daemon.fuse_files import PerReaderFiles
from cgroupfs_daemon.mount import prepare_mountpoint

VARIANTS = ("shipped", "no-noflush", "flush-answered")


class WithoutNoflush(PerReaderFiles):
    def open(self, node, flags, caller):
        handle, open_flags = super().open(node, flags, caller)
        return handle, open_flags & ~fp.FOPEN_NOFLUSH


def flush_answered(self: fuse_session.Session, request: fp.Request) -> bytes:
    return b""


def main(argv: list[str]) -> int:
    mountpoint, variant = argv
    if variant not in VARIANTS:
        print(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    files = PerReaderFiles(ContentServer()) if variant == "shipped" else WithoutNoflush(ContentServer())
    if variant == "flush-answered":
        # Only in this benchmark process: the dispatch table gains a FLUSH handler.
        fuse_session._HANDLERS[fp.FLUSH] = flush_answered
    prepare_mountpoint(mountpoint)
    session = fuse_session.Session(fuse_session.mount(mountpoint, "cgroupfs", "cgroupfs"), files,
                                   f"bench-{variant}", wanted_flags=fp.ASYNC_READ)
    fuse_session.serve_in_main_thread(session, mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
