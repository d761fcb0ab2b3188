"""Key numbers of every file, pinned independently of the golden files."""

import re
import shutil

import pytest

from cgroupfs.cgroups.model import CpuStats, MemoryStats
from cgroupfs.files import cpu_online, loadavg, meminfo, stat, swaps, uptime
from cgroupfs.host.meminfo import parse_meminfo
from cgroupfs.host.stat import parse_stat
from cgroupfs.layout import ALL_TARGETS
from cgroupfs.rising import RisingCounters
from cgroupfs.table import DIRECTORIES, FILES
from tests.unit.fixture_trees import (
    HYBRID,
    HYBRID_CHILD_PID,
    HYBRID_ROOT_PID,
    V2,
    V2_15M_PID,
    V2_NOSWAP_PID,
    V2_PARTIAL_PID,
    V2_POD_PID,
    V2_UNLIMITED_PID,
    V2_VANISHED_PID,
    server,
)


def read(tree, pid, path, **kwargs):
    return server(tree, **kwargs).content(path, pid).decode()


def meminfo_kb(text):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+):\s+(\d+)", text, re.M)}


def host_file(tree, name):
    with open(f"{tree}/proc/{name}") as f:
        return f.read()


def test_every_file_of_the_table_is_mounted_into_containers():
    # each file is a target or inside one (the cpu directory), and each target is served
    for path in FILES:
        assert path in ALL_TARGETS or path.rsplit("/", 1)[0] in ALL_TARGETS
    assert set(ALL_TARGETS) <= set(FILES) | set(DIRECTORIES)


@pytest.mark.parametrize("tree,pid,total_kb", [
    (HYBRID, HYBRID_CHILD_PID, 15360),
    (V2, V2_15M_PID, 15360),
    (V2, V2_POD_PID, 32768),   # the ancestor's 32 MiB, not the container's 64 MiB
])
def test_meminfo_total_is_the_tightest_limit(tree, pid, total_kb):
    values = meminfo_kb(read(tree, pid, "proc/meminfo"))
    assert values["MemTotal"] == total_kb
    assert 0 <= values["MemFree"] <= values["MemAvailable"] <= values["MemTotal"]


def test_meminfo_v2_fields_from_memory_stat():
    values = meminfo_kb(read(V2, V2_15M_PID, "proc/meminfo"))
    assert values["MemFree"] == 15360 - 5120
    assert values["MemAvailable"] == 10240 + 512 + 1536 + 256  # free + active/inactive file + slab_reclaimable
    assert (values["Cached"], values["Shmem"], values["Dirty"], values["Writeback"]) == (3072, 1024, 128, 64)
    assert (values["SwapTotal"], values["SwapFree"]) == (32768, 28672)
    host = meminfo_kb(host_file(V2, "meminfo"))
    # the kernel's (RAM - hugetlb) x overcommit_ratio + swap, over the container's memory and swap
    ram_part = (host["CommitLimit"] - host["SwapTotal"]) * 15360 // host["MemTotal"]
    assert abs(values["CommitLimit"] - (ram_part + 32768)) <= 1
    assert values["Committed_AS"] == (1024 + 1024 + 4096)  # anon + shmem + swap used, not the host's


def test_meminfo_unlimited_shows_host_total_and_never_more_free_than_the_host():
    values = meminfo_kb(read(V2, V2_UNLIMITED_PID, "proc/meminfo"))
    host = meminfo_kb(host_file(V2, "meminfo"))
    assert values["MemTotal"] == host["MemTotal"]
    # host total - usage would be more than the host has free
    assert values["MemFree"] == host["MemFree"]
    assert values["MemAvailable"] == host["MemAvailable"]


def test_meminfo_swap_cached():
    memory = MemoryStats(limit_bytes=64 << 20, usage_bytes=8 << 20, swap_limit_bytes=None, swap_usage_bytes=0,
                         swap_cached_bytes=3 << 20)
    assert meminfo_kb(meminfo.render(parse_meminfo(host_file(V2, "meminfo")), memory).decode())["SwapCached"] == 3072


def test_host_reader_and_vanished_cgroup_get_the_host_file():
    for path, name in (("proc/meminfo", "meminfo"), ("proc/stat", "stat"), ("proc/cpuinfo", "cpuinfo")):
        assert read(HYBRID, HYBRID_ROOT_PID, path) == host_file(HYBRID, name)
        assert read(V2, V2_VANISHED_PID, path) == host_file(V2, name)


