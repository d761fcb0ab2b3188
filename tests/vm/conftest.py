"""tests/vm/: the cgroup v2 VM lane (build.py, run.py) and tests of its guest.

The tests here describe the guest machine itself, so they are collected only inside it
(run.py sets CGROUPFS_IN_VM=1); on the host, `make test` skips this directory's tests.
test_guest_*.py describe the plain guest (guest_init.sh as pid 1, `make test-v2`);
test_systemd_*.py need systemd as pid 1 and are collected only in a VM booted with
`run.py --init systemd` (CGROUPFS_VM_INIT=systemd, `make test-v2-systemd`).
"""

import os

if os.environ.get("CGROUPFS_IN_VM") != "1":
    collect_ignore_glob = ["test_*.py"]
elif os.environ.get("CGROUPFS_VM_INIT") == "systemd":
    collect_ignore_glob = ["test_guest_*.py"]
else:
    collect_ignore_glob = ["test_systemd_*.py"]
