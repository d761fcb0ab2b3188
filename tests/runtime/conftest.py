"""The engines and the daemon of tests/runtime, shared by its modules.

Package-scoped: one private podman and one private containerd for the whole
directory (each costs an image import), removed at its end.  Tests that stop or
kill the daemon start it again before they return.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from testbed.daemon_process import DaemonProcess
from testbed.docker_engine import EngineUnavailable
from testbed.runtime_engines import Containerd, Podman
from tests.conftest import require


@pytest.fixture(scope="package")
def base():
    require(os.geteuid() == 0, "the engines need root")
    directory = tempfile.mkdtemp(prefix="cgfs-rte-", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="package")
def daemon(base):
    """A daemon that knows no engine (--no-docker)."""
    process = DaemonProcess(os.path.join(base, "mnt"), log_path=os.path.join(base, "d.log"))
    try:
        process.start()
        yield process
    finally:
        process.stop()


def private_engine(make_engine, program: str, what: str):
    """Make (`make_engine()`: a testbed engine) and start an engine, yield it, clean it up;
    a missing program or an engine that cannot start is require()d (a failure under CI=true)."""
    require(shutil.which(program) is not None, f"{program} is not installed (Debian package {program})")
    engine = make_engine()
    try:
        try:
            engine.start()
        except (EngineUnavailable, AssertionError) as exc:
            require(False, f"cannot use a private {what}: {exc}")
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture(scope="package")
def podman():
    yield from private_engine(Podman, "podman", "podman")


@pytest.fixture(scope="package")
def containerd():
    yield from private_engine(Containerd, "containerd", "containerd")
