"""A test-only way to wedge the FUSE loop alone, for the watchdog tests.

SIGSTOP cannot do it: it stops every thread, the watchdog's too.  With
$CGROUPFS_TEST_WEDGE_FILE set, every file read served while that file exists
blocks the loop until it is removed; the daemon's other threads keep running, so
a test can see the watchdog pings stop and resume.  Unset (always, outside the
tests) the operations are not touched.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

WEDGE_FILE_ENVIRONMENT = "CGROUPFS_TEST_WEDGE_FILE"


def install_wedge(operations, environ=os.environ) -> bool:
    """Wrap `operations.read` when the variable is set; True if it was."""
    wedge_file = environ.get(WEDGE_FILE_ENVIRONMENT)
    if not wedge_file:
        return False
    log.warning("test hook: reads block the FUSE loop while %s exists", wedge_file)
    read = operations.read

    def wedged_read(*args, **kwargs):
        while os.path.lexists(wedge_file):
            time.sleep(0.02)
        return read(*args, **kwargs)

    # mfusepy looks methods up on the instance for every request.
    operations.read = wedged_read
    return True
