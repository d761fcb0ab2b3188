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


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when a prerequisite is missing; fail in CI (CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing on CI: {reason}", pytrace=False)
    pytest.skip(reason)
