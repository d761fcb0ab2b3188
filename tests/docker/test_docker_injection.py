"""Issue 3, against a private dockerd and a real cgroupfs daemon: what containers read."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cgroupfs.layout import CONTAINER_TARGETS
from testbed.daemon_process import DaemonProcess
from testbed.docker_checks import (
    cat_in,
    cgroupfs_cli,
    injected_targets,
    memtotal_kb,
    processor_count,
    read_in,
    wait_injected,
)
from testbed.docker_engine import IMAGE
from testbed.timing import scaled, wait_for

SLEEP = ("sleep", "600")


def bounding_set_gaps(pid: int) -> list[int]:
    """Numbers of the capabilities this kernel has that `pid`'s bounding set lacks."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    with open(f"/proc/{pid}/status") as f:
        bounding = int(next(line.split()[1] for line in f if line.startswith("CapBnd:")), 16)
    return [number for number in range(last + 1) if not bounding >> number & 1]


def host_memtotal_kb() -> int:
    with open("/proc/meminfo") as f:
        return memtotal_kb(f.read())


# 1 -- the wrapper and the flags --------------------------------------------------------


def test_wrapper_puts_the_files_in_place_before_the_first_instruction(engine, cgroupfs_daemon):
    result = cgroupfs_cli(engine, "docker", "--mountpoint", cgroupfs_daemon.mountpoint, "run", "--rm",
                          "--network", "none", "-m", "15m", IMAGE, "cat", "/proc/meminfo")
    assert result.returncode == 0, result.stderr
    assert memtotal_kb(result.stdout) == 15360


def test_wrapper_passes_exit_status_and_stdio_through(engine, cgroupfs_daemon):
    result = cgroupfs_cli(engine, "docker", "--mountpoint", cgroupfs_daemon.mountpoint, "run", "--rm",
                          "--network", "none", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")


# A container's first instruction once read the host's MemTotal in about 1 run of 20:
# runc's init stats the bind sources before the limits are written, and what the
# daemon rendered then was still cached when the container's process opened the file.
# 60 runs catch a 5 % failure with probability 1 - 0.95**60 = 95 %.  The v2 lane, where
# each run takes ~9 s of emulated CPU, sets fewer (CGROUPFS_TEST_FIRST_READ_RUNS, see the
# Makefile): the race and its fix are the same code on both hierarchies.  One at a time:
# concurrent runs lengthen the time from runc's stat to the first read and so hide
# the race (measured with a 300 ms cache: 75 % of serial runs failed, 3-17 % of runs
# three at a time).
FIRST_READ_RUNS = int(os.environ.get("CGROUPFS_TEST_FIRST_READ_RUNS", "60"))


def test_flags_work_in_a_plain_docker_run(engine, cgroupfs_daemon):
    flags = cgroupfs_cli(engine, "flags", "--mountpoint", cgroupfs_daemon.mountpoint)
    assert flags.returncode == 0 and "\n" not in flags.stdout.strip()
    totals = [engine.cli("run", "--rm", "--network", "none", "-m", "15m", *flags.stdout.split(),
                         IMAGE, "awk", "/^MemTotal:/{print $2}", "/proc/meminfo").stdout.strip()
              for _ in range(FIRST_READ_RUNS)]
    wrong = [total for total in totals if total != "15360"]
    assert not wrong, f"{len(wrong)} of {FIRST_READ_RUNS} first reads were not 15360 kB: {wrong}"


def test_first_reads_are_right_whatever_the_cache_lifetime(engine, tmp_path):
    """The same first read from a daemon whose render cache (--cache-ttl-ms, the
    operator's choice) outlives runc's start-up, 150-300 ms here: anything rendered
    before the limits were written would be served to every container, so a few runs
    decide where the default 100 ms needs a quiet host to show it."""
    daemon = DaemonProcess(str(tmp_path / "mnt"), "--no-docker", "--cache-ttl-ms", "2000",
                           log_path=str(tmp_path / "cgroupfs.log"))
    try:
        daemon.start()
        flags = cgroupfs_cli(engine, "flags", "--mountpoint", daemon.mountpoint).stdout.split()
        # Opted out: a watching daemon of another test must not stack its own files on these.
        totals = [engine.cli("run", "--rm", "--network", "none", "--label", "cgroupfs.inject=false", "-m", "15m",
                             *flags, IMAGE, "awk", "/^MemTotal:/{print $2}", "/proc/meminfo").stdout.strip()
                  for _ in range(5)]
    finally:
        daemon.stop()
    assert totals == ["15360"] * 5


def test_watcher_leaves_healthy_flag_mounts_alone(engine, cgroupfs_daemon, containers):
    name = f"cgfs-test-flagged-{os.getpid()}"
    containers.created.append(name)
    started = cgroupfs_cli(engine, "docker", "--mountpoint", cgroupfs_daemon.mountpoint, "run", "-d", "--name", name,
                           "--network", "none", "-m", "48m", IMAGE, *SLEEP)
    assert started.returncode == 0, started.stderr
    control = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, control, cgroupfs_daemon.mountpoint)  # the watcher has seen both by now
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    mounts = read_in(engine, name, "/proc/self/mountinfo")
    assert sum("fuse.cgroupfs" in line for line in mounts.splitlines()) == len(CONTAINER_TARGETS)  # none stacked
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 48 * 1024


