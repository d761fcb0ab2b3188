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


@pytest.fixture(scope="package")
def podman():
    require(shutil.which("podman") is not None, "podman is not installed (Debian package podman)")
    engine = Podman()
    try:
        try:
            engine.start()
        except (EngineUnavailable, AssertionError) as exc:
            require(False, f"cannot use a private podman: {exc}")
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture(scope="package")
def containerd():
    require(shutil.which("containerd") is not None, "containerd is not installed (Debian package containerd)")
    engine = Containerd()
    try:
        try:
            engine.start()
        except (EngineUnavailable, AssertionError) as exc:
            require(False, f"cannot start a private containerd: {exc}")
        yield engine
    finally:
        engine.cleanup()
