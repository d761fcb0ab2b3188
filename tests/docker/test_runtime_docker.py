"""`cgroupfs-runtime` as a private dockerd's default runtime: the first instruction reads the container.

The engine is started with `--add-runtime cgroupfs=<script> --default-runtime cgroupfs`
(and a second runtime whose real runtime is crun); a daemon watching that engine
serves the files.  The first-instruction read is repeated
CGROUPFS_RUNTIME_TEST_RUNS times (default 60: a 5% failure rate passes 60 runs
with probability 0.95^60 < 5%); the v2 lane, where each `docker run` takes
seconds, sets fewer (the Makefile's test-v2).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile

import pytest

from cgroupfs.cgroups.hierarchy import discover
from testbed.daemon_process import DaemonProcess
from testbed.docker_engine import HOST_TOOLS, IMAGE
from testbed.runtime_engines import runtime_log, write_runtime_script
from testbed.timing import scaled, wait_for
from tests.conftest import require
from tests.docker.engine import running_engine

RUNS = int(os.environ.get("CGROUPFS_RUNTIME_TEST_RUNS", "60"))
MEMTOTAL = ["awk", "/^MemTotal:/{print $2}", "/proc/meminfo"]
MIB = 1 << 20
_names = itertools.count()


@pytest.fixture(scope="module")
def setup():
    """(engine, daemon) with the wrapper as the engine's default runtime."""
    require(os.geteuid() == 0, "Docker tests need root")
    base = tempfile.mkdtemp(prefix="cgfs-rt-", dir="/tmp")
    mountpoint = os.path.join(base, "mnt")
    runc = write_runtime_script(base, mountpoint, "runc")
    extra = ["--add-runtime", f"cgroupfs={runc}", "--default-runtime", "cgroupfs"]
    if shutil.which("crun"):
        extra += ["--add-runtime", f"cgroupfs-crun={write_runtime_script(base, mountpoint, 'crun')}"]
    os.mkdir(os.path.join(base, "docker"))
    try:
        with running_engine(tuple(extra), base_dir=os.path.join(base, "docker")) as engine:
            daemon = DaemonProcess(mountpoint, "--docker-host", engine.host, log_path=os.path.join(base, "d.log"))
            try:
                daemon.start()
                yield engine, daemon
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def runtime_said(engine) -> str:
    """The wrapper's stderr lines so far (e.g. that the mount did not answer in time)."""
    try:
        with open(runtime_log(os.path.dirname(engine.base))) as f:
            return f.read()[-2000:] or "nothing"
    except OSError:
        return "nothing"


def run(engine, *args: str, check: bool = True) -> str:
    return engine.cli("run", "--rm", "--network", "none", *args, check=check, timeout=120).stdout.strip()


def test_first_instruction_reads_the_memory_limit(setup):
    engine, _daemon = setup
    seen = [run(engine, "-m", "15m", IMAGE, *MEMTOTAL) for _ in range(RUNS)]
    wrong = [value for value in seen if value != "15360"]
    assert not wrong, (f"{len(wrong)} of {RUNS} first instructions read another MemTotal: {wrong[:5]}; "
                       f"cgroupfs-runtime said: {runtime_said(engine)}")


def test_first_instruction_reads_the_cpu_count(setup):
    engine, _daemon = setup
    shown = run(engine, "--cpuset-cpus", "0", IMAGE, "sh", "-c",
                "cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo")
    assert shown.split() == ["0", "1"]


def test_crun_as_the_real_runtime(setup):
    engine, _daemon = setup
    require(shutil.which("crun") is not None, "crun is not installed (Debian package crun)")
    if discover().mode == "hybrid":
        # A fact of the host, not a missing prerequisite: crun refuses every container on
        # a hybrid host ("cgroups in hybrid mode not supported").  The v2 lane runs it.
        pytest.skip("crun does not run containers on hybrid cgroup hosts")
    shown = run(engine, "--runtime", "cgroupfs-crun", "-m", "15m", IMAGE, "sh", "-c",
                "awk '/^MemTotal:/{print $2}' /proc/meminfo; free")
    assert shown.split()[0] == "15360"
    assert free_total(shown) == "15360", shown  # crun hands the seccomp listener over too


def test_label_opts_out(setup):
    engine, _daemon = setup
    shown = run(engine, "--label", "cgroupfs.inject=false", "-m", "15m", IMAGE, "sh", "-c",
                "awk '/^MemTotal:/{print $2}' /proc/meminfo; grep -c fuse /proc/self/mountinfo || true")
    memtotal, fuse_mounts = shown.split()
    assert memtotal != "15360" and fuse_mounts == "0"


def test_own_volume_is_left_alone(setup, tmp_path):
    engine, _daemon = setup
    own = tmp_path / "meminfo"
    own.write_text("MemTotal:             42 kB\n")
    shown = run(engine, "-v", f"{own}:/proc/meminfo:ro", "--cpuset-cpus", "0", "-m", "15m", IMAGE, "sh", "-c",
                "awk '/^MemTotal:/{print $2}' /proc/meminfo; grep -c ^processor /proc/cpuinfo")
    assert shown.split() == ["42", "1"]  # the user's meminfo, our cpuinfo


