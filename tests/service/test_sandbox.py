"""The unit's restrictions, applied for real (tests/service/unit_sandbox.py), do not stop the daemon's work.

And each capability the unit keeps is needed: without it, mounting or injecting
fails.  (No systemd runs here; the same kernel mechanisms systemd uses are applied
from the unit file itself.)
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.service.conftest import require
from tests.service.harness import REPO, is_fuse_mounted
from tests.service.test_unit_file import unit_settings
from tests.service.unit_sandbox import capability_mask

UNIT = os.path.join(REPO, "systemd", "cgroupfs.service")
with open(UNIT) as _f:
    UNIT_TEXT = _f.read()
CAPABILITIES = set(unit_settings(UNIT_TEXT)["CapabilityBoundingSet"][0].split())


def sandboxed(*command: str, without: tuple[str, ...] = (), devices_cgroup: str | None = None) -> tuple[str, ...]:
    options = [option for capability in without for option in ("--without", capability)]
    if devices_cgroup:
        options += ["--devices-cgroup", devices_cgroup]
    return (sys.executable, "-m", "tests.service.unit_sandbox", UNIT, *options, "--", *command)


def status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.fixture
def devices_cgroup():
    """A cgroup v1 devices cgroup for DevicePolicy=closed (None on hosts without one), removed afterwards."""
    if not os.path.isdir("/sys/fs/cgroup/devices"):
        yield None
        return
    path = f"/sys/fs/cgroup/devices/cgroupfs-test-{uuid.uuid4().hex[:12]}"
    yield path  # tests list this fixture before `daemons`, so their daemons are gone by now
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    raise AssertionError(f"{path} still has processes: {open(os.path.join(path, 'cgroup.procs')).read()!r}")


def test_the_daemon_serves_and_stops_under_the_units_restrictions(devices_cgroup, daemons, notify_socket):
    daemon = daemons(notify=notify_socket, watchdog_usec=1_000_000,
                     command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", devices_cgroup=devices_cgroup))
    ready = notify_socket.wait_for("READY=1", timeout=20)
    assert ready.pid == daemon.pid
    fields = status_fields(daemon.pid)
    assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == capability_mask(CAPABILITIES)
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2" and int(fields["Seccomp_filters"]) >= 3
    if devices_cgroup:
        with open(f"/proc/{daemon.pid}/cgroup") as f:
            assert f":devices:/{os.path.basename(devices_cgroup)}\n" in f.read()
    with open(os.path.join(daemon.mountpoint, "proc/meminfo")) as f:
        assert f.read().startswith("MemTotal:")
    time.sleep(1.0)
    assert notify_socket.count("WATCHDOG=1", ready.received) >= 2

    signalled = time.monotonic()
    assert daemon.terminate() == 0, daemon.log()
    notify_socket.wait_for("STOPPING=1", timeout=2, after=signalled)
    assert not is_fuse_mounted(daemon.mountpoint)
    assert "Traceback" not in daemon.log() and "not permitted" not in daemon.log(), daemon.log()


def test_sysinfo_is_answered_under_the_units_restrictions(devices_cgroup, daemons, runc_containers, tmp_path):
    """The seccomp listener taken from runc, the caller's memory written through
    /proc/PID/mem (CAP_SYS_PTRACE), the answer's ioctls: all inside the unit's filter."""
    from testbed.daemon_process import sysinfo_socket
    from testbed.oci_bundle import make_bundle
    from testbed.runtime_engines import write_runtime_script
    from tests.service.harness import FREE_LOOP, free_totals, wait_lines

    mountpoint = str(tmp_path / "d" / "mnt")
    daemon = daemons("d", env={"CGROUPFS_SYSINFO_SOCKET": sysinfo_socket(mountpoint)},
                     command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon",
                                       devices_cgroup=devices_cgroup))
    daemon.wait_serving()
    script = write_runtime_script(daemon.directory, mountpoint, "runc")
    bundle = make_bundle(os.path.join(daemon.directory, "bundle"), ["sh", "-c", FREE_LOOP], memory_limit=64 << 20)
    log = os.path.join(daemon.directory, "free.log")
    runc_containers(script, bundle, log)
    assert free_totals(wait_lines(log, 3)) == {"65536"}, daemon.log()
    assert "Traceback" not in daemon.log() and "not permitted" not in daemon.log(), daemon.log()


def test_without_cap_sys_admin_nothing_mounts(daemons):
    daemon = daemons(command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", without=("CAP_SYS_ADMIN",)))
    assert daemon.process.wait(timeout=30) != 0
    assert not is_fuse_mounted(daemon.mountpoint)
    assert "Traceback" not in daemon.log(), daemon.log()


def test_a_reload_hands_over_under_the_units_restrictions(devices_cgroup, daemons):
    """SIGHUP re-executes with the connections and the state memfd (memfd_create,
    pread/pwrite, fcntl, execve) inside the unit's system-call filter and capabilities."""
    daemon = daemons(command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", devices_cgroup=devices_cgroup))
    daemon.wait_serving()
    os.kill(daemon.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while daemon.log().count("took over the live connection at") < 2:
        assert daemon.process.poll() is None and time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    with open(os.path.join(daemon.mountpoint, "proc/meminfo"), "rb") as f:
        assert f.read().startswith(b"MemTotal:")
    assert "Traceback" not in daemon.log() and "EPERM" not in daemon.log(), daemon.log()


# -- injection into Docker containers, under the same restrictions ---------------------------

INJECT = """
import errno, sys
from cgroupfs_daemon.inject import inject
try:
    results = inject(int(sys.argv[1]), sys.argv[2])
except OSError as exc:
    print("error", errno.errorcode.get(exc.errno, exc.errno))
else:
    print(" ".join(sorted({r.outcome if r.outcome != "failed" else "failed:" + errno.errorcode[r.error]
                           for r in results})))
"""


@pytest.fixture(scope="module")
def engine():
    require(os.geteuid() == 0, "needs root")
    from tests.docker.engine import running_engine

    with running_engine() as engine:
        yield engine


@pytest.fixture
def container(engine):
    """container(user) -> (name, init pid) of a 64 MiB busybox; removed afterwards."""
    from testbed.docker_engine import IMAGE

    names: list[str] = []

    def run(user: str) -> tuple[str, int]:
        name = f"cgfs-sandbox-{uuid.uuid4().hex[:10]}"
        names.append(name)
        engine.cli("run", "-d", "--name", name, "--network", "none", "-m", "64m", "--user", user, IMAGE,
                   "sleep", "600")
        return name, engine.init_pid(name)

    yield run
    if names:
        engine.cli("rm", "-f", *names, check=False)


@pytest.mark.parametrize("user", ["0:0", "1000:1000"])
def test_injection_works_with_the_units_capabilities_and_needs_each(devices_cgroup, daemons, engine, container,
                                                                   user):
    from testbed.docker_checks import memtotal_kb, read_in

    daemon = daemons(command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon"))
    daemon.wait_serving()

    def inject_as_the_unit(pid: int, without: tuple[str, ...] = ()) -> str:
        result = subprocess.run(sandboxed(sys.executable, "-c", INJECT, str(pid), daemon.mountpoint, without=without,
                                          devices_cgroup=devices_cgroup),
                                capture_output=True, text=True, cwd=REPO, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    expected_without = {
        # setns(2) into a mount namespace needs CAP_SYS_CHROOT besides CAP_SYS_ADMIN.
        "CAP_SYS_CHROOT": "failed:EPERM",
        # /proc/<pid>/ns/mnt of a process with other credentials or capabilities: ptrace access check.
        "CAP_SYS_PTRACE": "error:EACCES",
        # open_tree(OPEN_TREE_CLONE) and move_mount.
        "CAP_SYS_ADMIN": "failed:EPERM",
    }
    for capability, outcome in expected_without.items():
        name, pid = container(user)
        assert inject_as_the_unit(pid, without=(capability,)).replace("error ", "error:") == outcome, capability
        assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) > 65536  # still the host's

    name, pid = container(user)
    assert inject_as_the_unit(pid) == "mounted"
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536
    assert re.fullmatch(r"0-\d+\n", read_in(engine, name, "/sys/devices/system/cpu/online"))


def free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_whole_daemon_under_the_units_restrictions(devices_cgroup, daemons, notify_socket, engine, container):
    """Docker watcher, injection, metrics endpoint, notify: everything the unit runs, restricted as the unit says."""
    import urllib.request

    from testbed.docker_checks import memtotal_kb, read_in, wait_injected

    address = f"127.0.0.1:{free_loopback_port()}"
    daemon = daemons(notify=notify_socket, watchdog_usec=2_000_000, docker_host=engine.host, metrics_address=address,
                     command=sandboxed(sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", devices_cgroup=devices_cgroup))
    ready = notify_socket.wait_for("READY=1", timeout=30)
    name, _ = container("1000:1000")
    wait_injected(engine, name, daemon.mountpoint, timeout=10)
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536
    notify_socket.wait_for(f"STATUS=serving 1 container at {daemon.mountpoint}", timeout=10, after=ready.received)
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200 and b"cgroupfs_" in response.read()
    time.sleep(1.2)
    assert notify_socket.count("WATCHDOG=1", ready.received) >= 2  # one per 0.5 s
    assert daemon.terminate() == 0
    log = daemon.log()
    assert "Traceback" not in log and "not permitted" not in log and "EPERM" not in log, log
