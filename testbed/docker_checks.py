"""What a container sees: checks shared by the Docker tests and the benchmark."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from cgroupfs.layout import CONTAINER_TARGETS
from cgroupfs.mountinfo import read_mountinfo, top_mounts
from cgroupfs_daemon.inject_plan import source_identities
from testbed.docker_engine import DockerEngine
from testbed.timing import scaled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotInjected(AssertionError):
    pass


def our_identities(mountpoint: str) -> dict[str, tuple[str, str]]:
    return source_identities(os.path.realpath(mountpoint), CONTAINER_TARGETS, read_mountinfo())


def injected_targets(pid: int, mountpoint: str, ours: dict[str, tuple[str, str]] | None = None,
                     container_id: str | None = None) -> set[str]:
    """Targets whose visible mount in the process's namespace is a live file of `mountpoint`
    or, given the container's id, of its view (the daemon's default views mount point)."""
    try:
        tops = top_mounts(read_mountinfo(f"/proc/{pid}/mountinfo", set(CONTAINER_TARGETS.values())))
    except (FileNotFoundError, ProcessLookupError):
        return set()
    accepted = [ours or our_identities(mountpoint)]
    if container_id is not None:
        accepted.append(our_identities(f"{mountpoint.rstrip('/')}-views/{container_id}"))
    found = set()
    for relative, target in CONTAINER_TARGETS.items():
        top = tops.get(target)
        if top is not None and any((top.device, top.root) == identities[relative] for identities in accepted):
            found.add(target)
    return found


def wait_injected(engine: DockerEngine, container: str, mountpoint: str, timeout: float = 5.0) -> float:
    """Seconds until every file is in place in `container`; fails after `timeout` (scaled)."""
    timeout = scaled(timeout)
    started = time.monotonic()
    pid = engine.init_pid(container)
    container_id = engine.cli("inspect", "-f", "{{.Id}}", container).stdout.strip()
    while True:
        missing = set(CONTAINER_TARGETS.values()) - injected_targets(pid, mountpoint, container_id=container_id)
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
                          timeout=scaled(timeout))
