"""sd_notify against a real datagram socket and a real daemon: READY, watchdog, STOPPING."""

from __future__ import annotations

import os
import time

import pytest

from cgroupfs_daemon.notify import Notifier, socket_address, watchdog_interval_s
from tests.service.harness import is_fuse_mounted

WATCHDOG_USEC = 1_000_000  # pings every 0.25 s, probe timeout 0.125 s


def test_ready_is_sent_once_the_mount_answers(daemons, notify_socket):
    daemon = daemons(notify=notify_socket)
    ready = notify_socket.wait_for("READY=1", timeout=20)
    # Checked right when READY=1 arrives: the mount is there and a listing and a read answer.
    assert is_fuse_mounted(daemon.mountpoint)
    assert "meminfo" in os.listdir(os.path.join(daemon.mountpoint, "proc"))
    with open(os.path.join(daemon.mountpoint, "proc/meminfo")) as f:
        assert f.read().startswith("MemTotal:")
    assert ready.pid == daemon.pid  # NotifyAccess=main: from the main pid, not a child
    assert ready.value("STATUS") == f"serving {daemon.mountpoint} (Docker watching off)"
    assert notify_socket.count("READY=1", 0) == 1
    assert not notify_socket.count("WATCHDOG=1", 0)  # no WATCHDOG_USEC: no pings


def test_ready_is_withheld_until_a_mount_answers(daemons, notify_socket, tmp_path):
    # The Notifier component alone, in this process, against a real mount point.
    daemon = daemons()  # no NOTIFY_SOCKET: the daemon itself stays silent
    unmounted = tmp_path / "empty"
    (unmounted / "proc").mkdir(parents=True)  # even a plain directory that lists fine is no mount
    (unmounted / "proc" / "meminfo").write_text("")
    silent = Notifier(str(unmounted), environ={"NOTIFY_SOCKET": notify_socket.name}, ready_timeout_s=0.5)
    started = time.monotonic()
    assert silent.ready() is False
    assert time.monotonic() - started >= 0.5
    daemon.wait_serving()
    notifier = Notifier(daemon.mountpoint, environ={"NOTIFY_SOCKET": notify_socket.name}, ready_timeout_s=5)
    assert notifier.ready() is True
    message = notify_socket.wait_for("READY=1", timeout=2)
    assert message.received > started + 0.5 and message.pid == os.getpid()
    assert notify_socket.count("READY=1", 0) == 1
    silent.stop(), notifier.stop()


def test_watchdog_pings_stop_while_the_loop_is_wedged_and_resume(daemons, notify_socket):
    daemon = daemons(notify=notify_socket, watchdog_usec=WATCHDOG_USEC, wedge=True)
    ready = notify_socket.wait_for("READY=1", timeout=20)
    time.sleep(1.5)
    healthy = notify_socket.count("WATCHDOG=1", ready.received)
    assert 4 <= healthy <= 8, f"{healthy} pings in 1.5 s at one per 0.25 s"

    # Wedge the loop alone: a reader's request blocks inside the FUSE loop.
    open(daemon.wedge_file, "w").close()
    wedged_at = time.monotonic()
    reader = daemon.start_reader("proc/meminfo")
    # The notifier thread keeps running and says so: the process is not stopped.
    notice = notify_socket.wait_for("STATUS=FUSE loop not answering (no answer within 0.125 s); "
                                    "watchdog pings withheld", timeout=3, after=wedged_at)
    assert notice.pid == daemon.pid
    quiet_from = time.monotonic()
    time.sleep(2.0)
    assert notify_socket.count("WATCHDOG=1", quiet_from) == 0, notify_socket.summary()
    assert reader.poll() is None  # still blocked in the loop
    with open(f"/proc/{daemon.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] != "T"

    os.unlink(daemon.wedge_file)
    released = time.monotonic()
    output, _ = reader.communicate(timeout=5)
    assert reader.returncode == 0 and output.startswith(b"MemTotal:")
    notify_socket.wait_for("WATCHDOG=1", timeout=1.5, after=released)
    notify_socket.wait_for(f"STATUS=serving {daemon.mountpoint} (Docker watching off)", timeout=1.5, after=released)
    time.sleep(1.0)
    assert notify_socket.count("WATCHDOG=1", released) >= 4


def test_no_pings_when_the_watchdog_is_meant_for_another_pid(daemons, notify_socket):
    daemons(notify=notify_socket, watchdog_usec=WATCHDOG_USEC, watchdog_pid="1")
    ready = notify_socket.wait_for("READY=1", timeout=20)
    time.sleep(1.0)
    assert notify_socket.count("WATCHDOG=1", ready.received - 1) == 0


def test_stopping_on_sigterm_then_the_mount_is_gone(daemons, notify_socket):
    daemon = daemons(notify=notify_socket, watchdog_usec=WATCHDOG_USEC)
    notify_socket.wait_for("READY=1", timeout=20)
    signalled = time.monotonic()
    assert daemon.terminate() == 0, daemon.log()
    stopping = notify_socket.wait_for("STOPPING=1", timeout=2, after=signalled)
    assert stopping.pid == daemon.pid
    assert not is_fuse_mounted(daemon.mountpoint)
    assert os.listdir(daemon.mountpoint) == []
    time.sleep(0.5)
    assert notify_socket.count("WATCHDOG=1", stopping.received) == 0  # nothing after STOPPING=1


def test_abstract_socket_name(daemons, abstract_notify_socket):
    daemon = daemons(notify=abstract_notify_socket)
    assert abstract_notify_socket.wait_for("READY=1", timeout=20).pid == daemon.pid


@pytest.mark.unit
def test_environment_handling():
    environ = {"NOTIFY_SOCKET": "@name", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier("/nonexistent", environ=environ)
    assert notifier.address == "\0name" and notifier.watchdog_s == 30.0
    assert environ == {}  # unset, like sd_notify(unset_environment=1): children must not inherit it
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, 1) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "7"}, 8) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000"}, 8) == 0.5
    quiet = Notifier("/nonexistent", environ={})
    assert not quiet.enabled
    quiet.start()
    assert quiet.ready() is False and quiet.status("x") is False
    quiet.stop()


@pytest.mark.unit
def test_status_line_follows_the_daemons_counters():
    from cgroupfs_daemon.notify import describe
    from cgroupfs_daemon.stats import ContainerInfo, DaemonStats

    stats = DaemonStats()
    assert describe("/m", stats, docker_enabled=True) == "serving 0 containers at /m; Docker not connected"
    stats.docker_connected(True)
    stats.container_tracked(ContainerInfo("a" * 64, "web", "nginx"))
    assert describe("/m", stats, docker_enabled=True) == "serving 1 container at /m"
    stats.container_tracked(ContainerInfo("b" * 64, "db", "postgres"))
    assert describe("/m", stats, docker_enabled=True) == "serving 2 containers at /m"
    assert describe("/m", stats, docker_enabled=False) == "serving /m (Docker watching off)"
