"""daemon.inject on namespaces Docker does not make here: a user namespace (what
dockerd --userns-remap gives a container), the pre-6.5 heal path, and refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs_daemon import inject
from cgroupfs_daemon.inject_runner import NamespaceRunner
from testbed.daemon_process import DaemonProcess
from testbed.docker_checks import injected_targets, memtotal_kb
from testbed.timing import scaled
from tests.conftest import require


@pytest.fixture
def userns_process():
    """A process in its own user namespace (root mapped to root) and mount namespace."""
    unshare = shutil.which("unshare")
    require(unshare is not None, "unshare (util-linux) is not installed")
    process = subprocess.Popen([unshare, "--user", "--map-root-user", "--mount", "--propagation", "private",
                                "sleep", "600"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{process.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare did not enter its namespaces"
            time.sleep(0.01)
        yield process.pid
    finally:
        process.kill()  # our own child, by pid; its namespaces and mounts go with it
        process.wait(timeout=10)


def read_in_namespace(pid: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-U", "-m", "--preserve-credentials", "head", "-n", "100000",
                           path], capture_output=True, text=True, timeout=10)


def test_injects_into_a_mount_namespace_owned_by_a_user_namespace(cgroupfs_daemon, userns_process):
    results = inject.inject(userns_process, cgroupfs_daemon.mountpoint)
    assert {r.target: r.outcome for r in results} == {t: "mounted" for t in CONTAINER_TARGETS.values()}
    assert injected_targets(userns_process, cgroupfs_daemon.mountpoint) == set(CONTAINER_TARGETS.values())
    read = read_in_namespace(userns_process, "/proc/meminfo")
    assert read.returncode == 0, read.stderr
    assert memtotal_kb(read.stdout) > 0
    again = inject.inject(userns_process, cgroupfs_daemon.mountpoint)
    assert {r.outcome for r in again} == {"present"}


def test_heals_by_detaching_first_where_move_mount_beneath_is_missing(engine, cgroupfs_daemon, userns_process):
    old = DaemonProcess(os.path.join(engine.base, "old-mnt"), "--no-docker",
                        log_path=os.path.join(engine.base, "old-cgroupfs.log"))
    try:
        old.start()
        inject.inject(userns_process, old.mountpoint)
        old.kill(signal.SIGKILL)
        dead = read_in_namespace(userns_process, "/proc/meminfo")
        assert dead.returncode != 0 and "not connected" in dead.stderr
        results = inject.inject(userns_process, cgroupfs_daemon.mountpoint, beneath=False)
        assert {r.outcome for r in results} == {"healed"}
        read = read_in_namespace(userns_process, "/proc/meminfo")
        assert read.returncode == 0 and memtotal_kb(read.stdout) > 0, read.stderr
    finally:
        old.stop()


def test_refuses_the_daemons_own_mount_namespace(cgroupfs_daemon):
    with pytest.raises(inject.InjectionRefused):
        inject.inject(os.getpid(), cgroupfs_daemon.mountpoint)
    with open("/proc/self/mountinfo") as f:
        assert " /proc/meminfo " not in f.read()


def test_a_process_that_is_gone_is_reported_as_gone(cgroupfs_daemon):
    process = subprocess.Popen(["true"])
    process.wait()
    with pytest.raises(inject.ContainerGone):
        inject.inject(process.pid, cgroupfs_daemon.mountpoint)


def test_another_filesystem_already_mounted_is_left_alone(cgroupfs_daemon, userns_process, tmp_path):
    own_file = tmp_path / "meminfo"
    own_file.write_text("MemTotal:       1234 kB\n")
    # a user's own bind over /proc/meminfo (e.g. docker run -v myfile:/proc/meminfo)
    subprocess.run(["nsenter", "-t", str(userns_process), "-m", "mount", "--bind", str(own_file), "/proc/meminfo"],
                   check=True)
    results = {r.target: r.outcome for r in inject.inject(userns_process, cgroupfs_daemon.mountpoint)}
    assert results["/proc/meminfo"] == "foreign"
    assert results["/proc/cpuinfo"] == "mounted"
    assert memtotal_kb(read_in_namespace(userns_process, "/proc/meminfo").stdout) == 1234


def test_a_request_lost_with_its_helper_is_made_by_the_next_one(cgroupfs_daemon, userns_process):
    runner = NamespaceRunner()
    try:
        runner.start()
        helper = runner.helper_pid
        with open(f"/proc/{helper}/status") as f:
            assert "Threads:\t1\n" in f.read()  # forks safely: nothing else runs in it
        os.kill(helper, signal.SIGSTOP)  # our runner's helper, by pid
        with ThreadPoolExecutor(max_workers=1) as pool:
            injecting = pool.submit(inject.inject, userns_process, cgroupfs_daemon.mountpoint, runner=runner)
            time.sleep(scaled(0.5))  # the request now waits in the stopped helper's socket
            os.kill(helper, signal.SIGKILL)
            results = injecting.result(timeout=scaled(10))
        assert {r.outcome for r in results} == {"mounted"}
        assert runner.helper_pid not in (None, helper)
        assert injected_targets(userns_process, cgroupfs_daemon.mountpoint) == set(CONTAINER_TARGETS.values())
    finally:
        runner.stop()
