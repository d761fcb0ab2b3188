"""The cost of one read and the daemon's memory are bounded, whatever the readers do.

Unit level (no root): the claims SECURITY.md makes about a read flood, checked on
the code that makes them true.
"""

from __future__ import annotations

import os

import pytest

from cgroupfs import sources
from cgroupfs.procs import TaskStat, read_thread_stat
from cgroupfs.rising import RisingCounters
from cgroupfs.server import TtlCache
from tests.reliability.test_server_faults import copy_tree, make_server
from tests.unit.fixture_trees import V2, V2_15M_PID

pytestmark = pytest.mark.unit


def test_expired_cache_entries_are_swept_not_kept_until_the_cap():
    cache = TtlCache(ttl_s=0.1)
    assert cache.sweep_interval_s == 1.0
    for pid in range(5000):  # 5000 readers that came and went
        cache.put(pid, b"x" * 100, now=0.0)
    assert len(cache) == 5000
    cache.put("late", b"y", now=0.5)  # within the sweep interval: nothing dropped yet
    assert len(cache) == 5001
    cache.put("later", b"z", now=1.5)  # past it: everything expired is gone
    assert len(cache) == 1 and cache.get("later", 1.55) == b"z"


def test_the_cache_never_exceeds_its_cap_even_when_nothing_expires():
    cache = TtlCache(ttl_s=1000, max_entries=100)
    for key in range(1000):
        cache.put(key, key, now=key * 1e-6)
        assert len(cache) <= 100


def test_rising_counters_never_exceed_their_cap():
    counters = RisingCounters(max_entries=100)
    for key in range(1000):  # containers that came and went
        assert counters.at_least_before(key, key) == key
        assert len(counters) <= 100
    assert counters.at_least_before(999, 5) == 999  # a live one keeps its floor


def test_a_huge_cgroup_costs_a_bounded_number_of_thread_reads(tmp_path, monkeypatch):
    """10,000 threads in the reader's cgroup: stat and loadavg read 256 thread states, not 10,000."""
    tree = copy_tree(V2, tmp_path)
    scope = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope")
    tids = list(range(100_000, 110_000))
    with open(os.path.join(scope, "cgroup.threads"), "w") as f:
        f.write("".join(f"{tid}\n" for tid in tids))
    calls = []

    def fake_thread_stat(tid, proc_root="/proc"):
        calls.append(tid)
        return TaskStat(pid=tid, state="R" if tid % 10 < 3 else ("D" if tid % 10 == 3 else "S"),
                        start_time_ticks=1)

    monkeypatch.setattr(sources, "read_thread_stat", fake_thread_stat)
    server = make_server(tree)
    stat = server.content("proc/stat", V2_15M_PID).decode()
    assert len(calls) == sources.MAX_THREADS_SCANNED == 256
    assert set(calls) <= set(tids) and len(set(calls)) == 256
    running = int(stat.split("procs_running ")[1].split()[0])
    blocked = int(stat.split("procs_blocked ")[1].split()[0])
    assert 2000 <= running <= 4000, running  # 30 % of 10,000, estimated from 256
    assert 400 <= blocked <= 1600, blocked   # 10 %
    calls.clear()
    loadavg = server.content("proc/loadavg", V2_15M_PID).decode().split()
    assert len(calls) == 256
    count, total = map(int, loadavg[3].split("/"))
    assert total == 10_000 and 2000 <= count <= 4000


def test_a_small_cgroup_is_counted_exactly(tmp_path, monkeypatch):
    tree = copy_tree(V2, tmp_path)
    scope = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope")
    with open(os.path.join(scope, "cgroup.threads"), "w") as f:
        f.write("".join(f"{tid}\n" for tid in range(1, 201)))
    monkeypatch.setattr(sources, "read_thread_stat", lambda tid, proc_root="/proc": TaskStat(
        pid=tid, state="R" if tid <= 7 else "S", start_time_ticks=1))
    loadavg = make_server(tree).content("proc/loadavg", V2_15M_PID).decode().split()
    assert loadavg[3] == "7/200"


def test_a_thread_state_is_read_from_its_own_task_directory(tmp_path):
    """/proc/<tid>/stat is the whole-process view: the kernel walks every thread of the
    process to build it, so counting N threads that way costs N^2."""
    proc = tmp_path / "proc"
    (proc / "77" / "task" / "77").mkdir(parents=True)
    (proc / "77" / "stat").write_text("77 (whole) S " + "0 " * 30 + "\n")
    (proc / "77" / "task" / "77" / "stat").write_text("77 (thread) R " + "0 " * 18 + "4242 " + "0 " * 10 + "\n")
    assert read_thread_stat(77, str(proc)) == TaskStat(pid=77, state="R", start_time_ticks=4242)
