"""The host's own /proc files, parsed the same way as the cgroup counters.

Each kernel file has its module with a typed value and a pure parser; `HostReader`
does the I/O, rooted at a parameter so tests run it on fixture trees.
"""

from cgroupfs.host.reader import HostReader

__all__ = ["HostReader"]
