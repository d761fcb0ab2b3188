"""Fixtures of the reliability suite: real daemons, real cgroups, unique names, full clean-up.

Cgroups are named cgroupfs-rel-<pid>-<n>; mount points live in pytest's temporary
directories.  Every daemon, cgroup and process a test starts is removed when the
test ends, whatever happened (a wedged mount is detached lazily).
"""

from __future__ import annotations

import itertools
import os

import pytest

from testbed.cgroups import TestCgroup
from testbed.daemon_process import DaemonProcess
from tests.conftest import fuse_and_cgroups

_counter = itertools.count()


@pytest.fixture(scope="session")
def hierarchy():
    return fuse_and_cgroups(("memory", "cpu", "cpuset", "pids"))


@pytest.fixture
def make_cgroup(hierarchy):
    """make_cgroup() -> a fresh TestCgroup named cgroupfs-rel-<pid>-<n>, removed afterwards."""
    created: list[TestCgroup] = []

    def make() -> TestCgroup:
        cgroup = TestCgroup(f"cgroupfs-rel-{os.getpid()}-{next(_counter)}", hierarchy)
        created.append(cgroup)
        return cgroup

    yield make
    for cgroup in reversed(created):
        cgroup.remove()


@pytest.fixture
def start_daemon(hierarchy, tmp_path):
    """start_daemon(*extra, mountpoint=None, env=None) -> a serving DaemonProcess; all stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(*extra: str, mountpoint: str | None = None, env: dict | None = None) -> DaemonProcess:
        index = len(started)
        # Its own state file and no configuration file: never touch the host's /run or /etc.
        env = {"CGROUPFS_STATE_FILE": str(tmp_path / f"state{index}.json"),
               "CGROUPFS_CONFIG": str(tmp_path / "no-such-config"), **(env or {})}
        daemon = DaemonProcess(mountpoint or str(tmp_path / f"mnt{index}"), *extra,
                               log_path=str(tmp_path / f"daemon{index}.log"), env=env)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in reversed(started):
        if daemon.process is not None and daemon.process.poll() is None:
            try:
                os.kill(daemon.pid, 18)  # SIGCONT: a test may have left it stopped
            except ProcessLookupError:
                pass
        daemon.stop()


@pytest.fixture(scope="session")
def docker_engine(hierarchy):
    """A private dockerd (testbed/docker_engine.py) with the busybox image; removed at the end."""
    from tests.docker.engine import running_engine

    with running_engine() as engine:
        yield engine


@pytest.fixture
def run_container(docker_engine):
    """run_container(*docker_run_args) -> name (cgroupfs-rel-<pid>-<n>); removed afterwards."""
    created: list[str] = []

    def run(*args: str) -> str:
        name = f"cgroupfs-rel-{os.getpid()}-{next(_counter)}"
        created.append(name)
        docker_engine.cli("run", "-d", "--name", name, "--network", "none", *args)
        return name

    yield run
    if created:
        docker_engine.cli("rm", "-f", *created, check=False)
