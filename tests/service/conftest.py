"""Fixtures for the service tests: a notify socket, daemons that are always stopped."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import uuid

import pytest

from testbed.oci_bundle import delete_container
from testbed.runtime_engines import runtime_log
from testbed.timing import scaled
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


@pytest.fixture
def runc_host(fuse_host):
    require(shutil.which("runc") is not None, "runc is not installed (Debian package runc)")
    require(os.path.exists("/bin/busybox"), "busybox-static is not installed (Debian package busybox-static)")


@pytest.fixture
def runc_containers(runc_host):
    """run(script, bundle, stdout_path) -> id: a detached container created through the
    runtime `script` (testbed.runtime_engines.write_runtime_script); deleted afterwards."""
    created: list[str] = []

    def run(script: str, bundle: str, stdout: str) -> str:
        container_id = f"cgfs-si-{uuid.uuid4().hex[:10]}"
        created.append(container_id)
        with open(stdout, "ab") as out:
            result = subprocess.run([script, "run", "--detach", "--bundle", bundle, container_id],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                                    timeout=scaled(60))
        if result.returncode != 0:
            with open(runtime_log(os.path.dirname(script)), encoding="utf-8", errors="replace") as f:
                said = f.read()
            raise AssertionError(f"creating {container_id} failed: {result.stderr.decode()} {said}")
        return container_id

    yield run
    for container_id in created:
        delete_container(container_id)