def test_restart_and_exec(setup):
    engine, _daemon = setup
    name = f"cgfs-rt-{os.getpid()}-{next(_names)}"
    first = "awk '/^MemTotal:/{print $2}' /proc/meminfo > /tmp/first; exec sleep 600"
    engine.cli("run", "-d", "--name", name, "--network", "none", "-m", "15m", IMAGE, "sh", "-c", first)
    try:
        for _ in range(2):
            wait_for(lambda: engine.cli("exec", name, "cat", "/tmp/first", check=False).stdout.strip(),
                     scaled(30), what="the container's first instruction")
            assert engine.cli("exec", name, "cat", "/tmp/first").stdout.strip() == "15360", runtime_said(engine)
            assert engine.cli("exec", name, *MEMTOTAL).stdout.strip() == "15360"
            engine.cli("restart", "-t", "0", name, timeout=120)
    finally:
        engine.cli("rm", "-f", name, check=False)


def test_daemon_absent_the_container_starts_and_gets_its_files_later(setup):
    engine, daemon = setup
    name = f"cgfs-rt-{os.getpid()}-{next(_names)}"
    daemon.stop()
    try:
        engine.cli("run", "-d", "--name", name, "--network", "none", "-m", "15m", IMAGE, "sleep", "600")
        assert engine.cli("exec", name, *MEMTOTAL).stdout.strip() != "15360"  # the host's file
        # No interception either: sysinfo(2) is the kernel's (busybox free: the host's total).
        assert free_total(engine.cli("exec", name, "free").stdout) == host_memtotal_kb()
        daemon.start()
        # The watcher's start-up sweep injects it.
        wait_for(lambda: engine.cli("exec", name, *MEMTOTAL, check=False).stdout.strip() == "15360",
                 scaled(20), what="the files after the daemon started")
    finally:
        engine.cli("rm", "-f", name, check=False)
        if not daemon.is_serving():
            daemon.start()


def free_total(output: str) -> str:
    """busybox free's total memory (kB) from its "Mem:" line."""
    return next(line.split()[1] for line in output.splitlines() if line.startswith("Mem:"))


def host_memtotal_kb() -> str:
    with open("/proc/meminfo", encoding="ascii") as f:
        return f.readline().split()[1]


# Inside the container: the raw system call (syscall(2) with sysinfo's number, every
# field of the struct) beside the files it must agree with, and glibc's sysconf.
RAW_SYSINFO = r"""
import ctypes, json, os, platform
number = {"x86_64": 99, "aarch64": 179}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
buffer = ctypes.create_string_buffer(112)
assert libc.syscall(number, buffer) == 0, ctypes.get_errno()
fields = dict(zip(["uptime", "load1", "load5", "load15", "totalram", "freeram", "sharedram", "bufferram",
                   "totalswap", "freeswap", "procs", "pad", "totalhigh", "freehigh", "mem_unit"],
                  __import__("struct").unpack("=q3Q6QHH4x2QI4x", buffer.raw)))
meminfo = {line.split(":")[0]: int(line.split()[1]) for line in open("/proc/meminfo")}
print(json.dumps({"sysinfo": fields, "meminfo": meminfo, "uptime": open("/proc/uptime").read(),
                  "loadavg": open("/proc/loadavg").read(),
                  "phys": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                  "avphys": os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")}))
"""


def test_sysinfo_answers_with_the_containers_own_numbers(setup):
    """Issue 15 in a `docker run -m 64m --cpus 1` container: busybox free and uptime,
    Python's sysconf and the raw call all tell the container's values."""
    engine, _daemon = setup
    name = f"cgfs-rt-{os.getpid()}-{next(_names)}"
    engine.cli("run", "-d", "--name", name, "--network", "none", "-m", "64m", "--cpus", "1", *HOST_TOOLS, IMAGE,
               "sleep", "600")
    try:
        assert free_total(engine.cli("exec", name, "free").stdout) == "65536", runtime_said(engine)
        uptime = engine.cli("exec", name, "uptime").stdout
        # busybox uptime: " 10:42:01 up 0 min,  0 users,  load average: 0.00, 0.00, 0.00"
        assert " up 0 min," in uptime or " up 1 min," in uptime, uptime  # the container's age, not the host's
        assert "load average: " in uptime, uptime
        seen = json.loads(engine.cli("exec", name, "python3", "-c", RAW_SYSINFO).stdout)
    finally:
        engine.cli("rm", "-f", name, check=False)
    raw, meminfo = seen["sysinfo"], seen["meminfo"]
    assert seen["phys"] == 64 * MIB
    assert raw["mem_unit"] == 1 and raw["totalhigh"] == raw["freehigh"] == 0
    assert raw["totalram"] == meminfo["MemTotal"] * 1024 == 64 * MIB
    assert raw["totalswap"] == meminfo["SwapTotal"] * 1024 and raw["freeswap"] == meminfo["SwapFree"] * 1024
    # Free memory and the rest move between the two reads: close, and the container's.
    assert abs(raw["freeram"] - meminfo["MemFree"] * 1024) <= 4 * MIB, (raw, meminfo)
    assert abs(seen["avphys"] - raw["freeram"]) <= 4 * MIB
    assert raw["sharedram"] <= 64 * MIB and raw["bufferram"] <= 64 * MIB
    assert abs(raw["uptime"] - float(seen["uptime"].split()[0])) <= 2
    averages = [float(value) for value in seen["loadavg"].split()[:3]]
    loads = [raw["load1"] / 65536, raw["load5"] / 65536, raw["load15"] / 65536]
    assert all(abs(load - average) <= 0.1 for load, average in zip(loads, averages)), (loads, averages)
    total_tasks = int(seen["loadavg"].split()[3].split("/")[1])
    assert 1 <= raw["procs"] <= 16 and abs(raw["procs"] - total_tasks) <= 2, (raw["procs"], seen["loadavg"])
