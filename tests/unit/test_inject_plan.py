"""inject_plan.decide on mount tables captured with a private dockerd (kernel 6.18.44,
tests/fixtures/capture_container_mounts.py): daemon A injected a container and was
SIGKILLed, daemon B (same mount point, another FUSE device) healed it."""

import errno
import os

import pytest

from cgroupfs.mountinfo import read_mountinfo
from cgroupfs_daemon.inject_plan import decide, source_identities
from tests.unit.fixture_trees import MOUNTS

MOUNTPOINT = "/tmp/cgfs-dk-4mp3jb0d/mnt"
# The targets of the daemon that made these tables (later versions inject more files;
# decide() works on any set of targets).
CONTAINER_TARGETS = {relative: "/" + relative for relative in (
    "proc/cpuinfo", "proc/diskstats", "proc/loadavg", "proc/meminfo", "proc/stat", "proc/swaps", "proc/uptime",
    "sys/devices/system/cpu/online")}
TARGETS = set(CONTAINER_TARGETS.values())


def table(name: str):
    return read_mountinfo(os.path.join(MOUNTS, name))


def ours(host: str):
    return source_identities(MOUNTPOINT, CONTAINER_TARGETS, table(host))


def never_probed(target: str) -> int:
    raise AssertionError(f"{target}: our own mount or nothing mounted needs no probe")


def test_our_files_show_our_fuse_device_and_their_path_in_the_mount():
    assert ours("host-a") == {relative: ("0:73", f"/{relative}") for relative in CONTAINER_TARGETS}
    assert ours("host-b")["proc/meminfo"] == ("0:40", "/proc/meminfo")


def test_a_mount_point_no_mount_holds_is_an_error():
    with pytest.raises(OSError):
        source_identities("relative/mnt", CONTAINER_TARGETS, table("host-a"))


def test_files_already_injected_are_present():
    assert decide(table("injected"), CONTAINER_TARGETS, ours("host-a"), never_probed) == dict.fromkeys(TARGETS, "present")


@pytest.mark.parametrize("dead_errno", [errno.ENOTCONN, errno.EIO, errno.ECONNABORTED])
def test_a_dead_daemons_files_are_healed(dead_errno):
    probed = []

    def probe(target):
        probed.append(target)
        return dead_errno

    assert decide(table("stale"), CONTAINER_TARGETS, ours("host-b"), probe) == dict.fromkeys(TARGETS, "heal")
    assert sorted(probed) == sorted(TARGETS)


@pytest.mark.parametrize("live_errno", [0, errno.EACCES])
def test_another_live_filesystem_is_left_alone(live_errno):
    # e.g. the same table while daemon A still served: not ours (B), but it answers
    assert decide(table("stale"), CONTAINER_TARGETS, ours("host-b"), lambda target: live_errno) == dict.fromkeys(
        TARGETS, "foreign")


def test_healed_files_are_present_for_the_new_daemon():
    assert decide(table("healed"), CONTAINER_TARGETS, ours("host-b"), never_probed) == dict.fromkeys(TARGETS, "present")


def test_a_users_own_bind_is_foreign_and_the_rest_ours():
    probed = []
    actions = decide(table("own-bind"), CONTAINER_TARGETS, ours("host-b"), lambda target: probed.append(target) or 0)
    assert actions == {**dict.fromkeys(TARGETS, "present"), "/proc/meminfo": "foreign"}
    assert probed == ["/proc/meminfo"]


def test_a_container_without_our_files_gets_them_mounted():
    assert decide(table("opted-out"), CONTAINER_TARGETS, ours("host-b"), never_probed) == dict.fromkeys(TARGETS, "mount")


def test_other_files_of_ours_count_as_present():
    # The watcher injects views; the per-reader files cgroupfs-runtime bound are ours too.
    views = {relative: ("0:99", f"/some-id/{relative}") for relative in CONTAINER_TARGETS}
    assert decide(table("injected"), CONTAINER_TARGETS, views, never_probed, also_ours=ours("host-a")) == dict.fromkeys(
        TARGETS, "present")