def test_wrapper_refuses_when_the_daemon_is_not_serving(engine, tmp_path):
    result = cgroupfs_cli(engine, "docker", "--mountpoint", str(tmp_path / "nothing"), "run", "--rm", IMAGE, "true")
    assert result.returncode != 0 and "not serving" in result.stderr
    assert not (tmp_path / "nothing").exists()  # Docker did not get to create directories there


# 2 -- the watcher ---------------------------------------------------------------------


def test_plain_docker_run_is_injected(engine, cgroupfs_daemon, containers):
    name = containers("-m", "64m", "--cpuset-cpus", "0", IMAGE, *SLEEP)
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)  # how fast: make bench-docker
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536
    assert processor_count(read_in(engine, name, "/proc/cpuinfo")) == 1
    assert read_in(engine, name, "/sys/devices/system/cpu/online").strip() == "0"


def test_injected_files_are_read_only_and_hide_the_mount_point(engine, cgroupfs_daemon, containers):
    name = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    write = engine.cli("exec", name, "sh", "-c", "echo 1 > /proc/meminfo", check=False)
    assert write.returncode != 0 and "Read-only" in write.stderr
    mounts = read_in(engine, name, "/proc/self/mountinfo")
    assert cgroupfs_daemon.mountpoint not in mounts
    assert sum("fuse.cgroupfs" in line for line in mounts.splitlines()) == len(CONTAINER_TARGETS)


# 3 -- heal after the daemon is killed --------------------------------------------------


def test_killed_daemon_is_healed_in_place_without_restarting_containers(engine, cgroupfs_daemon, containers):
    mountpoint = cgroupfs_daemon.mountpoint
    limits_mb = {containers("-m", f"{mb}m", IMAGE, *SLEEP): mb for mb in (32, 48, 64)}
    flagged = f"cgfs-test-flags-{os.getpid()}"
    containers.created.append(flagged)
    wrapped = cgroupfs_cli(engine, "docker", "--mountpoint", mountpoint, "run", "-d", "--name", flagged,
                           "--network", "none", "-m", "40m", IMAGE, *SLEEP)
    assert wrapped.returncode == 0, wrapped.stderr
    limits_mb[flagged] = 40
    for name in limits_mb:
        wait_injected(engine, name, mountpoint)
    started_at = {name: engine.inspect(name)["State"]["StartedAt"] for name in limits_mb}

    cgroupfs_daemon.kill(signal.SIGKILL)
    dead = engine.cli("exec", flagged, "cat", "/proc/meminfo", check=False)
    assert dead.returncode != 0 and "not connected" in dead.stderr  # what LXCFS users are left with
    late = containers("-m", "24m", IMAGE, *SLEEP)  # started while no daemon runs
    limits_mb[late] = 24

    cgroupfs_daemon.start()
    # How fast the heal is belongs to `make bench-docker` (benchmarks/docker_inject.py);
    # here only that it happens, with a deadline any loaded host meets.
    for name in limits_mb:
        wait_injected(engine, name, mountpoint, timeout=10.0)
    for name, mb in limits_mb.items():
        assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == mb * 1024, name
        assert read_in(engine, name, "/proc/uptime").strip()
    for name, when in started_at.items():
        assert engine.inspect(name)["State"]["StartedAt"] == when  # healed, not restarted


