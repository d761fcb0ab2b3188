"""Shared test policy: lanes, and on CI a missing prerequisite is a failure, never a skip.

Every test is in exactly one lane, given here at collection:
- unit: needs nothing but the virtualenv (no root, FUSE, cgroups, Docker or host
  tools), so it passes as any user: tests/unit, and tests marked `unit` elsewhere
  (`pytestmark = pytest.mark.unit` for a module, or on the test).  `make test-unit`.
- docker: tests/docker, and tests marked `docker` elsewhere (the private dockerd).
- integration: everything else (root, real FUSE mounts, real cgroups, host tools).
`make test` runs all three.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        top = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if top == "unit":
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("unit"):
            continue
        if top == "docker":
            item.add_marker(pytest.mark.docker)
        if not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A unit test has no prerequisite to miss: if one skips, it is in the wrong lane."""
    report = (yield).get_result()
    if report.skipped and item.get_closest_marker("unit"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a unit test must not need anything, but it skipped: {reason}"


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
