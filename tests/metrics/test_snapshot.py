"""Reading what the metrics export, on the fixture trees (real 6.18 hybrid, documented v2)."""

from __future__ import annotations

import os

import pytest

from cgroupfs.cgroups.membership import parse_proc_cgroup
from cgroupfs.errors import CgroupGone
from cgroupfs_daemon.container_snapshot import SnapshotReader, Target, cgroup_id, list_targets, uniform_paths
from cgroupfs_daemon.stats import SERVED_MAX, SERVED_TTL_S, ContainerInfo, DaemonStats
from tests.unit.fixture_trees import HYBRID, V2, reader

pytestmark = pytest.mark.unit

MIB = 1 << 20


def proc_paths(tree: str, pid: int):
    with open(os.path.join(tree, "proc", str(pid), "cgroup")) as f:
        return parse_proc_cgroup(f.read())


@pytest.fixture
def sys_root(tmp_path):
    """A /sys with one named block device, as /sys/dev/block/MAJ:MIN/uevent spells it."""
    device = tmp_path / "dev/block/254:0"
    device.mkdir(parents=True)
    (device / "uevent").write_text("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
    return str(tmp_path)


def snapshots(tree: str, sys_root: str) -> SnapshotReader:
    return SnapshotReader(reader(tree), proc_root=os.path.join(tree, "proc"), sys_root=sys_root)


def served_target(tree: str, pid: int) -> Target:
    paths = proc_paths(tree, pid)
    identity = cgroup_id(reader(tree).hierarchy, paths)
    assert identity is not None
    return Target(identity, paths, served=True)


def test_v2_container_every_counter(sys_root):
    snapshot = snapshots(V2, sys_root).read(served_target(V2, 101))
    assert snapshot.target.id == "/system.slice/docker-15m.scope"
    memory = snapshot.memory
    assert (memory.limit_bytes, memory.usage_bytes, memory.inactive_file_bytes) == (15 * MIB, 5 * MIB, 1572864)
    assert (memory.anon_bytes, memory.file_bytes, memory.swap_usage_bytes) == (MIB, 3 * MIB, 4 * MIB)
    assert memory.oom_kill_count == 1
    cpu = snapshot.cpu
    assert (cpu.user_usec, cpu.system_usec, cpu.quota_usec, cpu.period_usec) == (2000000, 1000000, 150000, 100000)
    assert (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec) == (100, 20, 400000)
    assert [(d.device, d.read_bytes, d.write_bytes, d.read_ios, d.write_ios) for d in snapshot.io] == [
        ("/dev/vda", 1048576, 4194304, 16, 64), ("8:0", 512, 0, 1, 0)]  # 8:0 has no sysfs entry here
    assert (snapshot.processes, snapshot.threads) == (2, 3)
    # btime 1795893171 + 5000 ticks of pid 101 (the oldest) at 100 ticks per second
    assert snapshot.start_time_s == 1795893171 + 5000 / os.sysconf("SC_CLK_TCK")
    assert set(snapshot.pressure) == {"memory"}  # the fixture has memory.pressure only
    assert (snapshot.pressure["memory"].some_total_usec, snapshot.pressure["memory"].full_total_usec) == (12345, 6789)


def test_v2_limit_is_the_ancestors_when_tighter_and_none_when_unlimited(sys_root):
    reader_ = snapshots(V2, sys_root)
    assert reader_.read(served_target(V2, 201)).memory.limit_bytes == 32 * MIB  # pod 32M over ctr 64M
    unlimited = reader_.read(served_target(V2, 401))
    assert unlimited.memory.limit_bytes is None and unlimited.cpu.quota_usec is None


def test_v2_vanished_cgroup_raises_cgroup_gone(sys_root):
    with pytest.raises(CgroupGone):
        snapshots(V2, sys_root).read(served_target(V2, 501))


def test_hybrid_child_v1_counters_and_no_pressure_from_the_root_v2_cgroup(sys_root):
    snapshot = snapshots(HYBRID, sys_root).read(served_target(HYBRID, 4242))
    assert snapshot.target.id == "/fixture-parent/fixture-child"  # the memory v1 path
    assert (snapshot.memory.limit_bytes, snapshot.memory.usage_bytes) == (15 * MIB, 6283264)
    assert snapshot.cpu.usage_usec == 104000
    assert (snapshot.cpu.quota_usec, snapshot.cpu.nr_periods, snapshot.cpu.throttled_usec) == (50000, 2, 61925)
    assert [(d.device, d.read_bytes, d.write_bytes) for d in snapshot.io] == [("/dev/vda", 40960, 2097152)]
    assert snapshot.pressure == {}            # its v2 cgroup is "/": host-wide PSI, not the container's
    assert snapshot.processes == 0 and snapshot.start_time_s is None


def test_counters_of_a_root_cgroup_are_left_out(sys_root):
    """A served process in memory:/x but cpu:/ must not export the host's cpu time as its own."""
    paths = parse_proc_cgroup("4:memory:/fixture-parent/fixture-child\n1:cpu:/\n2:cpuacct:/\n7:blkio:/\n0::/\n")
    snapshot = snapshots(HYBRID, sys_root).read(Target("/fixture-parent/fixture-child", paths))
    assert snapshot.memory is not None
    assert snapshot.cpu is None and snapshot.io is None


def test_docker_containers_get_one_path_in_every_hierarchy_and_win_over_served_entries():
    hierarchy = reader(HYBRID).hierarchy
    info = ContainerInfo(id="abc", name="/web", image="nginx:1",
                         cgroup=parse_proc_cgroup("4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/\n"))
    on_the_host = ContainerInfo(id="host", name="/privileged", image="x",
                                cgroup=parse_proc_cgroup("4:memory:/\n0::/\n"))
    served_same = parse_proc_cgroup("4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/\n")
    served_other_old = parse_proc_cgroup("4:memory:/other\n1:cpu:/old\n0::/\n")
    served_other_new = parse_proc_cgroup("4:memory:/other\n1:cpu:/new\n0::/\n")
    host = parse_proc_cgroup("4:memory:/\n0::/\n")
    targets = list_targets(hierarchy, [info, on_the_host],
                           [served_same, served_other_old, host, served_other_new])
    assert [(t.id, t.container, t.served) for t in targets] == [("/docker/abc", info, False), ("/other", None, True)]
    assert targets[0].paths == uniform_paths(hierarchy, "/docker/abc")
    assert targets[0].paths.v1["cpuacct"] == "/docker/abc" and targets[0].paths.v2 == "/docker/abc"
    assert targets[1].paths.v1["cpu"] == "/new"  # the most recently served paths


def test_v2_ids_are_the_unified_path():
    hierarchy = reader(V2).hierarchy
    assert cgroup_id(hierarchy, proc_paths(V2, 201)) == "/kubepods/pod1/ctr"
    assert uniform_paths(hierarchy, "/x").v1 == {} and uniform_paths(hierarchy, "/x").v2 == "/x"


def test_served_cgroups_expire_are_bounded_and_forgotten():
    stats = DaemonStats()
    first, second = parse_proc_cgroup("0::/first\n"), parse_proc_cgroup("0::/second\n")
    stats.note_served(first, now=0.0)
    stats.note_served(second, now=100.0)
    stats.note_served(first, now=200.0)  # served again: now the most recent
    assert stats.served_recently(now=200.0) == [second, first]
    assert stats.served_recently(now=100.0 + SERVED_TTL_S + 1) == [first]
    stats.forget_served(first)
    assert stats.served_recently(now=0.0) == []
    for index in range(SERVED_MAX + 10):
        stats.note_served(parse_proc_cgroup(f"0::/c{index}\n"), now=index / 1000)
    recent = stats.served_recently(now=SERVED_MAX / 1000)
    assert len(recent) == SERVED_MAX and recent[0].v2 == "/c10"  # the oldest were evicted


def test_a_container_is_forgotten_only_as_it_was_tracked():
    stats = DaemonStats()
    old, new = (ContainerInfo("a" * 64, "web", "nginx", init_pid=pid) for pid in (10, 20))
    stats.container_tracked(old)
    stats.container_tracked(new)  # `docker restart`: the same container, a new init
    assert stats.containers() == [new] and stats.snapshot().containers_tracked == 1
    stats.container_forgotten(old)  # the old init's die event, handled after the new start
    assert stats.container("a" * 64) == new
    stats.container_forgotten(new)
    assert stats.containers() == [] and stats.snapshot().containers_tracked == 0
