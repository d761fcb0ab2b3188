"""Which answer a views connection gives OPEN, by what the kernel offered in FUSE_INIT."""

from __future__ import annotations

import errno

import pytest

from cgroupfs_daemon import fuse_protocol as fp
from cgroupfs_daemon.fuse_session import Caller, FuseError
from cgroupfs_daemon.views import Views
from tests.unit.fixture_trees import V2, server


class OfferedFlags:
    """Stands in for the Session: only what Views.open reads."""

    def __init__(self, kernel_flags: int | None):
        self.kernel_flags = kernel_flags


def views_with(kernel_flags: int | None) -> Views:
    views = Views(server(V2), "/nonexistent")
    views.session = OfferedFlags(kernel_flags)  # type: ignore[assignment]
    return views


@pytest.mark.unit
def test_a_kernel_with_no_open_is_told_enosys_once():
    with pytest.raises(FuseError) as raised:
        views_with(fp.AUTO_INVAL_DATA | fp.NO_OPEN_SUPPORT).open(65, 0, Caller(1, 0, 0))
    assert raised.value.errno == errno.ENOSYS


@pytest.mark.unit
def test_a_kernel_without_no_open_gets_an_open_that_keeps_the_cache():
    assert views_with(fp.AUTO_INVAL_DATA).open(65, 0, Caller(1, 0, 0)) == (0, fp.FOPEN_KEEP_CACHE)
