"""The cpu directory and the cpu ids, with the tools that read them: glibc's getconf,
util-linux's lscpu and taskset, Python.  Each runs inside a real cgroup with our cpu
directory bound over /sys/devices/system/cpu in a private mount namespace (what the
Docker flags and the injection do for a container)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import require

CPU_ENTRY = re.compile(r"cpu[0-9]+\Z")
HOST_CPU_DIRECTORY = "/sys/devices/system/cpu"


def run_with_cpu_directory(cgroup, mnt: str, script: str) -> dict[str, str]:
    """`script`'s `key=value` lines, run in `cgroup` with our directory over the host's."""
    result = cgroup.run(["unshare", "-m", "sh", "-c",
                         f"mount --bind {mnt}/sys/devices/system/cpu {HOST_CPU_DIRECTORY} && {script}"], timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)


TOOLS = (
    "echo online=$(cat /sys/devices/system/cpu/online); "
    "echo possible=$(cat /sys/devices/system/cpu/possible); "
    "echo conf=$(getconf _NPROCESSORS_CONF); echo onln=$(getconf _NPROCESSORS_ONLN); "
    "echo lscpu=$(lscpu -p=CPU | grep -v '^#' | tr '\\n' ' '); "
    "taskset -c $(cat /sys/devices/system/cpu/online) true && echo taskset=ok; "
    f"echo python=$({sys.executable} -c 'import os; print(os.cpu_count())'); "
    "echo entries=$(ls /sys/devices/system/cpu | tr '\\n' ' ')"
)


def host_entries() -> set[str]:
    return {name for name in os.listdir(HOST_CPU_DIRECTORY) if not CPU_ENTRY.match(name)}


def test_cpuset_of_the_last_cpu_every_tool_agrees_on_its_id(mnt, make_cgroup):
    require(os.cpu_count() >= 2, "needs a second cpu to put the cgroup on")
    last = max(os.sched_getaffinity(0))
    cgroup = make_cgroup()
    cgroup.set_cpus(str(last))
    seen = run_with_cpu_directory(cgroup, mnt, TOOLS)
    assert (seen["online"], seen["possible"], seen["conf"], seen["onln"]) == (str(last), str(last), "1", "1")
    assert seen["lscpu"].split() == [str(last)]
    assert seen["taskset"] == "ok" and seen["python"] == "1"
    entries = set(seen["entries"].split())
    assert {name for name in entries if CPU_ENTRY.match(name)} == {f"cpu{last}"}
    assert entries - {f"cpu{last}"} == host_entries()  # cpufreq, vulnerabilities, ... are the host's


def test_half_a_cpu_quota_shows_one_cpu_directory_to_glibc(mnt, make_cgroup):
    # quota 0.5 over two cpus: glibc's _NPROCESSORS_CONF counted the host's two cpuN directories
    require(os.cpu_count() >= 2, "needs at least two cpus to show the quota cap")
    first = min(os.sched_getaffinity(0))
    cgroup = make_cgroup()
    cgroup.set_cpu_quota(50_000, 100_000)
    seen = run_with_cpu_directory(cgroup, mnt, TOOLS)
    assert (seen["online"], seen["conf"], seen["onln"], seen["python"]) == (str(first), "1", "1", "1")
    assert [name for name in seen["entries"].split() if CPU_ENTRY.match(name)] == [f"cpu{first}"]


def test_cpu_entries_are_the_hosts_and_hidden_ones_are_absent_per_reader(mnt, make_cgroup):
    require(os.cpu_count() >= 2, "needs a second cpu to hide")
    first, last = min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0))
    cgroup = make_cgroup()
    cgroup.set_cpus(str(last))
    hidden, shown = f"{mnt}/sys/devices/system/cpu/cpu{first}", f"{mnt}/sys/devices/system/cpu/cpu{last}"
    assert os.path.isdir(hidden)  # this test's own process sees every cpu
    result = cgroup.run(["sh", "-c", f"test -e {hidden} && echo seen; cat {shown}/topology/core_id; "
                                     f"readlink {shown}/subsystem"], timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    with open(f"{HOST_CPU_DIRECTORY}/cpu{last}/topology/core_id") as f:
        core_id = f.read()
    assert result.stdout.decode() == core_id + os.readlink(f"{HOST_CPU_DIRECTORY}/cpu{last}/subsystem") + "\n"
    assert os.path.isdir(hidden)  # a name another reader could not see is not cached for this one


def test_show_lists_the_cpu_directory_a_process_finds(mnt, make_cgroup):
    require(os.cpu_count() >= 2, "needs a second cpu to put the cgroup on")
    last = max(os.sched_getaffinity(0))
    cgroup = make_cgroup()
    cgroup.set_cpus(str(last))
    sleeper = cgroup.popen(["sleep", "30"])
    try:
        shown = subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", "show", "/sys/devices/system/cpu",
                                "--pid", str(sleeper.pid)], capture_output=True, timeout=30)
        assert shown.returncode == 0, shown.stderr.decode()
        listed = cgroup.run(["ls", f"{mnt}/sys/devices/system/cpu"], timeout=30).stdout.decode()
        assert shown.stdout.decode().split() == sorted(listed.split())
        assert [name for name in listed.split() if CPU_ENTRY.match(name)] == [f"cpu{last}"]
    finally:
        sleeper.kill()
        sleeper.wait()
