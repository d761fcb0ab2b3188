"""What a container sees: checks shared by the Docker tests and the benchmark."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs_daemon.inject import parse_mountinfo, source_identities, top_mounts
from testbed.docker_engine import DockerEngine
from testbed.timing import scaled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotInjected(AssertionError):
    pass


def our_identities(mountpoint: str) -> dict[str, tuple[str, str]]:
    with open("/proc/self/mountinfo") as f:
        return source_identities(mountpoint, CONTAINER_TARGETS, f.read())


def injected_targets(pid: int, mountpoint: str, ours: dict[str, tuple[str, str]] | None = None) -> set[str]:
    """Targets whose visible mount in the process's namespace is a live file of `mountpoint`."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            tops = top_mounts(parse_mountinfo(f.read(), set(CONTAINER_TARGETS.values())))
    except (FileNotFoundError, ProcessLookupError):
        return set()
    ours = ours or our_identities(mountpoint)
    found = set()
    for relative, target in CONTAINER_TARGETS.items():
        top = tops.get(target)
        if top is not None and (top.device, top.root) == ours[relative]:
            found.add(target)
    return found


def wait_injected(engine: DockerEngine, container: str, mountpoint: str, timeout: float = 5.0) -> float:
    """Seconds until every file is in place in `container`; fails after `timeout` (scaled)."""
    timeout = scaled(timeout)
    started = time.monotonic()
    pid = engine.init_pid(container)
    while True:
        missing = set(CONTAINER_TARGETS.values()) - injected_targets(pid, mountpoint)
        if not missing:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise NotInjected(f"{container}: {sorted(missing)} not injected after {timeout}s")
        time.sleep(0.01)


def read_in(engine: DockerEngine, container: str, path: str) -> str:
    """What a process inside the container reads from PATH with read(2).

    `head`, not busybox `cat`: cat copies with sendfile(2), which takes another path
    through FUSE (the page cache); test_sendfile_readers covers that path on its own.
    """
    return engine.cli("exec", container, "head", "-n", "100000", path).stdout


def cat_in(engine: DockerEngine, container: str, path: str) -> str:
    """What busybox `cat PATH` (sendfile(2)) prints inside the container."""
    return engine.cli("exec", container, "cat", path).stdout


def memtotal_kb(meminfo: str) -> int:
    match = re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M)
    assert match, f"no MemTotal line in {meminfo!r}"
    return int(match.group(1))


def processor_count(cpuinfo: str) -> int:
    return len(re.findall(r"^processor\s*:", cpuinfo, re.M))


def cgroupfs_cli(engine: DockerEngine, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the `cgroupfs` console script (or `python -m cgroupfs_daemon.cli`) against the engine."""
    script = os.path.join(os.path.dirname(sys.executable), "cgroupfs")
    argv = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "cgroupfs_daemon.cli"]
    return subprocess.run([*argv, *args], env=engine.env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
