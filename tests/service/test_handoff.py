"""A restart nobody sees (daemon/handoff.py): readers keep reading through an upgrade
(SIGHUP re-exec) and a crash (SIGKILL, restarted with the fd store handed back, as
systemd does), a request in hand at the kill is answered by the successor where the
kernel can resend it, and where it cannot the connection is aborted and mounted afresh
instead of leaving a reader waiting forever.

Readers are real processes in a memory-limited cgroup; the fd store is the
NotifyListener's stand-in for systemd's (tests/service/harness.py).  The real
systemd runs these paths in the v2 lane's VM.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from cgroupfs_daemon.fuse_protocol import HAS_RESEND
from cgroupfs_daemon.handoff import abort_connection, mounted_device
from testbed.cgroups import TestCgroup
from testbed.timing import scaled
from tests.service.harness import NotifyListener, ServiceDaemon

MIB = 1 << 20
STORED = {"state", "fuse-cgroupfs", "fuse-cgroupfs-views"}

# Reads meminfo and stat until STOP exists, and one descriptor kept open, read again
# at offset 0 (procps's way); prints counts, failures and the MemTotal values seen.
READER = r"""
import json, os, sys, time
mount, stop = sys.argv[1], sys.argv[2]
cpus = f"{mount}/sys/devices/system/cpu"
kept = None  # opened in the loop: a start that meets a kill (emulated, slow) is a failure counted
ok, failures, totals, slowest = 0, [], set(), 0.0
while not os.path.exists(stop):
    started = time.monotonic()
    try:
        if kept is None:
            meminfo = os.open(f"{mount}/proc/meminfo", os.O_RDONLY)
            first = open(f"{cpus}/online").read().split(",")[0].split("-")[0].strip()
            kept_host = os.open(f"{cpus}/kernel_max", os.O_RDONLY)  # one of the host's entries, passed through
            kept = meminfo
        for name in ("meminfo", "stat"):
            with open(f"{mount}/proc/{name}", "rb") as f:
                text = f.read()
            if name == "meminfo":
                totals.add(int(text.split(b"\n")[0].split()[1]))
        kept_text = os.pread(kept, 65536, 0)
        totals.add(int(kept_text.split(b"\n")[0].split()[1]))
        int(os.pread(kept_host, 64, 0))
        with open(f"{cpus}/cpu{first}/topology/core_id", "rb") as f:  # names the kernel keeps 1 s
            int(f.read())
        ok += 1
    except OSError as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.01)
    slowest = max(slowest, time.monotonic() - started)
print(json.dumps({"ok": ok, "failures": failures[:5], "failed": len(failures), "totals": sorted(totals),
                  "slowest_s": slowest}))