def test_a_reload_keeps_every_containers_files_and_knows_them_as_its_own(engine, cgroupfs_daemon, containers):
    """SIGHUP re-executes the daemon, which takes the live connections over: the
    container keeps the very same mounts (nothing healed, nothing stacked), and the
    new instance's check of every running container finds its own files in place."""
    name = containers("-m", "48m", IMAGE, *SLEEP)
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    pid = engine.init_pid(name)

    def our_mounts() -> list[str]:
        with open(f"/proc/{pid}/mountinfo") as f:
            return sorted(line.split(" - ")[0].split(" ", 2)[2] for line in f if " - fuse.cgroupfs" in line)

    before = our_mounts()
    offset = os.path.getsize(cgroupfs_daemon.log_path)

    def new_log() -> str:
        with open(cgroupfs_daemon.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    os.kill(cgroupfs_daemon.pid, signal.SIGHUP)
    wait_for(lambda: new_log().count("took over the live connection") == 2 and "running containers in" in new_log(),
             timeout=scaled(60), what="the reload and the new instance's first check")
    assert cgroupfs_daemon.process.poll() is None
    assert our_mounts() == before
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 48 * 1024
    for unexpected in ("healed", "injected", "alone", "Traceback", "ERROR"):
        assert unexpected not in new_log(), new_log()


# 4 -- containers that must not cause trouble -------------------------------------------


def test_label_opt_out_is_never_touched(engine, cgroupfs_daemon, containers):
    opted_out = containers("--label", "cgroupfs.inject=false", "-m", "64m", IMAGE, *SLEEP)
    control = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, control, cgroupfs_daemon.mountpoint)
    time.sleep(0.3)  # the opted-out one was handled first; give any straggler a moment
    assert injected_targets(engine.init_pid(opted_out), cgroupfs_daemon.mountpoint,
                            container_id=engine.inspect(opted_out)["Id"]) == set()
    assert memtotal_kb(read_in(engine, opted_out, "/proc/meminfo")) == host_memtotal_kb()


@pytest.mark.parametrize("options", [
    ["--read-only"],
    ["--privileged"],
    # what --privileged changes for us (unmasked /proc, rw /sys, CAP_SYS_ADMIN), on hosts
    # whose capability bounding set cannot start a fully privileged container
    ["--cap-add", "SYS_ADMIN", "--security-opt", "systempaths=unconfined"],
    ["--pid", "host"],
], ids=["read-only", "privileged", "unconfined", "pid-host"])
def test_special_containers_are_injected(engine, cgroupfs_daemon, containers, options):
    try:
        name = containers(*options, "-m", "64m", IMAGE, *SLEEP)
    except AssertionError as exc:
        missing = bounding_set_gaps(engine.process.pid)
        if "--privileged" in options and missing and "unable to apply caps: operation not permitted" in str(exc):
            # runc gives a privileged container every capability the kernel has; one
            # missing from the bounding set dockerd (and so runc) runs with makes every
            # privileged container fail to start.  A property of the host, not a missing
            # prerequisite of cgroupfs (README, Tests); "unconfined" covers the rest.
            pytest.skip(f"this host cannot start any --privileged container: capabilities {missing} "
                        "are missing from dockerd's bounding set (runc: unable to apply caps)")
        raise
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536


def test_containers_that_exit_immediately_cause_no_errors(engine, cgroupfs_daemon, containers):
    log_offset = os.path.getsize(cgroupfs_daemon.log_path)
    for _ in range(5):
        engine.cli("run", "--rm", "--network", "none", IMAGE, "true")
        containers(IMAGE, "true")
    survivor = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, survivor, cgroupfs_daemon.mountpoint)
    assert cgroupfs_daemon.process.poll() is None
    with open(cgroupfs_daemon.log_path, "rb") as f:
        f.seek(log_offset)
        new_log = f.read().decode(errors="replace")
    assert "exited before injection" in new_log or "exited during injection" in new_log
    for bad in ("Traceback", "ERROR", "WARNING cgroupfs.docker"):
        assert bad not in new_log, new_log


