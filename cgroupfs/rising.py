"""Counters that must never go back, kept per cgroup between renders.

/proc/stat's idle measured against a CPU quota (files/stat.py) is capacity - usage,
and a container can run a little more than its quota's share over a window that
does not line up with its CFS periods (measured: 53 ticks used against 52 of
capacity over 1.04 s), so two reads a second apart could show idle going back by a
tick or two.  top and vmstat take deltas of these counters: top printed
`100.0 id` for a container flat out at its quota.  The kernel's counters never go
back; neither do ours: each is served as the highest value served so far.
"""

from __future__ import annotations

import threading
import time

# Entries not raised for this long are dropped when the table is full: a container
# gone, or read too rarely for a step back to matter.
IDLE_AFTER_S = 3600.0
MAX_ENTRIES = 4096


class RisingCounters:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._values: dict[object, tuple[int, float]] = {}  # key -> (highest served, when)
        self._lock = threading.Lock()  # the views loop and the per-reader loop both render

    def at_least_before(self, key: object, value: int) -> int:
        """`value`, or the highest value served for `key` before if that is higher."""
        now = time.monotonic()
        with self._lock:
            previous = self._values.get(key)
            if previous is not None and previous[0] > value:
                value = previous[0]
            if previous is None and len(self._values) >= self.max_entries:
                self._values = {k: v for k, v in self._values.items() if now - v[1] < IDLE_AFTER_S}
                if len(self._values) >= self.max_entries:
                    self._values.clear()
            self._values[key] = (value, now)
        return value

    def __len__(self) -> int:
        return len(self._values)
