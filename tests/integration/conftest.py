"""Real FUSE mounts and real cgroups on this host (root required)."""

from __future__ import annotations

import ctypes.util
import itertools
import os
import tempfile

import pytest

from cgroupfs.cgroups.hierarchy import discover
from tests.cgroup_helpers import TestCgroup
from tests.conftest import require
from tests.daemon_process import DaemonProcess

_counter = itertools.count()


@pytest.fixture(scope="session")
def hierarchy():
    require(os.geteuid() == 0, "integration tests need root")
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing")
    require(ctypes.util.find_library("fuse3") is not None, "libfuse3 is not installed (Debian: fuse3)")
    h = discover()
    for controller in ("memory", "cpu", "cpuset"):
        require(h.version_of(controller) is not None, f"cgroup controller {controller!r} is not available")
    expected = os.environ.get("CGROUPFS_EXPECT_CGROUP")
    if expected:
        assert h.mode == expected, f"expected a {expected} host, found {h.mode}"
    return h


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="cgroupfs-it-") as directory:
        yield directory


@pytest.fixture(scope="session")
def daemon(hierarchy, workdir):
    process = DaemonProcess(os.path.join(workdir, "mnt"))
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture
def mnt(daemon):
    return daemon.mountpoint


@pytest.fixture
def make_cgroup(hierarchy):
    """make_cgroup() -> a fresh TestCgroup under a unique parent, removed afterwards."""
    created: list[TestCgroup] = []

    def make(name: str | None = None) -> TestCgroup:
        cgroup = TestCgroup(f"cgroupfs-test-{os.getpid()}-{next(_counter)}" + (f"/{name}" if name else ""),
                            hierarchy)
        created.append(cgroup)
        return cgroup

    yield make
    for cgroup in reversed(created):
        cgroup.remove()  # removes its whole subtree, children first

