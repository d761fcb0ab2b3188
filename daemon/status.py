"""`cgroupfs version` and `cgroupfs status`: what an operator asks first.

Status combines what any process can see (the mount table, the host's cgroup
hierarchy, whether a listing through the mount answers) with what only the
daemon knows (containers served, Docker connection, metrics address), which it
publishes in its state file (daemon/state.py).

Exit status, as LSB `status` actions use it: 0 mounted and answering, with a
live daemon; 1 something is wrong (a stale mount, a mount that does not answer,
a daemon that stopped updating its state); 3 not running.
"""

from __future__ import annotations

import os
import sys
import time

from cgroupfs import __version__
from cgroupfs_daemon.notify import MountProbe
from cgroupfs_daemon.state import default_state_path, read_state

OK, UNHEALTHY, NOT_RUNNING = 0, 1, 3
PROBE_TIMEOUT_S = 2.0


def version_text() -> str:
    """`cgroupfs 0.1.0 (Python 3.11.7, FUSE protocol 7.31)`: the protocol we offer the kernel."""
    from cgroupfs_daemon.fuse_protocol import KERNEL_MINOR_VERSION, KERNEL_VERSION

    return (f"cgroupfs {__version__} (Python {sys.version.split()[0]}, "
            f"FUSE protocol {KERNEL_VERSION}.{KERNEL_MINOR_VERSION})")


def print_version(out=None) -> int:
    print(version_text(), file=out or sys.stdout)
    return OK


def mount_types_at(path: str, mountinfo_path: str = "/proc/self/mountinfo") -> list[str]:
    from cgroupfs_daemon.mount import mounts_at

    try:
        return mounts_at(path, mountinfo_path)
    except OSError:
        return []


def _cgroup_line(proc_root: str) -> str:
    from cgroupfs.cgroups.hierarchy import discover

    try:
        hierarchy = discover(proc_root)
    except Exception as exc:  # a malformed mountinfo must not hide the rest of the report
        return f"unknown ({exc})"
    details = []
    if hierarchy.v1:
        details.append("v1 controllers: " + " ".join(sorted(hierarchy.v1)))
    if hierarchy.v2 is not None:
        controllers = " ".join(sorted(hierarchy.v2_controllers)) or "none enabled"
        details.append(f"v2 at {hierarchy.v2.directory} ({controllers})")
    return f"{hierarchy.mode}" + (f" ({'; '.join(details)})" if details else "")


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def print_status(mountpoint: str, state_path: str | None = None, *, out=None,
                 proc_root: str = "/proc", probe_timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Print the report; return the exit status (OK, UNHEALTHY, NOT_RUNNING)."""
    out = out or sys.stdout
    mountpoint = os.path.abspath(mountpoint)
    state_path = state_path or default_state_path()
    lines = [("cgroupfs", __version__)]
    code = OK

    types = mount_types_at(mountpoint, os.path.join(proc_root, "self/mountinfo"))
    if not types or not types[-1].startswith("fuse"):
        lines.append(("mount", f"{mountpoint}: not mounted"))
        code = NOT_RUNNING
    else:
        probe = MountProbe(mountpoint)
        if probe.answers(probe_timeout_s):
            lines.append(("mount", f"{mountpoint}: mounted ({types[-1]}), answering"))
        else:
            lines.append(("mount", f"{mountpoint}: mounted ({types[-1]}) but not answering: {probe.last_error}"))
            code = UNHEALTHY

    state = read_state(state_path)
    now = time.time()
    if state is None:
        lines.append(("daemon", f"no state file at {state_path}"))
        if code == OK:
            code = UNHEALTHY  # mounted by something that does not report: an old or foreign daemon
    elif not _pid_alive(int(state.get("pid", 0))):
        lines.append(("daemon", f"not running (pid {state.get('pid')} in {state_path} is gone)"))
        state = None
        code = NOT_RUNNING if code == NOT_RUNNING else UNHEALTHY
    else:
        updated_ago = now - float(state.get("updated_at", 0))
        text = f"running, pid {state['pid']}, up {_age(now - float(state.get('started_at', now)))}"
        if os.path.abspath(state.get("mountpoint", mountpoint)) != mountpoint:
            text += f", serving {state.get('mountpoint')} (not {mountpoint})"
        if updated_ago > 3 * float(state.get("update_interval_s", 5)):
            text += f"; state not updated for {_age(updated_ago)}"
            if code == OK:
                code = UNHEALTHY
        lines.append(("daemon", text))

    lines.append(("cgroups", _cgroup_line(proc_root)))
    if state is not None:
        lines.append(("containers", str(state.get("containers", 0))))
        docker = state.get("docker") or {}
        if not docker.get("enabled"):
            lines.append(("docker", "off (--no-docker)"))
        else:
            lines.append(("docker", f"{'connected' if docker.get('connected') else 'not connected'} "
                                    f"({docker.get('host')})"))
        address = state.get("metrics_address")
        lines.append(("metrics", f"http://{address}/metrics" if address else "off (--no-metrics)"))
        sysinfo = state.get("sysinfo") or {}
        if not sysinfo.get("socket"):
            lines.append(("sysinfo", "off (--no-sysinfo)"))
        else:
            lines.append(("sysinfo", f"{sysinfo.get('listeners', 0)} listeners at {sysinfo['socket']}; calls answered "
                                     f"{sysinfo.get('answered', 0)}, left to the kernel {sysinfo.get('kernel', 0)}"))
    width = max(len(label) for label, _ in lines) + 1
    for label, text in lines:
        print(f"{label + ':':<{width}} {text}" if label != "cgroupfs" else f"cgroupfs {text}", file=out)
    return code
