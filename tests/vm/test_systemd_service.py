"""systemd/cgroupfs.service under a real systemd (the VM booted with `run.py --init
systemd`, `make test-v2-systemd`): Type=notify readiness before docker.service, the
upgrade by `systemctl reload`, Restart=always after SIGKILL with the connections taken
over from systemd's own fd store, the watchdog restarting a wedged loop, `systemctl
stop` unmounting, and the journal saying so.

The unit is the repository's, installed as `make install` would with PREFIX=/usr/local:
ExecStart= runs /usr/local/bin/cgroupfs, the launcher guest_init.sh makes for the
checkout.  The tests run in order on one service, as an administrator would use it.
Times printed as "measured:" come from the journal's own timestamps.

One change to the unit: WatchdogSec= is stretched like every other deadline here
(CGROUPFS_TEST_TIME_SCALE).  Under emulation a start-up takes 10-22 s, and after a
reload the new instance pings first one interval (WatchdogSec/4) after taking over,
the old one up to an interval before the exec: 30 s is then not enough (seen: a
watchdog kill right after a reload).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.oci_bundle import make_bundle
from testbed.timing import scaled, wait_for
from tests.conftest import require
from tests.service.harness import FREE_LOOP, free_totals, lines_of, wait_lines
from tests.service.test_handoff import READER, kernel_resends

REPO = Path(__file__).resolve().parents[2]
UNIT = "cgroupfs.service"
UNIT_FILE = Path("/etc/systemd/system") / UNIT
DROP_INS = Path("/etc/systemd/system/cgroupfs.service.d")
DOCKER_DROP_INS = Path("/etc/systemd/system/docker.service.d")
CONFIG_FILE = Path("/etc/default/cgroupfs")
LAUNCHER = "/usr/local/bin/cgroupfs"
MOUNTPOINT = "/var/lib/cgroupfs"
TOOK_OVER = f"took over the live connection at {MOUNTPOINT} from"
MOUNTED_AFRESH = "aborting the connection, mounting afresh"
SERVING = f"serving {MOUNTPOINT} "
WEDGE_FILE = "/run/cgroupfs-vm-wedge"
DOCKER_SAW = "/run/cgroupfs-vm-docker-saw"
STORED = 5  # the files' connection, the views', the state memfd, the sysinfo socket and its call in hand
# busybox free's line while a container's /proc/meminfo is dead (after a clean stop, before the heal).
HEAL_WINDOW = "can't open '/proc/meminfo'"


def systemctl(*args: str) -> str:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"systemctl {' '.join(args)}: {result.stderr}{journal_text()}"
    return result.stdout.strip()


def show(prop: str, unit: str = UNIT) -> str:
    return systemctl("show", "-P", prop, unit)


def journal(since: float = 0.0) -> list[tuple[float, str]]:
    """The unit's journal (the daemon's lines and systemd's about it) from `since` (epoch s)."""
    out = subprocess.run(["journalctl", "-u", UNIT, "-o", "json", "--no-pager",
                          f"--since=@{since:.6f}" if since else "--since=@0"],
                         capture_output=True, text=True, check=True).stdout
    entries = []
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, str):
            entries.append((int(entry["__REALTIME_TIMESTAMP"]) / 1e6, message))
    return entries


def journal_text(since: float = 0.0) -> str:
    try:
        return "\n--- journalctl -u cgroupfs ---\n" + "\n".join(m for _, m in journal(since)[-60:])
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"\n(no journal: {exc})"


def logged(text: str, since: float, timeout: float = 60.0) -> float:
    """When the first line containing `text` after `since` was written."""
    found = wait_for(lambda: next((t for t, m in journal(since) if text in m), None),
                     scaled(timeout), interval=0.5, what=f"{text!r} in the journal")
    return float(found)


def wait_active(not_pid: str | None = None) -> str:
    """The main pid, once the service is active (READY=1 received), other than `not_pid`."""
    def active() -> str | None:
        state, pid = show("ActiveState"), show("MainPID")
        return pid if state == "active" and pid not in ("0", not_pid) else None
    try:
        return wait_for(active, scaled(60), interval=0.5, what="cgroupfs.service active")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{journal_text()}") from None


def fuse_mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == mountpoint and " - fuse.cgroupfs " in line for line in mountinfo)


def read_meminfo() -> bytes:
    with open(f"{MOUNTPOINT}/proc/meminfo", "rb") as f:
        return f.read()


