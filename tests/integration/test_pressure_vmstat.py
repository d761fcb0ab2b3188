"""proc/pressure/*, proc/vmstat and proc/slabinfo read from inside real cgroups."""

from __future__ import annotations

import os
import sys

from cgroupfs.files.slabinfo import HEADER as SLABINFO_HEADER
from testbed.cgroups import remove_tree
from tests.conftest import require

MIB = 1024 * 1024


def pressure_totals(text: str) -> dict[str, int]:
    return {line.split()[0]: int(line.rsplit("total=", 1)[1]) for line in text.splitlines() if line}


def vmstat(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


def test_pressure_is_the_cgroups_own_psi(mnt, make_cgroup, hierarchy):
    require(hierarchy.v2 is not None, "needs a cgroup2 hierarchy: the kernel keeps PSI per cgroup there only")
    require(os.path.exists("/proc/pressure/cpu"), "needs a kernel with PSI (psi=1)")
    cgroup = make_cgroup()
    unified = cgroup.v2_directory
    created = not os.path.isdir(unified)  # on a hybrid host no controller made it
    os.makedirs(unified, exist_ok=True)
    try:
        with open("/proc/pressure/cpu") as f:
            host_before = pressure_totals(f.read())
        # a busy moment of its own, then the file; the cgroup's total is read after it
        result = cgroup.run(["sh", "-c", f"echo $$ > {unified}/cgroup.procs && "
                                         f"{sys.executable} -c 'sum(range(3_000_000))' && "
                                         f"cat {mnt}/proc/pressure/cpu {mnt}/proc/pressure/memory {mnt}/proc/pressure/io"],
                            timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        with open(os.path.join(unified, "cpu.pressure")) as f:
            own_after = pressure_totals(f.read())
    finally:
        if created:
            remove_tree(unified)
    lines = result.stdout.decode().splitlines()
    served = pressure_totals("\n".join(lines[:2]))
    assert served["some"] <= own_after["some"] < host_before["some"]  # the cgroup's, not the machine's
    assert [line.split()[0] for line in lines] == ["some", "full"] * 3


def own_page_faults(cgroup) -> int:
    """The cgroup's own count, from its memory.stat (v2 pgfault, v1 total_pgfault)."""
    with open(os.path.join(cgroup.dir("memory"), "memory.stat")) as f:
        stat = dict(line.split() for line in f)
    return int(stat["pgfault"] if cgroup.is_v2("memory") else stat["total_pgfault"])


def test_vmstat_counts_the_cgroups_page_faults_and_free_pages(mnt, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(64 * MIB)
    script = ("block = bytearray(b'\\x01') * (16 << 20)\n"  # written: faulted in
              f"print(open('{mnt}/proc/vmstat').read(), end='')\n")
    result = cgroup.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    served = vmstat(result.stdout.decode())
    own_after = own_page_faults(cgroup)
    with open("/proc/vmstat") as f:
        host = vmstat(f.read())
    assert 0 < served["pgfault"] <= own_after < host["pgfault"]  # the cgroup's, not the machine's
    assert served["nr_free_pages"] * os.sysconf("SC_PAGE_SIZE") <= 64 * MIB
    assert served["oom_kill"] == 0 and served.keys() == host.keys()


def test_slabinfo_never_hands_out_the_hosts_caches(mnt, make_cgroup):
    # Since Linux 5.9 no cgroup has caches of its own: the header, not root's host list
    cgroup = make_cgroup()
    cgroup.set_memory_limit(64 * MIB)
    result = cgroup.run(["cat", f"{mnt}/proc/slabinfo"], timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == SLABINFO_HEADER
