"""`cgroupfs` with a FUSE loop that can be wedged on purpose, for the watchdog tests.

    python -m tests.wedged_daemon WEDGE_FILE daemon --mountpoint ... (the `cgroupfs` arguments)

SIGSTOP cannot wedge the loop alone: it stops every thread, the watchdog's too.
Here every file read blocks the FUSE loop while WEDGE_FILE exists; the daemon's
other threads keep running, so a test can see the watchdog pings stop and resume.
The installed program knows nothing of this: the wrapping happens only in this
test entry point, before the real command line runs.
"""

from __future__ import annotations

import os
import sys
import time

from cgroupfs_daemon.cli import main
from cgroupfs_daemon.fuse_files import PerReaderFiles


def wedge_reads(wedge_file: str) -> None:
    """Make every PerReaderFiles.read wait while `wedge_file` exists."""
    read = PerReaderFiles.read

    def wedged_read(self, *args, **kwargs):
        while os.path.lexists(wedge_file):
            time.sleep(0.02)
        return read(self, *args, **kwargs)

    PerReaderFiles.read = wedged_read  # type: ignore[method-assign]


if __name__ == "__main__":
    wedge_reads(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
