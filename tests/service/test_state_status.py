"""`cgroupfs status` and `version`, and the state file the daemon keeps for them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cgroupfs import __version__
from cgroupfs.cgroups.hierarchy import discover
from cgroupfs_daemon.state import StateWriter, read_state
from cgroupfs_daemon.stats import ContainerInfo, DaemonStats
from tests.service.harness import REPO


def cgroupfs(*argv: str, state_file: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CGROUPFS_")}
    environ.update(PYTHONPATH=REPO, CGROUPFS_STATE_FILE=state_file, CGROUPFS_CONFIG="/nonexistent/cgroupfs")
    return subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", *argv], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=60)


def report(output: str) -> dict[str, str]:
    return {label: text.strip() for label, _, text in (line.partition(":") for line in output.splitlines()[1:])}


def wait_for_file(path: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_status_follows_the_daemon(daemons):
    daemon = daemons()
    daemon.wait_serving()
    wait_for_file(daemon.state_file)
    result = cgroupfs("status", "--mountpoint", daemon.mountpoint, state_file=daemon.state_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"cgroupfs {__version__}"
    lines = report(result.stdout)
    assert lines["mount"] == f"{daemon.mountpoint}: mounted (fuse.cgroupfs), answering"
    assert re.fullmatch(rf"running, pid {daemon.pid}, up \d+s", lines["daemon"])
    assert lines["cgroups"].split()[0] == discover().mode
    assert (lines["containers"], lines["docker"], lines["metrics"]) == ("0", "off (--no-docker)", "off (--no-metrics)")
    socket = os.path.join(os.path.dirname(daemon.state_file), "sysinfo.sock")  # the default, beside the state file
    assert lines["sysinfo"] == f"0 listeners at {socket}; calls answered 0, left to the kernel 0"

    assert daemon.terminate() == 0
    assert not os.path.exists(daemon.state_file)  # removed on a clean stop
    result = cgroupfs("status", "--mountpoint", daemon.mountpoint, state_file=daemon.state_file)
    assert result.returncode == 3
    assert report(result.stdout)["mount"] == f"{daemon.mountpoint}: not mounted"


def test_status_of_a_crashed_daemon(daemons):
    daemon = daemons()
    daemon.wait_serving()
    wait_for_file(daemon.state_file)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)
    result = cgroupfs("status", "--mountpoint", daemon.mountpoint, state_file=daemon.state_file)
    assert result.returncode == 1, result.stdout
    lines = report(result.stdout)
    assert lines["mount"] == (f"{daemon.mountpoint}: mounted (fuse.cgroupfs) but not answering: "
                              "Transport endpoint is not connected")
    assert lines["daemon"] == f"not running (pid {daemon.pid} in {daemon.state_file} is gone)"


@pytest.mark.unit
def test_the_state_file_reports_the_daemons_counters(tmp_path):
    stats = DaemonStats()
    containers = [ContainerInfo("a" * 64, "web", "nginx"), ContainerInfo("b" * 64, "db", "postgres")]
    for info in containers:
        stats.container_tracked(info)
    stats.docker_connected(True)
    for _ in range(16):
        stats.injection_ok()
    stats.injection_failed()
    path = str(tmp_path / "run" / "state.json")
    writer = StateWriter(path, stats, mountpoint="/var/lib/cgroupfs", docker_host="unix:///run/docker.sock",
                         metrics_address="127.0.0.1:9477", interval_s=0.05)
    writer.start()
    state = read_state(path)
    assert state["pid"] == os.getpid() and state["containers"] == 2
    assert state["docker"] == {"enabled": True, "host": "unix:///run/docker.sock", "connected": True}
    assert state["injections"] == {"ok": 16, "failed": 1} and state["metrics_address"] == "127.0.0.1:9477"
    for info in containers:
        stats.container_forgotten(info)
    stats.docker_connected(False)
    time.sleep(0.3)
    assert read_state(path)["containers"] == 0 and read_state(path)["docker"]["connected"] is False
    assert os.listdir(tmp_path / "run") == ["state.json"]  # no temporary files left
    writer.stop()
    assert not os.path.exists(path)

    # Another instance's file is not ours to remove.
    with open(path, "w") as f:
        json.dump({"format": 1, "pid": 1}, f)
    StateWriter(path, stats, mountpoint="/m").stop()
    assert os.path.exists(path)


@pytest.fixture
def run_directory(tmp_path):
    """A small tmpfs standing in for /run, unmounted afterwards."""
    directory = tmp_path / "run"
    directory.mkdir()
    mounted: list[str] = []

    def mount(*options: str) -> str:
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)), "cgroupfs-test",
                        str(directory)], check=True)
        mounted.append(str(directory))
        return str(directory)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", path], check=False)


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_an_unusable_run_directory_is_one_line_and_serving_goes_on(daemons, notify_socket, run_directory, kind):
    if kind == "read-only":
        run = run_directory("ro")
        reason = "Read-only file system"
    else:
        run = run_directory()
        with open(os.path.join(run, "filler"), "wb", buffering=0) as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 4096)
        reason = "No space left on device"
    state_file = os.path.join(run, "cgroupfs", "state.json")
    daemon = daemons(notify=notify_socket, env={"CGROUPFS_STATE_FILE": state_file})
    notify_socket.wait_for("READY=1", timeout=20)  # the state file is not needed to serve
    with open(os.path.join(daemon.mountpoint, "proc/meminfo")) as f:
        assert f.read().startswith("MemTotal:")
    time.sleep(0.2)
    lines = [line for line in daemon.log().splitlines() if "state file" in line]
    assert lines == [f"ERROR cgroupfs_daemon.state: cannot write the state file {state_file}: {reason}; serving continues, "
                     "`cgroupfs status` will not see this daemon"], daemon.log()
    assert "Traceback" not in daemon.log()


def test_version():
    result = cgroupfs("version", state_file="/nonexistent")
    assert result.returncode == 0
    assert re.fullmatch(rf"cgroupfs {re.escape(__version__)} \(Python 3\.\d+\.\d+, FUSE protocol 7\.\d+\)\n",
                        result.stdout), result.stdout
