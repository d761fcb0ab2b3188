"""Property tests: parsers raise only ParseError; renderers keep their invariants."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgroupfs.cgroups import v1, v2
from cgroupfs.cgroups.files import parse_cpu_list, parse_flat_keyed, parse_limit, parse_pressure
from cgroupfs.cgroups.membership import parse_proc_cgroup
from cgroupfs.cgroups.model import CpuStats, CpusetInfo, MemoryStats
from cgroupfs.errors import ParseError
from cgroupfs.files import cpu_online, cpuinfo, meminfo, stat
from cgroupfs.files.visible_cpus import visible_cpus
from cgroupfs.host.cpuinfo import parse_cpuinfo
from cgroupfs.host.diskstats import parse_diskstats
from cgroupfs.host.meminfo import parse_meminfo
from cgroupfs.host.stat import parse_stat
from cgroupfs.mountinfo import parse_mountinfo
from cgroupfs.procs import parse_nspid, parse_task_stat
from tests.unit.fixture_trees import V2

PARSERS = [
    parse_meminfo, parse_cpuinfo, parse_stat, parse_diskstats, parse_proc_cgroup,
    parse_mountinfo, parse_flat_keyed, parse_cpu_list, parse_limit, parse_pressure, parse_task_stat,
    parse_nspid, lambda text: v1.parse_blkio(text, "blkio"),
    v1.parse_usage_all, v2.parse_io_stat, v2.parse_cpu_max,
]

# Text that looks like kernel files often enough to reach deep branches: digits,
# separators, keys, and raw bytes decoded the way the readers decode them.
kernel_ish = st.lists(st.sampled_from(list("0123456789 :-=,\n\t/abcdemaxkBRS()_²") + ["cpu", "max", "total=", "NSpid:"]),
                      max_size=120).map("".join)
raw_bytes = st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(kernel_ish, raw_bytes, st.text(max_size=200)))
def test_parsers_raise_only_parse_error(text):
    for parse in PARSERS:
        try:
            parse(text)
        except ParseError:
            pass


def test_oversized_input_is_handled():
    huge = "MemTotal: 1 kB\n" * 200_000
    assert parse_meminfo(huge).kb("MemTotal") == 1
    # a range that would build four billion cpu numbers is refused, not expanded
    with pytest.raises(ParseError, match="bad range"):
        parse_cpu_list("0-4294967295")
    assert len(parse_cpu_list("0-65536")) == 65537  # the largest range accepted


with open(os.path.join(V2, "proc/meminfo")) as _f:
    HOST_MEMINFO = parse_meminfo(_f.read())
with open(os.path.join(V2, "proc/cpuinfo")) as _f:
    HOST_CPUINFO = parse_cpuinfo(_f.read())
with open(os.path.join(V2, "proc/stat")) as _f:
    HOST_STAT = parse_stat(_f.read())
HOST_ONLINE = tuple(range(12))

sizes = st.integers(min_value=0, max_value=1 << 50)
maybe_limit = st.one_of(st.none(), sizes)


@st.composite
def memory_stats(draw):
    fields = {name: draw(sizes) for name in (
        "anon_bytes", "file_bytes", "active_anon_bytes", "inactive_anon_bytes", "active_file_bytes",
        "inactive_file_bytes", "unevictable_bytes", "shmem_bytes", "mapped_bytes", "dirty_bytes",
        "writeback_bytes", "anon_thp_bytes", "slab_reclaimable_bytes", "slab_unreclaimable_bytes")}
    return MemoryStats(limit_bytes=draw(maybe_limit), usage_bytes=draw(sizes),
                       swap_limit_bytes=draw(maybe_limit), swap_usage_bytes=draw(st.one_of(st.none(), sizes)),
                       **fields)


@settings(max_examples=300)
@given(memory=memory_stats())
def test_meminfo_fields_are_non_negative_integers_and_free_within_total(memory):
    text = meminfo.render(HOST_MEMINFO, memory).decode()
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\S+):\s+(\d+)( kB)?", line)
        assert match, line
        values[match.group(1)] = int(match.group(2))
    assert values["MemFree"] <= values["MemTotal"]
    assert values["MemAvailable"] <= values["MemTotal"]
    assert values["SwapFree"] <= values["SwapTotal"]
    assert values["MemTotal"] <= HOST_MEMINFO.kb("MemTotal")


cpu_sets = st.lists(st.integers(min_value=0, max_value=15), min_size=0, max_size=16, unique=True).map(
    lambda cpus: CpusetInfo(cpus=tuple(sorted(cpus))))


@st.composite
def cpu_stats(draw):
    per_cpu = draw(st.one_of(st.none(), st.lists(st.tuples(sizes, sizes), min_size=0, max_size=16)))
    return CpuStats(user_usec=draw(sizes), system_usec=draw(sizes),
                    per_cpu_usec=None if per_cpu is None else tuple(per_cpu),
                    quota_usec=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=10_000_000))),
                    period_usec=draw(st.integers(min_value=1000, max_value=1_000_000)))


@settings(max_examples=300)
@given(cpuset=st.one_of(st.none(), cpu_sets), cpu=cpu_stats(), cap=st.booleans(),
       running=st.integers(0, 1000), blocked=st.integers(0, 1000))
def test_stat_cpuinfo_and_online_agree_and_stay_non_negative(cpuset, cpu, cap, running, blocked):
    visible = visible_cpus(HOST_ONLINE, cpuset, cpu, cap)
    assert visible and set(visible) <= set(HOST_ONLINE)
    stat_text = stat.render(HOST_STAT, cpu, visible, running, blocked).decode()
    cpu_lines = re.findall(r"^cpu(\d*) (.*)$", stat_text, re.M)
    per_cpu_ids = [int(number) for number, _ in cpu_lines if number]
    processors = re.findall(r"^processor\t: (\d+)$", cpuinfo.render(HOST_CPUINFO, visible).decode(), re.M)
    # the same kernel ids everywhere
    assert per_cpu_ids == [int(p) for p in processors] == list(visible)
    assert parse_cpu_list(cpu_online.render(visible).decode()) == visible
    for _, fields in cpu_lines:
        assert all(value.isdigit() for value in fields.split())
