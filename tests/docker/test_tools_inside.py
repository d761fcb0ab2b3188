"""Issue 12, inside Docker containers the watcher injected: the host's own tools
(glibc's getconf, util-linux, Python, node_exporter) run in the container, with the
host's /usr bound read-only, and read the container's cpu directory and files."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from cgroupfs.cgroups import CgroupReader, discover, read_proc_cgroup
from testbed.docker_checks import wait_injected
from testbed.docker_engine import HOST_TOOLS, IMAGE
from tests.conftest import require

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"  # Debian's prometheus-node-exporter (TEST_PACKAGES)

TOOLS = (
    "echo online=$(cat /sys/devices/system/cpu/online); "
    "echo conf=$(/usr/bin/getconf _NPROCESSORS_CONF); echo onln=$(/usr/bin/getconf _NPROCESSORS_ONLN); "
    "echo lscpu=$(/usr/bin/lscpu -p=CPU | grep -v '^#' | tr '\\n' ' '); "
    "/usr/bin/taskset -c $(cat /sys/devices/system/cpu/online) true && echo taskset=ok; "
    "echo python=$(/usr/bin/python3 -c 'import os; print(os.cpu_count())'); "
    "echo dirs=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | tr '\\n' ' ')"
)


def seen_in(engine, container: str) -> dict[str, str]:
    result = engine.cli("exec", container, "sh", "-c", TOOLS, check=False)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_getconf_lscpu_taskset_and_python_agree_on_the_containers_cpus(engine, cgroupfs_daemon, containers):
    require(os.cpu_count() >= 2, "needs two cpus for a cpuset of cpu1 and a quota below a cpuset of two")
    one = containers("--cpuset-cpus", "1", *HOST_TOOLS, IMAGE, "sleep", "600")
    capped = containers("--cpus", "0.5", "--cpuset-cpus", "0-1", *HOST_TOOLS, IMAGE, "sleep", "600")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: wait_injected(engine, name, cgroupfs_daemon.mountpoint), (one, capped)))
    # cpuset {1}: the kernel calls it cpu1 (online once read 0, and taskset -c 0 failed)
    assert seen_in(engine, one) == {"online": "1", "conf": "1", "onln": "1", "lscpu": "1", "taskset": "ok",
                                    "python": "1", "dirs": "/sys/devices/system/cpu/cpu1"}
    # a quota of half a cpu over cpus 0-1: one cpu, the lowest (_NPROCESSORS_CONF once said 2)
    assert seen_in(engine, capped) == {"online": "0", "conf": "1", "onln": "1", "lscpu": "0", "taskset": "ok",
                                       "python": "1", "dirs": "/sys/devices/system/cpu/cpu0"}


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"no {name} in node_exporter's output"
    return float(match.group(1))


def pressure_some_usec(path: str) -> int:
    with open(path) as f:
        return int(f.readline().rsplit("total=", 1)[1])


def test_node_exporter_pressure_and_vmstat_collectors_report_the_container(engine, cgroupfs_daemon, containers):
    require(os.access(NODE_EXPORTER, os.X_OK), "needs Debian's prometheus-node-exporter (make deps-test)")
    require(os.path.exists("/proc/pressure/cpu"), "needs a kernel with PSI (psi=1)")
    name = containers("-m", "64m", *HOST_TOOLS, IMAGE, NODE_EXPORTER, "--collector.disable-defaults",
                      "--collector.pressure", "--collector.vmstat", "--web.listen-address=127.0.0.1:9100")
    wait_injected(engine, name, cgroupfs_daemon.mountpoint)
    hierarchy = discover()
    paths = read_proc_cgroup(engine.init_pid(name))
    unified = hierarchy.v2.path_of(paths.v2 or "/") if hierarchy.v2 else None
    require(unified is not None and unified != hierarchy.v2.directory, "the container needs a cgroup2 cgroup")
    before = pressure_some_usec(os.path.join(unified, "cpu.pressure"))
    scrape = engine.cli("exec", name, "wget", "-qO-", "http://127.0.0.1:9100/metrics").stdout
    after = pressure_some_usec(os.path.join(unified, "cpu.pressure"))
    served_usec = metric(scrape, "node_pressure_cpu_waiting_seconds_total") * 1e6
    assert before - 1 <= served_usec <= after + 1  # the container's cgroup, not the host's
    assert pressure_some_usec("/proc/pressure/cpu") > after
    memory = CgroupReader(hierarchy).memory(paths)
    assert memory is not None
    assert 0 < metric(scrape, "node_vmstat_pgfault") <= dict(memory.vm_events)["pgfault"]  # read after
    assert metric(scrape, "node_vmstat_oom_kill") == 0
