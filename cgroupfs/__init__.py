"""cgroupfs: container-accurate /proc and /sys files computed from cgroup counters.

This package has no side effects on import and starts nothing: it reads cgroup and
/proc trees rooted at parameters and renders file contents.  The daemon around it
(mounting, Docker, metrics, systemd) lives in the ``cgroupfs_daemon`` package.
"""

from importlib import metadata

# pyproject.toml is the one place the version is written.
try:
    __version__ = metadata.version("cgroupfs")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"
