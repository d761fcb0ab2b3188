"""What a successor learns from its predecessor (daemon/handoff.py), as pure logic:
the LISTEN_FDS protocol, the state it reads back, the views registry, file handles."""

from __future__ import annotations

import errno
import os

import pytest

from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_files import HANDLE_GENERATION_SHIFT, PerReaderFiles
from cgroupfs_daemon.fuse_session import Caller, FuseError
from cgroupfs_daemon.handoff import Connection, HandoffState, StateFile, received_descriptors
from cgroupfs_daemon.views import Views
from tests.unit.fixture_trees import V2, V2_15M_PID, server

pytestmark = pytest.mark.unit


def in_child(function) -> str:
    """repr(function()) computed in a forked child, whose fds may be rearranged freely."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write_end, repr(function()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        result = f.read().decode()
    os.waitpid(child, 0)
    return result


def test_descriptors_are_taken_by_name_only_when_meant_for_this_pid():
    def handed() -> tuple:
        placed = os.open("/dev/null", os.O_RDONLY)
        os.dup2(placed, 3)
        os.dup2(placed, 4)
        environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "state:fuse-cgroupfs"}
        taken = received_descriptors(environ)
        return taken, sorted(environ), os.get_inheritable(3)

    assert in_child(handed) == repr(({"state": 3, "fuse-cgroupfs": 4}, [], False))
    assert received_descriptors({"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "state"}) == {}
    assert received_descriptors({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == {}
    assert received_descriptors({}) == {}


def test_the_state_reads_back_as_written_and_a_foreign_one_is_refused():
    state = HandoffState(generation=4, clean=True,
                         connections={"cgroupfs": Connection("cgroupfs", "/var/lib/cgroupfs", "0:57", 31,
                                                             fp.HAS_RESEND | fp.NO_OPEN_SUPPORT)},
                         views={"next_number": 3, "views": []})
    file = StateFile()
    try:
        file.save(state)
        assert file.load() == state
        file.save(HandoffState(generation=1))  # shorter: nothing of the old text is left
        assert file.load() == HandoffState(generation=1)
        os.ftruncate(file.fd, 0)
        os.pwrite(file.fd, b'{"version": 99}', 0)
        assert file.load() is None  # another version's state: mount afresh
        os.ftruncate(file.fd, 0)
        os.pwrite(file.fd, b"not json", 0)
        assert file.load() is None
    finally:
        os.close(file.fd)


def test_a_restored_registry_keeps_its_numbers_and_never_reuses_one():
    before = Views(server(V2), "/views")
    before.add("aaa", V2_15M_PID)
    before.add("bbb", V2_15M_PID)
    before.remove("aaa")  # number 1 is gone for good
    exported = before.export()
    after = Views(server(V2), "/views")
    after.restore(exported)
    assert after.export() == exported
    assert after.add("bbb", V2_15M_PID) == "/views/bbb"  # the same container: the same number
    assert after.export()["views"][0]["number"] == 2
    after.add("ccc", V2_15M_PID)
    assert {view["id"]: view["number"] for view in after.export()["views"]} == {"bbb": 2, "ccc": 3}


def test_a_file_opened_before_the_handover_is_adopted_and_a_current_unknown_handle_is_not():
    files = PerReaderFiles(server(V2), generation=2)
    meminfo = files.tree.child(files.tree.child(fp.ROOT_ID, "proc")[0], "meminfo")[0]
    old_handle = (1 << HANDLE_GENERATION_SHIFT) + 7
    data = files.read(meminfo, old_handle, 0, 4096, from_page_cache=False, caller=Caller(V2_15M_PID, 0, 0))
    assert data.startswith(b"MemTotal:")
    assert files.read(meminfo, old_handle, 10, 5, from_page_cache=False) == data[10:15]  # kept for its next READ
    handle, _flags = files.open(meminfo, os.O_RDONLY, Caller(V2_15M_PID, 0, 0))
    assert handle >> HANDLE_GENERATION_SHIFT == 2
    with pytest.raises(FuseError) as raised:
        files.read(meminfo, handle + 100, 0, 10, from_page_cache=False, caller=Caller(V2_15M_PID, 0, 0))
    assert raised.value.errno == errno.EBADF  # ours, yet unknown: never invent content for it
