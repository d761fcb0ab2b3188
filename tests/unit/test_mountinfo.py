"""cgroupfs.mountinfo on mount tables captured from a real host and Docker container
(kernel 6.18.44, tests/fixtures/capture_container_mounts.py)."""

import os

import pytest

from cgroupfs.cgroups.hierarchy import Mount, cgroup_mounts
from cgroupfs.errors import ParseError
from cgroupfs.mountinfo import MountEntry, holder_of, parse_mountinfo, read_mountinfo, top_mounts
from tests.unit.fixture_trees import MOUNTS

CONTAINER_ID = "54b8623455f188064e2a5d1ae3995762345ef0f48448630ef0446f67086826a3"


def table(name: str) -> list[MountEntry]:
    return read_mountinfo(os.path.join(MOUNTS, name))


def test_every_field_of_an_injected_file_and_of_the_root():
    entries = table("injected")
    assert len(entries) == 36
    assert entries[0] == MountEntry(
        mount_id=56, parent_id=57, device="0:58", root="/", mount_point="/", mount_options="rw,relatime",
        optional_fields=("master:8",), fstype="overlay", source="overlay",
        super_options=entries[0].super_options)
    assert entries[0].super_options.startswith("rw,lowerdir=/tmp/cgfs-dk-4mp3jb0d/data/overlay2/l/")
    meminfo = next(e for e in entries if e.mount_point == "/proc/meminfo")
    assert meminfo == MountEntry(
        mount_id=69, parent_id=150, device="0:73", root="/proc/meminfo", mount_point="/proc/meminfo",
        mount_options="ro,nosuid,nodev,relatime", optional_fields=(), fstype="fuse.cgroupfs", source="cgroupfs",
        super_options="ro,user_id=0,group_id=0,allow_other")


def test_only_the_asked_mount_points():
    entries = read_mountinfo(os.path.join(MOUNTS, "own-bind"), {"/proc/meminfo", "/proc/stat"})
    assert [(e.mount_point, e.fstype, e.root) for e in entries] == [
        ("/proc/meminfo", "ext4", "/tmp/cgfs-dk-4mp3jb0d/own-meminfo"),
        ("/proc/stat", "fuse.cgroupfs", "/proc/stat"),
    ]


def test_escaped_fields_and_an_empty_source():
    # mount -t tmpfs "" "/mnt/a b\c"
    entries = parse_mountinfo(r"80 27 0:99 / /mnt/a\040b\134c rw,relatime shared:40 - tmpfs  rw,size=1024k" + "\n")
    assert (entries[0].mount_point, entries[0].source, entries[0].optional_fields) == ("/mnt/a b\\c", "", ("shared:40",))


@pytest.mark.parametrize("line", [
    "garbage - cgroup",                                            # no fields before the separator
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",  # no separator
    "36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root",                   # super options missing
    "x 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",                 # mount id not a number
])
def test_malformed_lines_raise_parse_error(line):
    with pytest.raises(ParseError):
        parse_mountinfo(line + "\n")


def test_the_top_of_a_stack_is_the_mount_no_other_has_as_parent():
    # Mid-heal: a fresh mount (123) put beneath the dead one (69), which is now its child.
    text = ("123 150 0:40 /proc/meminfo /proc/meminfo ro,relatime - fuse.cgroupfs cgroupfs ro\n"
            "69 123 0:73 /proc/meminfo /proc/meminfo ro,relatime - fuse.cgroupfs cgroupfs ro\n")
    assert top_mounts(parse_mountinfo(text))["/proc/meminfo"].mount_id == 69
    assert top_mounts(parse_mountinfo("\n".join(reversed(text.splitlines()))))["/proc/meminfo"].mount_id == 69


def test_the_holder_of_a_path_is_the_longest_mount_point_above_it():
    host = table("host-a")
    mountpoint = "/tmp/cgfs-dk-4mp3jb0d/mnt"
    assert holder_of(mountpoint, host).device == "0:73"
    assert holder_of(mountpoint + "/proc/meminfo", host).device == "0:73"
    assert holder_of("/tmp/cgfs-dk-4mp3jb0d/mntx", host).mount_point == "/"


def test_a_containers_cgroup_mounts_are_rooted_at_its_cgroup():
    v1, v2 = cgroup_mounts(table("injected"))
    assert v2 is None
    assert v1["memory"] == Mount(directory="/sys/fs/cgroup/memory", root=f"/docker/{CONTAINER_ID}")
    assert set(v1) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"}
