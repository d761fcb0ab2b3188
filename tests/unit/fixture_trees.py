"""Build readers and a ContentServer over a fixture tree instead of the machine."""

from __future__ import annotations

import os

from cgroupfs.cgroups import CgroupReader
from cgroupfs.cgroups.hierarchy import discover
from cgroupfs.host import HostReader
from cgroupfs.server import ContentServer
from cgroupfs.sources import Options

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
HYBRID = os.path.join(FIXTURES, "host-6.18.44-hybrid")
V2 = os.path.join(FIXTURES, "v2-kernel-docs")
MOUNTS = os.path.join(FIXTURES, "mounts-6.18.44-docker")  # mount tables, see capture_container_mounts.py

HYBRID_CHILD_PID = 4242  # in fixture-parent/fixture-child (memory 15M < parent 64M)
HYBRID_ROOT_PID = 4343   # in every root cgroup: a host process
V2_15M_PID, V2_POD_PID, V2_NOSWAP_PID, V2_UNLIMITED_PID, V2_VANISHED_PID = 101, 201, 301, 401, 501
V2_PARTIAL_PID = 601  # quota.slice/cpuquota.service: cpu controller only, the rest its parent's


def hierarchy(tree: str):
    return discover(proc_root=os.path.join(tree, "proc"), root_prefix=tree,
                    mountinfo_path=os.path.join(tree, "proc", "mountinfo"))


def reader(tree: str) -> CgroupReader:
    return CgroupReader(hierarchy(tree))


def server(tree: str, cap_cpus_by_quota: bool = True) -> ContentServer:
    proc = os.path.join(tree, "proc")
    return ContentServer(
        hierarchy=hierarchy(tree),
        host=HostReader(proc_root=proc, sys_root=os.path.join(tree, "sys")),
        options=Options(cap_cpus_by_quota=cap_cpus_by_quota, ticks_per_second=100, proc_root=proc),
        cache_ttl_s=0,
    )
