"""Deadlines for this kind of host, stretched on slower ones."""

from __future__ import annotations

import os
import time

# The emulated v2 VM lane runs ~10x slower and says so here (the behaviour
# asserted is the same, only slower).
TIME_SCALE = float(os.environ.get("CGROUPFS_TEST_TIME_SCALE", "1") or "1")


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on this host, stretched on slower (emulated) ones."""
    return seconds * TIME_SCALE


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """`predicate()`'s first true result, polled every `interval` s; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
