"""The host entries of the cpu directory: ids that survive a takeover, reads by descriptor."""

import os

import pytest

from cgroupfs_daemon.fuse_session import FuseError
from cgroupfs_daemon.host_entries import HOST_NODE_BIT, HostEntries, split_view, with_view

pytestmark = pytest.mark.unit


@pytest.fixture
def cpu_directory(tmp_path):
    (tmp_path / "cpu1" / "topology").mkdir(parents=True)
    (tmp_path / "cpu1" / "topology" / "core_id").write_text("1\n")
    (tmp_path / "cpu1" / "subsystem").symlink_to("../../../../bus/cpu")
    (tmp_path / "kernel_max").write_text("255\n")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_a_successor_gives_every_path_the_same_id_and_learns_ids_it_has_not_seen(cpu_directory):
    first = HostEntries(cpu_directory)
    core_id = first.node("cpu1/topology/core_id")
    successor = HostEntries(cpu_directory)  # a new daemon that took the connection over
    assert successor.path(core_id) == "cpu1/topology/core_id"  # the kernel still holds this id
    assert successor.node("cpu1") == first.node("cpu1")
    assert successor.read(successor.path(core_id)) == b"1\n"
    assert successor.readlink("cpu1/subsystem") == b"../../../../bus/cpu"
    with pytest.raises(FuseError):
        successor.path(HOST_NODE_BIT | 12345)


def test_view_numbers_ride_above_the_entry_id(cpu_directory):
    node = HostEntries(cpu_directory).node("kernel_max")
    assert HostEntries.owns(node) and not HostEntries.owns(64 * 7 + 3)
    assert split_view(with_view(node, 7)) == (7, node)
