"""The v1 and v2 readers on real (v1) and documented (v2) trees: typed numbers out."""

import os
import shutil

import pytest

from cgroupfs.cgroups.files import format_cpu_list, parse_cpu_list, parse_limit
from cgroupfs.cgroups.membership import parse_proc_cgroup
from cgroupfs.cgroups.v2 import parse_cpu_max, parse_io_stat
from cgroupfs.errors import CgroupGone, ParseError
from tests.unit.fixture_trees import HYBRID, V2, reader

MIB = 1024 * 1024
CHILD_V1 = parse_proc_cgroup(open(os.path.join(HYBRID, "proc/4242/cgroup")).read())


def v2_paths(path):
    return parse_proc_cgroup(f"0::{path}\n")


def test_v1_memory_limit_is_the_minimum_over_ancestors_and_swap_is_memsw_minus_memory():
    memory = reader(HYBRID).memory(CHILD_V1)
    assert memory.limit_bytes == 15 * MIB          # child 15M under parent 64M
    assert memory.swap_limit_bytes == 32 * MIB - 15 * MIB
    assert memory.usage_bytes == 6283264
    assert memory.shmem_bytes == 6000640            # the 6 MB written to /dev/shm
    assert memory.file_bytes == 6045696
    assert memory.swap_usage_bytes == 0
    assert memory.oom_kill_count == 0


def test_v1_swappiness_0_swapcached_and_kernel_memory(tmp_path):
    """--memory-swappiness=0 leaves no swap to show; total_swapcached and the kmem total
    (v1 has no slab split: unreclaimable slab) come through."""
    tree = shutil.copytree(HYBRID, tmp_path / "tree", symlinks=True)
    child = tree / "sys/fs/cgroup/memory/fixture-parent/fixture-child"
    assert reader(str(tree)).memory(CHILD_V1).swap_limit_bytes == 17 * MIB  # swappiness 60
    (child / "memory.swappiness").write_text("0\n")
    stat = (child / "memory.stat").read_text().replace("total_swapcached 0", "total_swapcached 8192")
    (child / "memory.stat").write_text(stat)
    memory = reader(str(tree)).memory(CHILD_V1)
    assert (memory.swap_limit_bytes, memory.swap_usage_bytes) == (0, 0)
    assert memory.swap_cached_bytes == 8192
    assert memory.slab_unreclaimable_bytes == 24576  # memory.kmem.usage_in_bytes


def test_v1_cpu_split_mounts_cpuset_quota_and_blkio():
    r = reader(HYBRID)
    cpu = r.cpu(CHILD_V1)
    assert cpu.per_cpu_usec == ((100000, 4000), (0, 0))
    assert (cpu.quota_usec, cpu.period_usec) == (50000, 100000)
    assert r.cpuset(CHILD_V1).cpus == (0,)
    io = r.io(CHILD_V1)
    [vda] = io.devices
    assert (vda.major, vda.minor, vda.write_bytes, vda.read_bytes) == (254, 0, 2097152, 40960)


def test_v2_memory_with_tighter_ancestor_swap_and_events():
    r = reader(V2)
    pod = r.memory(v2_paths("/kubepods/pod1/ctr"))
    assert pod.limit_bytes == 32 * MIB              # pod 32M is tighter than the container's 64M
    assert pod.swap_limit_bytes is None
    m = r.memory(v2_paths("/system.slice/docker-15m.scope"))
    assert m.limit_bytes == 15 * MIB and m.swap_limit_bytes == 32 * MIB and m.swap_usage_bytes == 4 * MIB
    assert (m.dirty_bytes, m.writeback_bytes, m.slab_reclaimable_bytes) == (131072, 65536, 262144)
    assert m.oom_kill_count == 1
    assert r.memory(v2_paths("/unlimited")).limit_bytes is None
    assert r.memory(v2_paths("/noswap")).swap_limit_bytes == 0


def test_v2_cpu_cpuset_io_pressure():
    r = reader(V2)
    paths = v2_paths("/system.slice/docker-15m.scope")
    cpu = r.cpu(paths)
    assert (cpu.user_usec, cpu.system_usec, cpu.per_cpu_usec) == (2000000, 1000000, None)
    assert (cpu.quota_usec, cpu.period_usec, cpu.nr_throttled, cpu.throttled_usec) == (150000, 100000, 20, 400000)
    assert r.cpuset(paths).cpus == (0, 1, 2, 5, 7, 8)
    assert [(d.major, d.minor, d.write_bytes) for d in r.io(paths).devices] == [(254, 0, 4194304), (8, 0, 0)]
    assert r.io(v2_paths("/kubepods/pod1/ctr")).devices == ()
    assert r.pressure(paths, "memory").some_total_usec == 12345
    assert sorted(r.thread_ids(paths)) == [101, 102, 103]


def test_v2_partly_enabled_controllers_take_each_value_from_the_nearest_ancestor():
    # quota.slice enables only `cpu` for its children: the service has cpu.max, and its
    # memory, cpuset and io are quota.slice's (the kernel charges and limits them there).
    r = reader(V2)
    paths = v2_paths("/quota.slice/cpuquota.service")
    memory = r.memory(paths)
    assert (memory.limit_bytes, memory.usage_bytes, memory.anon_bytes) == (128 * MIB, 20 * MIB, 8 * MIB)
    assert r.cpuset(paths).cpus == (0, 1, 2, 3)
    assert (r.cpu(paths).quota_usec, r.cpu(paths).user_usec) == (50000, 400000)
    assert [(d.major, d.minor, d.read_bytes) for d in r.io(paths).devices] == [(8, 0, 4096)]
    assert r.pressure(paths, "io").full_total_usec == 800


def test_vanished_cgroup_raises_cgroup_gone():
    with pytest.raises(CgroupGone):
        reader(V2).memory(v2_paths("/vanished.scope"))


def test_cpu_lists_and_limits():
    assert parse_cpu_list("0-2,5,7-8\n") == (0, 1, 2, 5, 7, 8)
    assert parse_cpu_list("") == ()
    assert format_cpu_list((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
    assert parse_limit("max\n") is None and parse_limit("9223372036854771712") is None
    assert parse_limit("-1") is None and parse_limit("15728640\n") == 15 * MIB
    assert parse_cpu_max("max 100000\n") == (None, 100000)
    with pytest.raises(ParseError):
        parse_cpu_list("3-1")
    with pytest.raises(ParseError):
        parse_limit("lots")


def test_malformed_counter_files_raise_parse_error(tmp_path):
    with pytest.raises(ParseError):
        parse_io_stat("8:0 rbytes=12 wbytes\n")
    cgroup = tmp_path / "ctr"
    cgroup.mkdir()
    (cgroup / "memory.current").write_text("1024\n")
    (cgroup / "memory.stat").write_text("anon 12\nfile twelve\n")
    from cgroupfs.cgroups import v2
    with pytest.raises(ParseError):
        v2.read_memory([str(tmp_path), str(cgroup)])
