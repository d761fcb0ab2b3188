"""tests/vm/: the cgroup v2 VM lane (build.py, run.py) and tests of its guest.

The tests here describe the guest machine itself, so they are collected only inside it
(run.py sets CGROUPFS_IN_VM=1); on the host, `make test` skips this directory's tests.
"""

import os

if os.environ.get("CGROUPFS_IN_VM") != "1":
    collect_ignore_glob = ["test_*.py"]