class Readers:
    """tests/service/test_handoff.py's readers: files read in a loop, one kept open."""

    def __init__(self, directory: Path, count: int = 2):
        self.stop_file = directory / "stop-readers"
        self.processes = [subprocess.Popen([sys.executable, "-c", READER, MOUNTPOINT, str(self.stop_file)],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                          for _ in range(count)]

    def finish(self) -> list[dict]:
        self.stop_file.touch()
        results = []
        for process in self.processes:
            out, err = process.communicate(timeout=scaled(60))
            assert process.returncode == 0, err.decode()
            results.append(json.loads(out))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture(scope="module")
def service():
    require(Path("/run/systemd/system").is_dir(), "systemd is not pid 1 (run.py --init systemd)")
    require(os.access(LAUNCHER, os.X_OK), f"{LAUNCHER} missing (guest_init.sh makes it)")
    unit = (REPO / "systemd/cgroupfs.service").read_text()
    # What `make install PREFIX=/usr/local` writes.
    assert unit.count("\nExecStart=/opt/cgroupfs/") == 1, "the unit's ExecStart= moved"
    UNIT_FILE.write_text(unit.replace("\nExecStart=/opt/cgroupfs/", "\nExecStart=/usr/local/"))
    DROP_INS.mkdir(parents=True, exist_ok=True)
    (DROP_INS / "emulation.conf").write_text(f"[Service]\nWatchdogSec={scaled(30):.0f}s\n")
    if not CONFIG_FILE.exists():
        shutil.copy(REPO / "systemd/cgroupfs.default", CONFIG_FILE)
    systemctl("daemon-reload")
    try:
        yield
    finally:
        subprocess.run(["systemctl", "disable", "--now", UNIT], capture_output=True)
        subprocess.run(["systemctl", "stop", "docker.service", "docker.socket", "containerd.service"], capture_output=True)
        for path in (UNIT_FILE, DROP_INS / "emulation.conf", DROP_INS / "wedge.conf",
                     DOCKER_DROP_INS / "cgroupfs-vm.conf"):
            path.unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)


@pytest.fixture
def fresh_limits(service):
    """Each test restarts the service a few times: keep StartLimitBurst= for real loops.
    (Before the first start the unit is not loaded, and there is nothing to reset.)"""
    subprocess.run(["systemctl", "reset-failed", UNIT], capture_output=True)


def test_ready_once_the_mount_answers_and_before_docker(fresh_limits):
    # docker.service, started in the same breath, must find the mount serving.
    DOCKER_DROP_INS.mkdir(parents=True, exist_ok=True)
    (DOCKER_DROP_INS / "cgroupfs-vm.conf").write_text(
        f"[Service]\nExecStartPre=/bin/sh -c 'head -n 1 {MOUNTPOINT}/proc/meminfo >{DOCKER_SAW}'\n")
    systemctl("daemon-reload")
    systemctl("enable", UNIT)
    assert show("UnitFileState") == "enabled"
    since = time.time()
    systemctl("start", UNIT, "docker.service")  # waits for both jobs
    try:
        assert show("ActiveState") == "active"
        assert show("ActiveState", "docker.service") == "active"
        ready_at = int(show("ActiveEnterTimestampMonotonic"))
        docker_began = int(show("InactiveExitTimestampMonotonic", "docker.service"))
        assert 0 < ready_at <= docker_began, (ready_at, docker_began)
        assert Path(DOCKER_SAW).read_text().startswith("MemTotal:")
        serving = logged(SERVING, since)
        assert any("Started" in m and t >= serving for t, m in journal(since)), journal_text(since)
        assert show("NFileDescriptorStore") == str(STORED)
        assert show("StatusText"), "no STATUS= from the daemon"
        print(f"\nmeasured: start to READY {(ready_at - int(show('InactiveExitTimestampMonotonic'))) / 1e6:.1f} s")
    finally:
        systemctl("stop", "docker.service", "docker.socket", "containerd.service")


