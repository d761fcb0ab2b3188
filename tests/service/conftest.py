"""Fixtures for the service tests: a notify socket, daemons that are always stopped."""

from __future__ import annotations

import ctypes.util
import os
import uuid

import pytest

from tests.conftest import require  # noqa: F401 (re-exported to the service tests)
from tests.service.harness import NotifyListener, ServiceDaemon


@pytest.fixture
def fuse_host():
    require(os.geteuid() == 0, "needs root (mounts FUSE)")
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    require(ctypes.util.find_library("fuse3") is not None, "needs libfuse3 (Debian package libfuse3-3)")


@pytest.fixture
def notify_socket(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


@pytest.fixture
def abstract_notify_socket():
    listener = NotifyListener(f"@cgroupfs-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()


@pytest.fixture
def daemons(tmp_path, fuse_host):
    """daemons(**kwargs) -> a started ServiceDaemon; every one is stopped and unmounted afterwards."""
    started: list[tuple[ServiceDaemon, tuple[str, ...]]] = []

    def start(name: str = "d", **kwargs) -> ServiceDaemon:
        directory = tmp_path / name
        directory.mkdir()
        extra_mounts = kwargs.pop("extra_mountpoints", ())
        daemon = ServiceDaemon(str(directory), **kwargs)
        started.append((daemon, extra_mounts))
        return daemon.start()

    yield start
    for daemon, extra_mounts in started:
        daemon.cleanup(extra_mounts)
