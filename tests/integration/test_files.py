"""What processes inside real cgroups read through the real mount."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from testbed.timing import scaled
from tests.conftest import require

MIB = 1024 * 1024


def kb(text: str, key: str) -> int:
    return int(re.search(rf"^{re.escape(key)}:\s+(\d+)", text, re.M).group(1))


def read_in(cgroup, path: str, *, pidns: bool = False, cgroupns: bool = False) -> str:
    args = ["cat", path]
    if pidns or cgroupns:
        args = ["unshare", "-f"] + (["-p"] if pidns else []) + (["-C"] if cgroupns else []) + args
    result = cgroup.run(args, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def processors(cpuinfo: str) -> list[int]:
    return [int(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("processor")]


def test_a_15_mib_limit_reads_memtotal_15360_kb(mnt, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(15 * MIB)
    text = read_in(cgroup, f"{mnt}/proc/meminfo")
    assert kb(text, "MemTotal") == 15360
    assert kb(text, "MemFree") <= 15360


def test_private_cgroup_namespace_reader_is_still_resolved(mnt, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(15 * MIB)
    assert kb(read_in(cgroup, f"{mnt}/proc/meminfo", cgroupns=True), "MemTotal") == 15360


@pytest.mark.parametrize("parent_mib,child_mib", [(64, 32), (32, 64)])
def test_nested_limit_is_the_lowest_on_the_path(mnt, make_cgroup, parent_mib, child_mib):
    parent = make_cgroup()
    child = parent.child("inner")
    parent.set_memory_limit(parent_mib * MIB)
    child.set_memory_limit(child_mib * MIB)
    assert kb(read_in(child, f"{mnt}/proc/meminfo"), "MemTotal") == 32 * 1024


def test_memfree_falls_when_the_reader_allocates(mnt, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(64 * MIB)
    script = (
        "import re,sys,time\n"
        f"def free():\n t=open('{mnt}/proc/meminfo').read(); return int(re.search(r'^MemFree:\\s+(\\d+)', t, re.M).group(1))\n"
        "before=free()\n"
        "block=bytearray(b'\\x01')*(8<<20)\n"
        "time.sleep(0.25)\n"  # past the daemon's 100 ms render cache
        "after=free()\n"
        "print(before, after)\n"
    )
    result = cgroup.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    before, after = map(int, result.stdout.split())
    assert before - after >= 7 * 1024, (before, after)   # 8 MiB allocated; allow page rounding
    assert before - after <= 12 * 1024, (before, after)


def test_cpuset_of_one_cpu_shows_its_kernel_id(mnt, make_cgroup):
    require(os.cpu_count() >= 2, "needs a second cpu to put the cgroup on")
    last = max(os.sched_getaffinity(0))
    cgroup = make_cgroup()
    cgroup.set_cpus(str(last))
    assert processors(read_in(cgroup, f"{mnt}/proc/cpuinfo")) == [last]
    assert read_in(cgroup, f"{mnt}/sys/devices/system/cpu/online") == f"{last}\n"
    stat = read_in(cgroup, f"{mnt}/proc/stat")
    assert re.findall(r"^cpu\d+ ", stat, re.M) == [f"cpu{last} "]
    # util-linux taskset to the cpus `online` names: EINVAL when they are not the cgroup's
    taskset = cgroup.run(["sh", "-c", f"taskset -c $(cat {mnt}/sys/devices/system/cpu/online) true"], timeout=30)
    assert taskset.returncode == 0, taskset.stderr.decode()


def test_half_a_cpu_quota_shows_one_cpu(mnt, make_cgroup):
    require(os.cpu_count() >= 2, "needs at least two cpus to show the quota cap")
    cgroup = make_cgroup()
    cgroup.set_cpu_quota(50_000, 100_000)
    assert processors(read_in(cgroup, f"{mnt}/proc/cpuinfo")) == [0]
    assert read_in(cgroup, f"{mnt}/sys/devices/system/cpu/online") == "0\n"


def cpu_ticks(stat_text: str) -> int:
    fields = stat_text.splitlines()[0].split()
    return int(fields[1]) + int(fields[3])  # user + system


def procs_running(stat_text: str) -> int:
    return int(re.search(r"^procs_running (\d+)", stat_text, re.M).group(1))


# The busy loops below load the host too, so a daemon that served the host's file
# would show them to every reader: each test also reads through an idle sibling
# cgroup at the same moment and asserts that it does not see them.

def test_stat_cpu_time_grows_by_what_a_busy_loop_burned(mnt, make_cgroup):
    busy_cgroup, idle_cgroup = make_cgroup(), make_cgroup()
    before = [cpu_ticks(read_in(cgroup, f"{mnt}/proc/stat")) for cgroup in (busy_cgroup, idle_cgroup)]
    busy = busy_cgroup.popen([sys.executable, "-c",
                              "import time\nend=time.process_time()+1.0\nwhile time.process_time()<end: pass"])
    _, status, usage = os.wait4(busy.pid, 0)
    busy.returncode = os.waitstatus_to_exitcode(status)
    assert busy.returncode == 0
    time.sleep(0.2)  # past the render cache
    after = [cpu_ticks(read_in(cgroup, f"{mnt}/proc/stat")) for cgroup in (busy_cgroup, idle_cgroup)]
    busy_delta, idle_delta = after[0] - before[0], after[1] - before[1]
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    # The kernel's own account of what the loop burned (its start-up included, which
    # an emulated machine makes long) is the reference; the `cat`s add a little.
    burned = (usage.ru_utime + usage.ru_stime) * ticks_per_second
    assert 0.8 * burned - 2 <= busy_delta <= 1.2 * burned + 0.2 * ticks_per_second, (before, after, burned)
    # only its own `cat`s ran in the idle sibling (0.1 s here, more under emulation); the
    # host's counters grew by the whole loop and more
    assert idle_delta <= max(0.1 * ticks_per_second, 0.2 * busy_delta), (before, after)


def test_procs_running_counts_the_containers_runnable_tasks(mnt, make_cgroup):
    busy_cgroup, idle_cgroup = make_cgroup(), make_cgroup()
    busy = [busy_cgroup.popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        time.sleep(0.3)
        running = procs_running(read_in(busy_cgroup, f"{mnt}/proc/stat"))
        idle_running = procs_running(read_in(idle_cgroup, f"{mnt}/proc/stat"))
        # Both loops are runnable whenever they are looked at (R, on a cpu or waiting
        # for one); the reading `cat` waits for our answer (D), but allow for it.
        assert 2 <= running <= 3, running
        # The host's count includes both loops and the daemon thread answering: >= 3.
        assert idle_running <= 1, idle_running
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_diskstats_grows_after_direct_io(mnt, make_cgroup, workdir):
    cgroup = make_cgroup()
    device = os.stat(workdir).st_dev
    major, minor = os.major(device), os.minor(device)
    cgroup.enable_io_accounting(major, minor)
    target = os.path.join(workdir, "direct-io.bin")
    try:
        result = cgroup.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=4", "oflag=direct"], timeout=60)
        require(result.returncode == 0 or b"Invalid argument" not in result.stderr,
                f"{workdir} does not support O_DIRECT (e.g. tmpfs); needs a block-device filesystem")
        assert result.returncode == 0, result.stderr.decode()
        time.sleep(0.2)
        lines = [line.split() for line in read_in(cgroup, f"{mnt}/proc/diskstats").splitlines()]
        mine = [fields for fields in lines if (int(fields[0]), int(fields[1])) == (major, minor)]
        assert mine, f"device {major}:{minor} missing from {lines}"
        sectors_written = int(mine[0][9])
        assert sectors_written >= 4 * MIB // 512
    finally:
        cgroup.disable_io_accounting(major, minor)
        if os.path.exists(target):
            os.unlink(target)


def test_uptime_of_a_fresh_pid_namespace_is_small(mnt, make_cgroup):
    cgroup = make_cgroup()
    up, idle = map(float, read_in(cgroup, f"{mnt}/proc/uptime", pidns=True).split())
    assert 0 <= up < scaled(5)
    with open("/proc/uptime") as f:
        assert float(f.read().split()[0]) > up  # this host has been up longer than the test


def test_loadavg_rises_with_two_busy_loops(mnt, make_cgroup):
    busy_cgroup, idle_cgroup = make_cgroup(), make_cgroup()
    busy = [busy_cgroup.popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        # The sampler runs every 5 s; the kernel's own 1-minute average of 2 runnable
        # tasks is 2*(1-(1884/2048)^n) after n samples: 0.44 after 3, 0.57 after 4.
        time.sleep(21)
        fields = read_in(busy_cgroup, f"{mnt}/proc/loadavg").split()
        idle_fields = read_in(idle_cgroup, f"{mnt}/proc/loadavg").split()
        assert float(fields[0]) > 0.5, fields
        running, total = map(int, fields[3].split("/"))
        assert 2 <= total <= 3, fields  # the loops, and the reading cat
        # The host's average rose by as much (the same loops run there); the idle
        # sibling never had a task to count, and holds nothing but its reader.
        assert idle_fields[:3] == ["0.00", "0.00", "0.00"], idle_fields
        assert int(idle_fields[3].split("/")[1]) <= 1, idle_fields
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_a_host_reader_gets_the_host_files(mnt, hierarchy):
    # This test process is not necessarily in the root cgroups; a child moved there is.
    from testbed.cgroups import TestCgroup

    root = TestCgroup.__new__(TestCgroup)
    root.hierarchy = hierarchy
    root.relative = ""
    root.directories = {}
    for controller in ("memory", "cpu", "cpuacct", "cpuset", "blkio", "io", "pids"):
        version = hierarchy.version_of(controller)
        if version == 1:
            root.directories[controller] = hierarchy.v1[controller].directory
        elif version == 2:
            root.directories[controller] = hierarchy.v2.directory
    for name in ("swaps", "cpuinfo"):
        result = root.run(["cat", f"{mnt}/proc/{name}"])
        with open(f"/proc/{name}") as f:
            native = f.read()
        if name == "cpuinfo":  # the clock rate line moves between two reads
            strip = lambda t: re.sub(r"^cpu MHz.*$", "", t, flags=re.M)  # noqa: E731
            assert strip(result.stdout.decode()) == strip(native)
        else:
            assert result.stdout.decode() == native
    meminfo = root.run(["cat", f"{mnt}/proc/meminfo"]).stdout.decode()
    with open("/proc/meminfo") as f:
        native = f.read()
    assert kb(meminfo, "MemTotal") == kb(native, "MemTotal")
    assert [line.split(":")[0] for line in meminfo.splitlines()] == [line.split(":")[0] for line in native.splitlines()]


def test_show_prints_what_the_process_reads(mnt, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(15 * MIB)
    sleeper = cgroup.popen(["sleep", "30"])
    try:
        shown = subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", "show", "meminfo", "--pid", str(sleeper.pid)],
                               capture_output=True, timeout=30, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        assert shown.returncode == 0, shown.stderr.decode()
        assert kb(shown.stdout.decode(), "MemTotal") == 15360
        assert kb(read_in(cgroup, f"{mnt}/proc/meminfo"), "MemTotal") == 15360
    finally:
        sleeper.kill()
        sleeper.wait()


def test_concurrent_sendfile_readers_in_two_cgroups_never_mix(mnt, make_cgroup):
    """busybox cat uses sendfile, which goes through the one page cache all readers share."""
    import shutil

    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox (Debian: busybox-static) is not installed")
    small, large = make_cgroup(), make_cgroup()
    small.set_memory_limit(15 * MIB)
    large.set_memory_limit(64 * MIB)
    loop = f"for i in $(seq 40); do {busybox} cat {mnt}/proc/meminfo | {busybox} head -1; done"
    readers = [(cgroup, cgroup.popen(["sh", "-c", loop], stdout=subprocess.PIPE))
               for cgroup in (small, large, small, large)]
    for cgroup, process in readers:
        out, _ = process.communicate(timeout=120)
        totals = {int(line.split()[1]) for line in out.decode().splitlines()}
        assert totals == ({15360} if cgroup is small else {65536}), totals


def test_a_kept_open_file_read_again_at_offset_0_is_fresh(mnt, make_cgroup):
    """procps keeps /proc/meminfo open and rewinds it: each pass must be rendered anew."""
    cgroup = make_cgroup()
    cgroup.set_memory_limit(64 * MIB)
    reader = os.path.join(os.path.dirname(__file__), "rewinding_reader.py")
    result = cgroup.run([sys.executable, reader, f"{mnt}/proc/meminfo", str(scaled(20))], timeout=scaled(60))
    assert result.returncode == 0, result.stderr.decode()
    before, after, _passes = map(int, result.stdout.split())
    assert before - after >= 12 * 1024, (before, after)  # 16 MiB touched on the same descriptor


def busy_and_total_ticks(stat_text: str) -> tuple[int, int]:
    fields = [int(value) for value in stat_text.splitlines()[0].split()[1:]]
    return sum(fields[:3]), sum(fields[:8])  # user + nice + system; everything


def cgroup_cpu_seconds(cgroup) -> float:
    """The kernel's own count of the cgroup's cpu time (independent of our files)."""
    if cgroup.is_v2("cpu"):
        with open(os.path.join(cgroup.dir("cpu"), "cpu.stat")) as f:
            return int(re.search(r"^usage_usec (\d+)", f.read(), re.M).group(1)) / 1e6
    with open(os.path.join(cgroup.dir("cpuacct"), "cpuacct.usage")) as f:
        return int(f.read()) / 1e9


def test_a_busy_loop_at_half_a_cpu_quota_reads_fully_busy(mnt, make_cgroup):
    """idle is measured against the quota: busy / (busy + idle) over an interval is the
    cpu time used / (0.5 cpu x the interval), ~100% flat out, where it was at most 50%.
    (On a shared host the spinner may get less than its quota: the kernel's count of
    what it got is the reference.)"""
    cgroup = make_cgroup()
    cgroup.set_cpu_quota(50_000, 100_000)
    spinner = cgroup.popen(["sh", "-c", "while :; do :; done"])
    try:
        time.sleep(0.5)  # throttling under way
        before = busy_and_total_ticks(read_in(cgroup, f"{mnt}/proc/stat"))
        used_before, wall_before = cgroup_cpu_seconds(cgroup), time.monotonic()
        time.sleep(3)
        used_after, wall_after = cgroup_cpu_seconds(cgroup), time.monotonic()
        after = busy_and_total_ticks(read_in(cgroup, f"{mnt}/proc/stat"))
    finally:
        spinner.kill()
        spinner.wait()
    busy, total = after[0] - before[0], after[1] - before[1]
    expected = min(1.0, (used_after - used_before) / (0.5 * (wall_after - wall_before)))
    # Before, busy / total was half of `expected` (measured against the whole cpu).
    # 0.15: the two clocks (our ticks, the kernel's usage) are read a moment apart on a busy host
    assert total > 0 and abs(busy / total - expected) <= 0.15, (before, after, expected)


def test_a_cpu_quota_only_cgroup_gets_its_parents_memory_limit_and_cpus(mnt, make_cgroup, hierarchy):
    """A systemd unit with CPUQuota= and nothing else, under a slice with a memory limit
    and a cpuset.  On cgroup v2 the unit's parent enables only `cpu` for it, so it has no
    memory.* or cpuset.* files (the view once fell back to the host's wholesale); on v1
    every cgroup has every file.  Either way: the slice's limit, the slice's cpus."""
    require(os.cpu_count() >= 2, "needs a second cpu for the slice's cpuset")
    last = max(os.sched_getaffinity(0))
    slice_ = make_cgroup()
    slice_.set_memory_limit(48 * MIB)
    slice_.set_cpus(str(last))
    command = ["cat", f"{mnt}/proc/meminfo", f"{mnt}/sys/devices/system/cpu/online"]
    if slice_.is_v2("cpu"):
        service = os.path.join(slice_.dir("cpu"), "quota.service")
        with open(os.path.join(slice_.dir("cpu"), "cgroup.subtree_control"), "w") as f:
            f.write("+cpu")
        os.mkdir(service)
        assert not os.path.exists(os.path.join(service, "memory.max"))  # the case under test
        with open(os.path.join(service, "cpu.max"), "w") as f:
            f.write("50000 100000")

        def enter():  # the slice itself may hold no process now: straight into the service
            with open(os.path.join(service, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))

        result = subprocess.run(command, preexec_fn=enter, capture_output=True, timeout=30)
    else:
        service_cgroup = slice_.child("quota.service")
        service_cgroup.set_cpu_quota(50_000, 100_000)
        result = service_cgroup.run(command, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert kb(text, "MemTotal") == 48 * 1024
    assert text.splitlines()[-1] == str(last)