def test_reload_reexecutes_and_takes_the_connection_over(fresh_limits, tmp_path):
    pid = wait_active()
    readers = Readers(tmp_path)
    try:
        time.sleep(scaled(0.5))
        since = time.time()
        systemctl("reload", UNIT)
        took_over = logged(TOOK_OVER, since)
        logged(SERVING, took_over)
        assert wait_active() == pid  # re-executed in place: same process
        time.sleep(scaled(0.5))
        results = readers.finish()
    finally:
        readers.kill()
    for result in results:
        assert result["failed"] == 0 and result["ok"] > 0, result
    log = journal_text(since)
    assert MOUNTED_AFRESH not in log, log
    assert show("NFileDescriptorStore") == str(STORED)
    print(f"\nmeasured: reload to the connection taken over {took_over - since:.2f} s; "
          f"slowest read across it {max(r['slowest_s'] for r in results):.2f} s")


def test_sigkill_restarts_and_takes_the_connections_over_from_the_fd_store(fresh_limits):
    """An idle connection (no reader in the middle of a request) is taken over on any kernel."""
    pid = wait_active()
    restarts = int(show("NRestarts"))
    kept = os.open(f"{MOUNTPOINT}/proc/meminfo", os.O_RDONLY)
    try:
        since = time.time()
        os.kill(int(pid), signal.SIGKILL)
        new_pid = wait_active(not_pid=pid)
        killed = logged("status=9/KILL", since)
        took_over = logged(TOOK_OVER, since)
        assert int(show("NRestarts")) == restarts + 1
        assert os.pread(kept, 65536, 0).startswith(b"MemTotal:")  # opened before the kill
    finally:
        os.close(kept)
    assert read_meminfo().startswith(b"MemTotal:")
    log = journal_text(since)
    assert MOUNTED_AFRESH not in log, log
    assert show("NFileDescriptorStore") == str(STORED)
    ready = logged("Started ", took_over)
    print(f"\nmeasured: SIGKILL (pid {pid} -> {new_pid}) to the connection taken over "
          f"{took_over - killed:.2f} s, to READY {ready - killed:.2f} s")


def test_sigkill_while_readers_read(fresh_limits, tmp_path):
    """Readers in a loop across the kill: none fails where the connection is taken over;
    before 6.9, a request in hand at the kill makes the successor abort and mount afresh
    (README), and reads through the path work again."""
    pid = wait_active()
    readers = Readers(tmp_path)
    try:
        time.sleep(scaled(0.5))
        since = time.time()
        os.kill(int(pid), signal.SIGKILL)
        wait_active(not_pid=pid)
        outcome = wait_for(lambda: next((m for _, m in journal(since) if TOOK_OVER in m or MOUNTED_AFRESH in m),
                                        None), scaled(60), interval=0.5, what="take-over or fresh mount")
        logged(SERVING, since)
        time.sleep(scaled(0.5))
        results = readers.finish()
    finally:
        readers.kill()
    print(f"\nreaders across SIGKILL: {outcome!r}: {results}")
    if TOOK_OVER in outcome:
        for result in results:
            assert result["failed"] == 0 and result["ok"] > 0, result
    else:
        assert not kernel_resends(), f"a kernel with FUSE_NOTIFY_RESEND mounted afresh: {outcome}"
        for result in results:
            # ECONNABORTED for the request in hand, ENOTCONN on the aborted connection (the
            # kept descriptor), ENOENT between the abort and the fresh mount.
            assert all(f.startswith(("ConnectionAbortedError", "OSError: [Errno 107]", "FileNotFoundError"))
                       for f in result["failures"]), result
        assert read_meminfo().startswith(b"MemTotal:")


