"""Docker tests: a private dockerd, a busybox image, and a real cgroupfs daemon watching it.

No __init__.py here on purpose: a package named `docker` would shadow the Docker SDK.
"""

from __future__ import annotations

import itertools
import os

import pytest

from testbed.daemon_process import DaemonProcess
from tests.conftest import require
from tests.docker.engine import running_engine

_names = itertools.count()
_session_daemon: list[DaemonProcess] = []  # for failure reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the daemon's log: that is where the watcher says what it did."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _session_daemon and "tests/docker" in str(item.fspath):
        report.sections.append(("cgroupfs daemon log (tail)", _session_daemon[0].log()))


@pytest.fixture(scope="session")
def engine():
    require(os.geteuid() == 0, "Docker tests need root")
    with running_engine() as engine:
        yield engine


@pytest.fixture(scope="session")
def cgroupfs_daemon(engine):
    """One daemon for the session; tests that kill it start it again before they end."""
    process = DaemonProcess(os.path.join(engine.base, "mnt"), "--docker-host", engine.host,
                            log_path=os.path.join(engine.base, "cgroupfs.log"))
    _session_daemon.append(process)
    try:
        process.start()
        yield process
    finally:
        process.stop()
        _session_daemon.clear()


@pytest.fixture
def containers(engine, cgroupfs_daemon):
    """run(*docker_run_args, name=None) -> name; every container is removed afterwards."""
    created: list[str] = []

    def run(*args: str, name: str | None = None, detach: bool = True) -> str:
        name = name or f"cgfs-test-{os.getpid()}-{next(_names)}"
        created.append(name)
        engine.cli("run", *(["-d"] if detach else []), "--name", name, "--network", "none", *args)
        return name

    run.created = created
    yield run
    if created:
        engine.cli("rm", "-f", *created, check=False)