def test_swaps_one_virtual_line_or_header_only():
    lines = read(V2, V2_15M_PID, "proc/swaps").splitlines()
    assert lines[1].split() == ["none", "virtual", "32768", "4096", "0"]
    assert len(read(V2, V2_NOSWAP_PID, "proc/swaps").splitlines()) == 1
    assert len(read(HYBRID, HYBRID_CHILD_PID, "proc/swaps").splitlines()) == 1  # host has no swap


def processors(text):
    return [int(line.split(":")[1]) for line in text.splitlines() if line.startswith("processor")]


def test_cpuset_with_gaps_keeps_kernel_ids_and_the_quota_keeps_the_lowest():
    # cpuset 0-2,5,7-8 and cpu.max 1.5 cpus -> its 2 lowest cpus by default, 6 without the cap
    assert processors(read(V2, V2_15M_PID, "proc/cpuinfo")) == [0, 1]
    assert read(V2, V2_15M_PID, "sys/devices/system/cpu/online") == "0-1\n"
    uncapped = read(V2, V2_15M_PID, "proc/cpuinfo", cap_cpus_by_quota=False)
    assert processors(uncapped) == [0, 1, 2, 5, 7, 8]
    assert read(V2, V2_15M_PID, "sys/devices/system/cpu/online", cap_cpus_by_quota=False) == "0-2,5,7-8\n"
    uncapped_stat = parse_stat(read(V2, V2_15M_PID, "proc/stat", cap_cpus_by_quota=False))
    assert sorted(uncapped_stat.per_cpu) == [0, 1, 2, 5, 7, 8]


@pytest.mark.parametrize("path", ["proc/cpuinfo", "proc/stat", "sys/devices/system/cpu/online"])
def test_cpuset_of_one_cpu_shows_that_cpus_id_everywhere(path):
    # cpuset {3}: the kernel calls it cpu3 (sched_getaffinity, taskset, the cpuN directory)
    text = read(V2, V2_NOSWAP_PID, path)
    if path == "proc/cpuinfo":
        assert processors(text) == [3]
    elif path == "proc/stat":
        assert sorted(parse_stat(text).per_cpu) == [3]
    else:
        assert text == "3\n"


# (tree, pid, cpus' worth of quota: None without one; the fixtures' cpu.max / cfs files)
@pytest.mark.parametrize("tree,pid,quota_cpus", [(HYBRID, HYBRID_CHILD_PID, 0.5), (V2, V2_15M_PID, 1.5),
                                                 (V2, V2_POD_PID, None)])
def test_stat_lines_add_up_to_the_quotas_share_and_match_cpuinfo(tree, pid, quota_cpus):
    """Without a quota each line adds up to its host cpu's elapsed ticks; with quota q
    over k visible cpus, the lines add up to q/k of them (idle scaled to the quota)."""
    srv = server(tree)
    rendered = parse_stat(srv.content("proc/stat", pid).decode())
    host = parse_stat(host_file(tree, "stat"))
    visible = srv._sources(pid, srv.resolve(pid, 0)).visible_cpus()
    assert len(rendered.per_cpu) == len(processors(srv.content("proc/cpuinfo", pid).decode()))
    assert sorted(rendered.per_cpu) == list(visible)
    elapsed = sum(host.per_cpu[host_cpu].total for host_cpu in visible)
    if quota_cpus is None:
        for host_cpu in visible:
            assert rendered.per_cpu[host_cpu].total == host.per_cpu[host_cpu].total
    else:
        assert abs(rendered.total.total - elapsed * quota_cpus / len(visible)) <= 1
    assert rendered.total.total == sum(c.total for c in rendered.per_cpu.values())


def test_a_container_flat_out_at_its_quota_reads_fully_busy():
    """Half a cpu used for a whole second of a host cpu's time: 100% busy, not 50%."""
    cpu = CpuStats(user_usec=0, system_usec=0, per_cpu_usec=None, quota_usec=50_000, period_usec=100_000)
    used = CpuStats(user_usec=500_000, system_usec=0, per_cpu_usec=None, quota_usec=50_000, period_usec=100_000)
    before = parse_stat(stat.render(parse_stat("cpu  0 0 0 1000\ncpu0 0 0 0 1000\n"), cpu, (0,), 0, 0).decode())
    after = parse_stat(stat.render(parse_stat("cpu  0 0 0 1100\ncpu0 0 0 0 1100\n"), used, (0,), 0, 0).decode())
    busy = after.total.values[0] - before.total.values[0]
    idle = after.total.values[3] - before.total.values[3]
    assert (busy, idle) == (50, 0)
    assert uptime.render(10.0, 0.5, 5_000_000) == b"10.00 0.00\n"  # idle follows the quota too