def test_watchdog_restarts_a_wedged_loop(fresh_limits):
    # Read after emulation.conf, so this WatchdogSec= wins.  tests/wedged_daemon.py:
    # reads wait while WEDGE_FILE exists, and the watchdog pings stop with them.
    (DROP_INS / "wedge.conf").write_text(
        "[Service]\nExecStart=\n"
        f"ExecStart=/usr/bin/python3 -m tests.wedged_daemon {WEDGE_FILE} daemon\nWatchdogSec=15s\n")
    reader = None
    try:
        systemctl("daemon-reload")
        systemctl("restart", UNIT)
        pid = wait_active()
        restarts = int(show("NRestarts"))
        Path(WEDGE_FILE).touch()
        since = time.time()
        reader = subprocess.Popen(["cat", f"{MOUNTPOINT}/proc/meminfo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        logged("Watchdog timeout", since, timeout=90)
        os.unlink(WEDGE_FILE)
        wait_active(not_pid=pid)
        assert int(show("NRestarts")) == restarts + 1
        out, err = reader.communicate(timeout=scaled(60))
        log = journal_text(since)
        if kernel_resends():
            assert reader.returncode == 0 and out.startswith(b"MemTotal:"), (err, log)
            assert TOOK_OVER in log, log
        else:
            # The read in hand cannot be sent again: aborted, not left waiting forever.
            assert reader.returncode != 0 and b"abort" in err, (out, err, log)
            assert MOUNTED_AFRESH in log, log
        logged(SERVING, since)
        assert read_meminfo().startswith(b"MemTotal:")
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.communicate()
        Path(WEDGE_FILE).unlink(missing_ok=True)
        (DROP_INS / "wedge.conf").unlink(missing_ok=True)
        # No restart here (a start costs 10-45 s under emulation): the next test stops
        # the service, and its start runs the unit without the wedge.
        systemctl("daemon-reload")


def test_sysinfo_answers_across_a_sigkill_a_reload_and_a_restart(fresh_limits, tmp_path):
    """A container created by the installed cgroupfs-runtime calls sysinfo(2) ten times a
    second; its listener lives in systemd's own fd store, through a SIGKILL, an upgrade
    and a `systemctl restart` (the store is kept while a start job is queued)."""
    require(shutil.which("runc") is not None, "runc is not installed")
    wait_active()
    bundle = make_bundle(str(tmp_path / "bundle"), ["sh", "-c", FREE_LOOP], memory_limit=64 << 20)
    log = str(tmp_path / "free.log")
    container = f"cgfs-vm-sysinfo-{os.getpid()}"
    errors = tmp_path / "runtime.err"
    # Files, not pipes: a detached container keeps runc's stdio (a pipe would never end).
    with open(log, "ab") as out, open(errors, "ab") as err:
        created = subprocess.run(["/usr/local/bin/cgroupfs-runtime", "run", "--detach", "--bundle", bundle,
                                  container], stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=scaled(60))
    try:
        assert created.returncode == 0, errors.read_text()
        assert free_totals(wait_lines(log, 3, timeout=60)) == {"65536"}, journal_text()
        assert int(show("NFileDescriptorStore")) == STORED + 1  # and the container's listener
        for action in ("kill", "reload", "restart"):
            pid = wait_active()
            seen = len(lines_of(log))
            since = time.time()
            if action == "kill":
                os.kill(int(pid), signal.SIGKILL)
                wait_active(not_pid=pid)
            else:
                systemctl(action, UNIT)
                wait_active(not_pid=pid if action == "restart" else None)
            logged("answering sysinfo(2) again for 1 listeners handed over", since)
            # busybox free also reads /proc/meminfo (buff/cache): a clean restart unmounts
            # the files, dead in the container until healed.  sysinfo itself never fails:
            # a call without its listener would print garbage, not an error.
            deadline = time.monotonic() + scaled(60)
            while len(answered := [line for line in lines_of(log)[seen:] if HEAL_WINDOW not in line]) < 5:
                assert time.monotonic() < deadline, (action, lines_of(log)[seen:], journal_text(since))
                time.sleep(0.1)
            assert free_totals(answered) == {"65536"}, (action, lines_of(log)[seen:], journal_text(since))
            if action != "restart":
                assert len(answered) == len(lines_of(log)[seen:]), (action, lines_of(log)[seen:])
    finally:
        subprocess.run(["runc", "delete", "--force", container], capture_output=True, timeout=scaled(60))
    # Its processes gone, the listener hangs up: systemd drops it from the store (POLLHUP).
    wait_for(lambda: int(show("NFileDescriptorStore")) == STORED, scaled(30), interval=0.5,
             what="the listener dropped from the fd store")


def test_stop_unmounts_and_the_next_start_mounts_afresh(fresh_limits):
    wait_active()
    assert fuse_mounted(MOUNTPOINT)
    since = time.time()
    systemctl("stop", UNIT)
    assert not fuse_mounted(MOUNTPOINT)
    assert not fuse_mounted(f"{MOUNTPOINT}-views")
    assert show("NFileDescriptorStore") == "0"
    logged(f"unmounted {MOUNTPOINT}; stopping", since)
    started = time.time()
    systemctl("start", UNIT)
    logged(SERVING, started)
    log = journal_text(started)
    assert TOOK_OVER not in log, log
    assert read_meminfo().startswith(b"MemTotal:")
