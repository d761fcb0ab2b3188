"""Shared test policy: on CI a missing prerequisite is a failure, never a skip."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Deadlines in the tests are for this kind of host; the emulated v2 VM lane runs
# ~10x slower and says so here (the behaviour asserted is the same, only slower).
TIME_SCALE = float(os.environ.get("CGROUPFS_TEST_TIME_SCALE", "1") or "1")


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on this host, stretched on slower (emulated) ones."""
    return seconds * TIME_SCALE


def fuse_and_cgroups(controllers=("memory", "cpu", "cpuset")):
    """The host's cgroup hierarchy, once root, /dev/fuse, libfuse3 and `controllers` are
    known to be there (required: a failure on CI).  With CGROUPFS_EXPECT_CGROUP set (the
    v2 lane), the hierarchy must also be of that mode."""
    import ctypes.util

    from cgroupfs.cgroups.hierarchy import discover

    require(os.geteuid() == 0, "needs root (FUSE mounts, cgroups)")
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing")
    require(ctypes.util.find_library("fuse3") is not None, "libfuse3 is not installed (Debian: fuse3)")
    hierarchy = discover()
    for controller in controllers:
        require(hierarchy.version_of(controller) is not None, f"cgroup controller {controller!r} is not available")
    expected = os.environ.get("CGROUPFS_EXPECT_CGROUP")
    if expected:
        assert hierarchy.mode == expected, f"expected a {expected} host, found {hierarchy.mode}"
    return hierarchy


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when a prerequisite is missing; fail in CI (CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing on CI: {reason}", pytrace=False)
    pytest.skip(reason)