def test_quota_measured_idle_never_goes_back():
    """53 ticks run against 52 of capacity over 1.04 s (periods not lined up with the
    reads): computed idle steps back a tick; what is served does not (top printed
    `100.0 id` for a busy container when it did)."""
    def half_cpu(used_s: float) -> CpuStats:
        return CpuStats(user_usec=int(used_s * 1e6), system_usec=0, per_cpu_usec=None, quota_usec=50_000,
                        period_usec=100_000)
    first = (parse_stat("cpu  0 0 0 1000\ncpu0 0 0 0 1000\n"), half_cpu(4.0))
    second = (parse_stat("cpu  0 0 0 1104\ncpu0 0 0 0 1104\n"), half_cpu(4.53))
    assert [stat.quota_idle_ticks(host, cpu, (0,)) for host, cpu in (first, second)] == [100, 99]
    counters = RisingCounters()
    served = []
    for host, cpu in (first, second):
        floor = counters.at_least_before("cgroup", stat.quota_idle_ticks(host, cpu, (0,)))
        served.append(parse_stat(stat.render(host, cpu, (0,), 0, 0, idle_floor_ticks=floor).decode()).total.values[3])
    assert served == [100, 100]


def test_v2_nice_is_its_own_column_and_comes_out_of_user():
    host = parse_stat("cpu  0 0 0 1000\ncpu0 0 0 0 1000\n")
    cpu = CpuStats(user_usec=3_000_000, system_usec=1_000_000, per_cpu_usec=None, quota_usec=None,
                   period_usec=100_000, nice_usec=2_000_000)
    assert parse_stat(stat.render(host, cpu, (0,), 0, 0).decode()).per_cpu[0].values[:4] == (100, 200, 100, 600)


def test_stat_v1_uses_per_cpu_usage_and_v2_spreads_evenly():
    v1 = parse_stat(read(HYBRID, HYBRID_CHILD_PID, "proc/stat"))
    assert v1.per_cpu[0].values[:3] == (10, 0, 0)  # cpuacct.usage_all: 0.1 s user on cpu0
    v2 = parse_stat(read(V2, V2_15M_PID, "proc/stat"))
    assert [c.values[0] for c in v2.per_cpu.values()] == [100, 100]  # 2 s user over 2 cpus
    assert [c.values[2] for c in v2.per_cpu.values()] == [50, 50]


def test_stat_procs_counted_from_the_containers_tasks():
    text = read(V2, V2_15M_PID, "proc/stat")
    assert "procs_running 1\n" in text and "procs_blocked 1\n" in text
    assert re.search(r"^ctxt \d+$", text, re.M)  # host line kept


def test_loadavg_counts_and_newest_pid_in_the_readers_namespace():
    assert read(V2, V2_15M_PID, "proc/loadavg") == "0.00 0.00 0.00 1/3 7\n"


def test_loadavg_last_pid_in_the_readers_own_namespace_when_namespaces_nest(tmp_path):
    """A process in a pid namespace nested in the container (NSpid 104 9 1) is pid 9
    to the container's readers and pid 1 to its own; each gets its own number."""
    tree = shutil.copytree(V2, tmp_path / "tree", symlinks=True)
    nested = tree / "proc/104"
    nested.mkdir()
    (nested / "cgroup").write_text((tree / "proc/101/cgroup").read_text())
    (nested / "status").write_text("Name:\tsh\nNSpid:\t104\t9\t1\n")
    (nested / "ns").mkdir()
    (nested / "ns/pid").symlink_to("pid:[4026532210]")
    procs = tree / "sys/fs/cgroup/system.slice/docker-15m.scope/cgroup.procs"
    procs.write_text(procs.read_text() + "104\n")
    srv = server(str(tree))
    assert srv.content("proc/loadavg", V2_15M_PID).decode().split()[-1] == "9"
    assert srv.content("proc/loadavg", 104).decode().split()[-1] == "1"


