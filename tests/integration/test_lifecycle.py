"""Mount lifecycle: clean unmount, stale mount recovery, the self-read guard."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cgroupfs_daemon.mount import mounts_at
from testbed.daemon_process import REPO, DaemonProcess


def fuse_mounted(path: str) -> bool:
    return any(t.startswith("fuse") for t in mounts_at(path))


def test_sigterm_unmounts(hierarchy, workdir):
    daemon = DaemonProcess(os.path.join(workdir, "lifecycle-term"))
    try:
        daemon.start()
        assert fuse_mounted(daemon.mountpoint)
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=10) == 0
        assert not fuse_mounted(daemon.mountpoint)
    finally:
        daemon.stop()


def test_a_stale_mount_is_recovered(hierarchy, workdir):
    mountpoint = os.path.join(workdir, "lifecycle-stale")
    first = DaemonProcess(mountpoint)
    second = DaemonProcess(mountpoint)
    try:
        first.start()
        first.kill(signal.SIGKILL)
        with pytest.raises(OSError) as info:
            open(os.path.join(mountpoint, "proc/meminfo")).read()
        assert info.value.errno == 107  # ENOTCONN: "Transport endpoint is not connected"
        second.start()
        with open(os.path.join(mountpoint, "proc/meminfo")) as f:
            assert f.read().startswith("MemTotal:")
        assert "stale mount" in second.log()
    finally:
        second.stop()
        first.stop()


def test_a_second_daemon_refuses_a_live_mountpoint(hierarchy, workdir):
    mountpoint = os.path.join(workdir, "lifecycle-busy")
    daemon = DaemonProcess(mountpoint)
    try:
        daemon.start()
        result = subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", "--mountpoint", mountpoint,
                                 "--no-docker", "--no-metrics"], capture_output=True, timeout=30, cwd=REPO)
        assert result.returncode == 2
        assert b"already mounted" in result.stderr and b"Traceback" not in result.stderr
        assert daemon.is_serving()
    finally:
        daemon.stop()


SELF_READ = textwrap.dedent("""
    import errno, os, sys, threading
    from cgroupfs.server import ContentServer
    from cgroupfs_daemon.fuse_files import PerReaderFiles
    from cgroupfs_daemon.fuse_session import Session, mount, unmount
    from cgroupfs_daemon.mount import prepare_mountpoint

    mountpoint = sys.argv[1]
    result = {}

    def read_own_mount():
        try:
            open(os.path.join(mountpoint, "proc/meminfo")).read()
            result["outcome"] = "read"
        except OSError as exc:
            result["outcome"] = exc.errno
        session.stop()
        unmount(mountpoint)  # ends the loop: the connection reports ENODEV

    def on_init():
        threading.Thread(target=read_own_mount, daemon=True).start()

    prepare_mountpoint(mountpoint)
    session = Session(mount(mountpoint, "cgroupfs", "cgroupfs"), PerReaderFiles(ContentServer()), "self-read",
                      on_init=on_init)
    session.serve()
    print(result.get("outcome"))
""")



def test_the_daemon_reading_its_own_mount_gets_an_error_not_a_deadlock(hierarchy, workdir):
    mountpoint = os.path.join(workdir, "lifecycle-self")
    process = subprocess.Popen([sys.executable, "-c", SELF_READ, mountpoint], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    assert out.decode().strip() == str(errno.EDEADLK), err.decode()[-2000:]


def test_a_daemon_whose_host_files_are_covered_by_fuse_refuses_to_start(mnt, workdir):
    # In a private mount namespace, cover /proc/meminfo with one of our own files.
    script = (f"mount --bind {mnt}/proc/meminfo /proc/meminfo && "
              f"exec {sys.executable} -m cgroupfs_daemon.cli daemon --mountpoint {workdir}/lifecycle-covered "
              "--no-docker --no-metrics")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, timeout=30, cwd=REPO)
    assert result.returncode == 2, result.stderr.decode()
    assert b"/proc/meminfo is covered by a FUSE mount" in result.stderr
    assert b"Traceback" not in result.stderr
