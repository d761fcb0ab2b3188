"""The guest of the cgroup v2 lane is what the lane claims: a pure cgroup v2 machine with FUSE.

Collected only inside the VM (see conftest.py).  If one of these fails, the other results of
the run say nothing about cgroup v2.
"""

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = {"cpu", "cpuset", "io", "memory", "pids"}


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        found.append((fields[4], fields[separator + 1]))
    return found


@pytest.fixture
def cgroup():
    """A fresh cgroup below the root, removed (with whatever runs in it) afterwards."""
    path = CGROUP_ROOT / f"cgroupfs-vm-test-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        (path / "cgroup.kill").write_text("1")
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                subprocess.run(["sleep", "0.1"])


def run_in(cgroup_path: Path, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv as a member of cgroup_path from its first instruction."""
    procs = str(cgroup_path / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as file:
            file.write("0")

    return subprocess.run(argv, preexec_fn=join, capture_output=True, text=True, **kwargs)


def test_the_kernel_was_booted_without_cgroup_v1():
    assert "cgroup_no_v1=all" in Path("/proc/cmdline").read_text().split()


def test_only_cgroup2_is_mounted_and_at_sys_fs_cgroup():
    cgroup_mounts = [(point, fstype) for point, fstype in mounts() if fstype.startswith("cgroup")]
    assert cgroup_mounts == [("/sys/fs/cgroup", "cgroup2")]


def test_no_v1_controller_can_be_mounted():
    with tempfile.TemporaryDirectory() as target:
        result = subprocess.run(["mount", "-t", "cgroup", "-o", "memory", "cgroup", target],
                                capture_output=True, text=True)
        if result.returncode == 0:
            subprocess.run(["umount", target])
        assert result.returncode != 0, "a cgroup v1 memory hierarchy could be mounted"


def test_all_controllers_are_available_and_enabled_for_the_root_s_children():
    available = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
    enabled = set((CGROUP_ROOT / "cgroup.subtree_control").read_text().split())
    assert CONTROLLERS <= available
    assert CONTROLLERS <= enabled


def test_the_lane_runs_in_a_scope_below_the_root_like_a_login_session():
    assert Path("/proc/self/cgroup").read_text() == "0::/lane.scope\n"


def test_dev_fuse_is_the_fuse_character_device():
    status = os.stat("/dev/fuse")
    assert (os.major(status.st_rdev), os.minor(status.st_rdev)) == (10, 229)


def test_a_process_moved_into_a_15m_cgroup_is_limited_to_15m(cgroup):
    (cgroup / "memory.max").write_text("15M")
    (cgroup / "memory.swap.max").write_text("0")
    assert (cgroup / "memory.max").read_text() == "15728640\n"

    member = run_in(cgroup, ["cat", "/proc/self/cgroup"])
    assert member.stdout == f"0::/{cgroup.name}\n"

    # 64 MiB touched page by page cannot fit: the kernel's OOM killer ends it (SIGKILL).
    hog = run_in(cgroup, [sys.executable, "-c", "bytearray(b'x') * (64 << 20)"])
    assert hog.returncode == -9
    events = dict(line.split() for line in (cgroup / "memory.events").read_text().splitlines())
    assert int(events["oom_kill"]) >= 1


def test_direct_io_to_the_root_disk_is_counted_in_io_stat(cgroup, tmp_path):
    target = tmp_path / "direct"
    result = run_in(cgroup, ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=4",
                             "oflag=direct", "status=none"])
    assert result.returncode == 0, result.stderr
    device = os.stat(tmp_path)
    written = {}
    for line in (cgroup / "io.stat").read_text().splitlines():
        major_minor, *counters = line.split()
        written[major_minor] = int(dict(c.split("=") for c in counters)["wbytes"])
    root_disk = f"{os.major(device.st_dev)}:{os.minor(device.st_dev)}"
    assert written.get(root_disk, 0) >= 4 << 20, (root_disk, written)


def test_cpuset_and_cpu_max_can_be_set(cgroup):
    (cgroup / "cpuset.cpus").write_text("1")
    (cgroup / "cpu.max").write_text("50000 100000")
    assert (cgroup / "cpuset.cpus.effective").read_text() == "1\n"
    affinity = run_in(cgroup, ["grep", "Cpus_allowed_list", "/proc/self/status"])
    assert affinity.stdout.split() == ["Cpus_allowed_list:", "1"]
    assert (cgroup / "cpu.max").read_text() == "50000 100000\n"