"""


@pytest.fixture
def limited_cgroup(fuse_host):
    cgroup = TestCgroup(f"cgroupfs-handoff-{os.getpid()}")
    cgroup.set_memory_limit(96 * MIB)
    yield cgroup
    cgroup.remove()


class Readers:
    def __init__(self, cgroup: TestCgroup, mountpoint: str, directory: str, count: int = 2):
        self.stop_file = os.path.join(directory, "stop-readers")
        self.processes = [cgroup.popen([sys.executable, "-c", READER, mountpoint, self.stop_file],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(count)]

    def finish(self) -> list[dict]:
        with open(self.stop_file, "w"):
            pass
        results = []
        for process in self.processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err.decode()
            results.append(json.loads(out))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def assert_never_failed(results: list[dict], log: str = "") -> None:
    for result in results:
        assert result["failed"] == 0, (result, log)
        assert result["ok"] > 0, result
        assert result["totals"] == [96 * 1024], result  # the container's own, before and after


def test_sighup_reexecutes_and_readers_never_fail(daemons, limited_cgroup, tmp_path):
    daemon = daemons("hup")
    daemon.wait_serving()
    readers = Readers(limited_cgroup, daemon.mountpoint, str(tmp_path))
    try:
        time.sleep(0.5)
        for expected in (2, 4):  # both connections each time
            os.kill(daemon.pid, signal.SIGHUP)
            wait_for_log(daemon, "took over the live connection at", expected)
        # One more while the successor is starting: it waits for it (blocked across
        # exec) instead of killing it, and is acted on once the successor serves.
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for_log(daemon, "re-executing", 3)
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for_log(daemon, "took over the live connection at", 8)
        time.sleep(0.5)
        assert daemon.process.poll() is None, daemon.log()
        results = readers.finish()
    finally:
        readers.kill()
    print(f"\nreaders across 4 re-executions: {results}")
    assert_never_failed(results)
    log = daemon.log()
    assert "stale mount" not in log and "mounting afresh" not in log, log


def wait_for_log(daemon: ServiceDaemon, text: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while daemon.log().count(text) < count:
        assert daemon.process.poll() is None, daemon.log()
        assert time.monotonic() < deadline, f"{text!r} not {count} times: {daemon.log()}"
        time.sleep(0.05)


def kernel_resends() -> bool:
    """FUSE_NOTIFY_RESEND exists since Linux 6.9."""
    release = tuple(int(part) for part in platform.release().split("-")[0].split(".")[:2])
    return release >= (6, 9)


def start_successor(directory: str, notify: NotifyListener, handed: dict[str, int], **kwargs) -> ServiceDaemon:
    return ServiceDaemon(directory, notify=notify, **kwargs).start(handed=handed)


def test_sigkill_with_the_fd_store_is_taken_over(fuse_host, limited_cgroup, tmp_path, notify_socket):
    directory = str(tmp_path)
    first = ServiceDaemon(directory, notify=notify_socket).start()
    successors: list[ServiceDaemon] = []
    readers = None
    try:
        notify_socket.wait_for("READY=1", timeout=30)
        handed = notify_socket.wait_stored(STORED, timeout=10)
        readers = Readers(limited_cgroup, first.mountpoint, directory)
        time.sleep(scaled(0.5))  # reading before the first kill
        for _ in range(2):
            victim = successors[-1] if successors else first
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            since = time.monotonic()
            successor = start_successor(directory, notify_socket, handed)
            successors.append(successor)
            notify_socket.wait_for("READY=1", timeout=30, after=since)
            time.sleep(2.0)
            assert successor.process.poll() is None, successor.log()
        results = readers.finish()
        last = successors[-1]
        if not kernel_resends():
            # Before 6.9 a request the dead instance had in hand cannot be sent again:
            # with readers this busy the connection is aborted and mounted afresh (the
            # kept-open descriptor is lost with it), and reads through the path go on.
            assert "took over the live connection at" in last.log() or "mounting afresh" in last.log(), last.log()
            with open(os.path.join(last.mountpoint, "proc/meminfo"), "rb") as f:
                assert f.read().startswith(b"MemTotal:")
            last.terminate()
            return
        assert "took over the live connection at" in last.log(), last.log()
        # A clean stop empties the store: the next start mounts afresh.
        last.terminate()
        assert not set(notify_socket.stored) & STORED, notify_socket.stored
    finally:
        if readers is not None:
            readers.kill()
        for daemon in (*successors, first):
            daemon.cleanup()
    print(f"\nreaders across 2 SIGKILLs: {results}")
    assert_never_failed(results, "\n".join(daemon.log() for daemon in (first, *successors)))


def drop_resend_from_the_stored_state(state_fd: int) -> None:
    """Make the handed-over state say the kernel offered no HAS_RESEND (a pre-6.9 kernel)."""
    size = os.fstat(state_fd).st_size
    state = json.loads(os.pread(state_fd, size, 0))
    for connection in state["connections"].values():
        connection["kernel_flags"] &= ~HAS_RESEND
    data = json.dumps(state).encode()
    os.ftruncate(state_fd, 0)
    os.pwrite(state_fd, data, 0)


@pytest.mark.parametrize("resend", ["kernel", "without"])
def test_a_request_in_hand_at_the_kill(fuse_host, tmp_path, notify_socket, resend):
    """The daemon dies holding a READ it never answers (the wedge).  With resend the
    successor answers it; without, the connection is aborted (the reader gets an
    error instead of waiting forever) and mounted afresh."""
    if resend == "kernel" and not kernel_resends():
        resend = "without"  # a pre-6.9 kernel (the v2 lane's 6.1) has no resend to test
    directory = str(tmp_path)
    wedged = ServiceDaemon(directory, notify=notify_socket, wedge=True).start()
    successor = None
    reader = None
    try:
        notify_socket.wait_for("READY=1", timeout=30)
        handed = notify_socket.wait_stored(STORED, timeout=10)
        assert wedged.wedge_file is not None
        with open(wedged.wedge_file, "w"):
            pass
        reader = subprocess.Popen(["cat", os.path.join(wedged.mountpoint, "proc/meminfo")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert reader.poll() is None  # its READ is in the wedged daemon's hands
        wedged.process.send_signal(signal.SIGKILL)
        wedged.process.wait(timeout=10)
        os.unlink(wedged.wedge_file)
        if resend == "without":
            drop_resend_from_the_stored_state(handed["state"])
        successor = start_successor(directory, notify_socket, handed)
        try:
            out, err = reader.communicate(timeout=scaled(60))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the reader was never answered: {successor.log()}") from None
        successor.wait_serving()
        log = successor.log()
        if resend == "kernel":
            assert reader.returncode == 0 and out.startswith(b"MemTotal:"), (err, log)
            assert "took over the live connection at" in log and "sent again" in log, log
        else:
            # ECONNABORTED for the request in hand (fs/fuse/dev.c end_requests)
            assert reader.returncode != 0 and b"connection abort" in err, (out, err, log)
            assert "aborting the connection, mounting afresh" in log, log
            with open(os.path.join(successor.mountpoint, "proc/meminfo"), "rb") as f:
                assert f.read().startswith(b"MemTotal:")  # the fresh mount serves
    finally:
        if reader is not None and reader.poll() is None:
            # A READ the daemon had taken is not even killable until answered or aborted.
            device = mounted_device(wedged.mountpoint, "cgroupfs")
            if device is not None:
                abort_connection(device)
            reader.kill()
            reader.communicate(timeout=30)
        for daemon in (successor, wedged):
            if daemon is not None:
                daemon.cleanup()