def test_diskstats_names_devices_like_the_host_and_skips_unknown_ones():
    v2 = read(V2, V2_15M_PID, "proc/diskstats").splitlines()
    assert len(v2) == 1  # 8:0 is not a host device
    fields = v2[0].split()
    assert fields[:3] == ["254", "0", "vda"]
    assert (fields[3], fields[5], fields[7], fields[9]) == ("16", "2048", "64", "8192")
    assert read(V2, V2_POD_PID, "proc/diskstats") == ""  # empty io.stat
    v1 = read(HYBRID, HYBRID_CHILD_PID, "proc/diskstats").split()
    assert v1[2] == "vda" and v1[9] == str(2097152 // 512)


def test_loadavg_fixed_point_matches_the_kernel():
    loads = (0, 0, 0)
    for _ in range(3):  # 15 s of two busy tasks
        loads = loadavg.step(loads, 2)
    one_minute = loads[0] / loadavg.FIXED_1
    assert 0.43 < one_minute < 0.46          # 2 * (1 - (1884/2048)^3)
    for _ in range(9):
        loads = loadavg.step(loads, 2)
    assert 1.24 < loads[0] / loadavg.FIXED_1 < 1.28  # after 60 s: 2 * (1 - e^-1)
    assert loadavg.render(loads, 2, 5, 42).startswith(b"1.2")
    assert loadavg.render((0, 0, 0), 0, 1, 1) == b"0.00 0.00 0.00 0/1 1\n"


def test_uptime_and_online_renderers():
    assert uptime.container_uptime(100.0, 5000, 100) == 50.0
    assert uptime.render(50.0, 2, 30_000_000) == b"50.00 70.00\n"
    assert uptime.render(1.0, 1, 5_000_000) == b"1.00 0.00\n"  # idle never negative
    assert cpu_online.render((3,)) == b"3\n"
    assert cpu_online.render((0, 4, 9)) == b"0,4,9\n"


def test_swaps_renderer_caps_at_host_swap():
    assert swaps.render(None, 0, 0) == swaps.HEADER.encode()
    assert swaps.render(2 << 30, 1 << 20, 1024 * 1024).decode().splitlines()[1].split()[2] == str(1024 * 1024)


def test_stat_busy_ticks_never_exceed_a_cpus_elapsed_ticks():
    host = parse_stat("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\n")
    cpu = CpuStats(user_usec=10_000_000, system_usec=10_000_000, per_cpu_usec=None, quota_usec=None, period_usec=100000)
    rendered = parse_stat(stat.render(host, cpu, (0,), 0, 0).decode())
    assert rendered.per_cpu[0].values[:4] == (100, 0, 0, 0)


def vmstat_values(text):
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


def test_vmstat_counts_the_containers_faults_pages_and_oom_kills_and_keeps_host_lines():
    values = vmstat_values(read(V2, V2_15M_PID, "proc/vmstat"))
    host = vmstat_values(host_file(V2, "vmstat"))
    assert list(values) == list(host)  # the kernel's lines, in its order
    assert (values["pgfault"], values["pgmajfault"], values["oom_kill"]) == (1234, 5, 1)
    assert (values["nr_anon_pages"], values["nr_file_pages"], values["nr_dirty"]) == (256, 768, 32)
    assert values["nr_free_pages"] == (15 - 5) * 1024 * 1024 // 4096  # MemTotal - usage, in pages
    assert values["workingset_refault_file"] == 0 and values["pgpgin"] == host["pgpgin"]
    v1 = vmstat_values(read(HYBRID, HYBRID_CHILD_PID, "proc/vmstat"))
    assert (v1["pgfault"], v1["pgmajfault"], v1["nr_shmem"]) == (181, 2, 6000640 // 4096)  # total_pgfault, ...


def test_pressure_is_the_cgroups_own_psi_file():
    # a cgroup with only the cpu controller still has the PSI files of its own tasks
    assert read(V2, V2_PARTIAL_PID, "proc/pressure/cpu") == (
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=5000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read(V2, V2_PARTIAL_PID, "proc/pressure/io").splitlines()[1].endswith(" total=800")
    assert read(V2, V2_15M_PID, "proc/pressure/memory").startswith("some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\n")


def test_slabinfo_lists_a_v1_cgroups_own_caches_and_never_the_hosts(tmp_path):
    from cgroupfs.cgroups import v1
    from cgroupfs.files import slabinfo
    (tmp_path / "memory.kmem.slabinfo").write_text(  # v1 before 5.9: the cgroup's own caches
        slabinfo.HEADER + "dentry              420    420    192   21    1 : tunables    0    0    0 : slabdata     20     20      0\n")
    caches = v1.read_slab_caches([str(tmp_path)])
    assert slabinfo.render(caches).decode().splitlines()[2].startswith("dentry              420")
    (tmp_path / "memory.kmem.slabinfo").write_text("")  # 5.9 and later print nothing
    assert v1.read_slab_caches([str(tmp_path)]) is None
    assert read(V2, V2_15M_PID, "proc/slabinfo") == slabinfo.HEADER
    assert read(HYBRID, HYBRID_ROOT_PID, "proc/slabinfo") == slabinfo.HEADER  # a host reader too
