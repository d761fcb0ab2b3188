import pytest

from cgroupfs.cgroups.hierarchy import Mount, cgroup_mounts
from cgroupfs.cgroups.membership import parse_proc_cgroup
from cgroupfs.errors import ParseError
from cgroupfs.mountinfo import parse_mountinfo
from tests.unit.fixture_trees import HYBRID, V2, hierarchy


def test_hybrid_host_is_detected_from_mountinfo():
    h = hierarchy(HYBRID)
    assert h.mode == "hybrid"
    assert h.version_of("memory") == 1
    assert h.v1["cpu"].directory.endswith("/sys/fs/cgroup/cpu")
    assert h.v1["cpuacct"].directory.endswith("/sys/fs/cgroup/cpuacct")
    assert "name=systemd" not in h.v1 and "systemd" not in h.v1


def test_pure_v2_host_reads_its_controllers():
    h = hierarchy(V2)
    assert h.mode == "v2"
    assert h.v1 == {}
    assert h.version_of("memory") == 2 and h.version_of("cpuset") == 2
    assert h.version_of("blkio") is None


def test_co_mounted_controllers_share_one_mount():
    text = "25 22 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    v1, v2 = cgroup_mounts(parse_mountinfo(text))
    assert v1["cpu"] is v1["cpuacct"]
    assert v1["cpu"].directory == "/sys/fs/cgroup/cpu,cpuacct"
    assert v2 is None


def test_escaped_mount_directory_and_non_root_mount():
    text = r"25 22 0:22 / /mnt/my\040cgroups rw - cgroup2 cgroup2 rw" + "\n"
    assert cgroup_mounts(parse_mountinfo(text))[1].directory == "/mnt/my cgroups"
    mount = Mount(directory="/sys/fs/cgroup", root="/docker/abc")
    assert mount.path_of("/docker/abc/sub") == "/sys/fs/cgroup/sub"
    assert mount.path_of("/docker/abc") == "/sys/fs/cgroup"
    assert mount.path_of("/other") is None


def test_malformed_mountinfo_line_raises_parse_error():
    with pytest.raises(ParseError):
        parse_mountinfo("garbage - cgroup\n")


def test_proc_cgroup_v1_v2_and_named_hierarchies():
    paths = parse_proc_cgroup("12:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n0::/system.slice\n")
    assert paths.v1 == {"cpu": "/docker/x", "cpuacct": "/docker/x"}
    assert paths.v2 == "/system.slice"


@pytest.mark.parametrize("text", ["no colons here\n", "1:memory:relative/path\n"])
def test_proc_cgroup_malformed(text):
    with pytest.raises(ParseError):
        parse_proc_cgroup(text)
