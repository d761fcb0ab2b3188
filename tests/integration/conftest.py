"""Real FUSE mounts and real cgroups on this host (root required)."""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest

from testbed.cgroups import TestCgroup
from testbed.daemon_process import DaemonProcess
from tests.conftest import fuse_and_cgroups

_counter = itertools.count()


@pytest.fixture(scope="session")
def hierarchy():
    return fuse_and_cgroups()


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

