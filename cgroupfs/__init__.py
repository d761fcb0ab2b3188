"""cgroupfs: container-accurate /proc and /sys files computed from cgroup counters.

This package has no side effects on import and starts nothing: it reads cgroup and
/proc trees rooted at parameters and renders file contents.  The daemon around it
(mounting, Docker, metrics, systemd) lives in the top-level ``daemon`` package.
"""

__version__ = "0.1.0"
