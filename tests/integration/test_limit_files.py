"""The limit files compared before a cached text is reused are held open (HeldFiles):
they must follow the kernel, including a cgroup removed and made again under the same
name (`docker restart` does that), whose old descriptors fail with ENODEV."""

from __future__ import annotations

import re
import time

from cgroupfs.server import ContentServer
from testbed.cgroups import TestCgroup


def memtotal_kb(text: bytes) -> int:
    found = re.search(rb"^MemTotal:\s+(\d+) kB$", text, re.M)
    assert found, text[:200]
    return int(found.group(1))


def test_held_limit_files_follow_a_cgroup_made_again_under_the_same_name(make_cgroup, hierarchy):
    server = ContentServer(cache_ttl_s=60)  # only the limits comparison can renew a text
    first = make_cgroup()
    first.set_memory_limit(64 << 20)
    member = first.popen(["sleep", "60"])
    try:
        assert memtotal_kb(server.content("proc/meminfo", member.pid)) == 64 << 10
        first.set_memory_limit(48 << 20)  # the same descriptor, read again at offset 0
        assert memtotal_kb(server.content("proc/meminfo", member.pid)) == 48 << 10
    finally:
        member.kill()
        member.wait()
    first.remove()
    second = TestCgroup(first.relative, hierarchy)  # removed by make_cgroup's clean-up
    second.set_memory_limit(32 << 20)
    member = second.popen(["sleep", "60"])
    try:
        assert memtotal_kb(server.content("proc/meminfo", member.pid)) == 32 << 10
    finally:
        member.kill()
        member.wait()


def test_held_limit_files_of_a_removed_cgroup_are_let_go(make_cgroup):
    """A removed cgroup is never read again: its descriptors must not stay open."""
    from cgroupfs.cgroups.files import HeldFiles

    held = HeldFiles()
    held.IDLE_S = 0.2
    gone, kept = make_cgroup(), make_cgroup()
    names = ("memory.limit_in_bytes",) if not gone.is_v2("memory") else ("memory.max",)
    held.read(gone.dir("memory"), names)
    assert len(held) == 1
    gone.remove()
    time.sleep(0.3)
    held.read(kept.dir("memory"), names)  # any read lets idle ones go
    assert len(held) == 1