@pytest.mark.heavy
def test_thirty_containers_started_at_once_are_all_injected(engine, cgroupfs_daemon, containers):
    with ThreadPoolExecutor(max_workers=30) as pool:
        names = list(pool.map(lambda i: containers("-m", f"{16 + i}m", IMAGE, *SLEEP), range(30)))
    for name in names:
        wait_injected(engine, name, cgroupfs_daemon.mountpoint, timeout=10)
    with ThreadPoolExecutor(max_workers=10) as pool:
        totals = list(pool.map(lambda name: memtotal_kb(read_in(engine, name, "/proc/meminfo")), names))
    assert totals == [(16 + i) * 1024 for i in range(30)]


def test_sendfile_readers_get_their_own_container_values(engine, cgroupfs_daemon, containers):
    """busybox `cat` (Alpine's too) copies with sendfile(2): FUSE serves that from the
    page cache of the one shared inode, so concurrent readers must not see each other's files."""
    names = [containers("-m", f"{32 + i}m", IMAGE, *SLEEP) for i in range(8)]
    for name in names:
        wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            totals = list(pool.map(lambda name: memtotal_kb(cat_in(engine, name, "/proc/meminfo")), names))
        assert totals == [(32 + i) * 1024 for i in range(8)]


# 6 -- docker restart --------------------------------------------------------------------


def test_docker_restart_is_injected_again(engine, cgroupfs_daemon, containers):
    name = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    first_pid = engine.init_pid(name)
    engine.cli("restart", "-t", "0", name)
    assert engine.init_pid(name) != first_pid
    wait_injected(engine, name, cgroupfs_daemon.mountpoint, timeout=2)
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536


# 7 -- the namespace helper --------------------------------------------------------------


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def namespace_helper_of(daemon_pid: int) -> int:
    """The daemon's child running cgroupfs_daemon.namespace_helper (its own children are its forks)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == daemon_pid and b"cgroupfs_daemon.namespace_helper" in argv:
            found.append(int(entry))
    assert len(found) == 1, f"namespace helpers of {daemon_pid}: {found}"
    return found[0]


def test_namespace_helper_is_single_threaded_and_replaced_when_killed(engine, cgroupfs_daemon, containers):
    mountpoint = cgroupfs_daemon.mountpoint
    first = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, first, mountpoint)
    helper = namespace_helper_of(cgroupfs_daemon.pid)
    # The daemon runs the FUSE loop, the watcher and its pool...; the helper, which
    # forks the children that enter containers, runs one thread.
    assert threads(cgroupfs_daemon.pid) > 1
    assert threads(helper) == 1
    os.kill(helper, signal.SIGKILL)  # the test daemon's child, by pid
    second = containers("-m", "48m", IMAGE, *SLEEP)
    wait_injected(engine, second, mountpoint)
    assert memtotal_kb(read_in(engine, second, "/proc/meminfo")) == 48 * 1024
    replacement = namespace_helper_of(cgroupfs_daemon.pid)
    assert replacement != helper and threads(replacement) == 1
    assert f"namespace helper (pid {helper}) lost (exit status -9)" in cgroupfs_daemon.log()


# 5 -- Docker itself goes away (last: it ends every container) ---------------------------


def test_dockerd_stopped_and_started_again(engine, cgroupfs_daemon, containers):
    engine.stop()
    if os.path.exists(engine.socket):
        os.unlink(engine.socket)  # the "socket removed" case too
    # the filesystem keeps serving while Docker is gone
    with open(os.path.join(cgroupfs_daemon.mountpoint, "proc/meminfo")) as f:
        assert memtotal_kb(f.read()) > 0
    time.sleep(1.5)  # let the watcher fail a few reconnects
    engine.start()
    name = containers("-m", "64m", IMAGE, *SLEEP)
    wait_injected(engine, name, cgroupfs_daemon.mountpoint, timeout=10)
    assert memtotal_kb(read_in(engine, name, "/proc/meminfo")) == 65536
    assert cgroupfs_daemon.process.poll() is None
