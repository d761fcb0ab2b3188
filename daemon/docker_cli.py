"""The Docker side of the command line: `flags`, `docker run`, and `show --container`.

With the flags, Docker binds the files when it creates the container, so they are in
place before its first instruction; the watcher can only act after the start event.
"""

from __future__ import annotations

import os
import shutil
import sys

from cgroupfs.layout import CONTAINER_TARGETS, docker_volume_flags
from cgroupfs.table import DIRECTORIES
from cgroupfs_daemon.options import DEFAULT_DOCKER_HOST


def missing_sources(mountpoint: str) -> list[str]:
    """The files (and the cpu directory) under `mountpoint` that do not exist (the daemon
    is not serving there)."""
    return [relative for relative in CONTAINER_TARGETS
            if not (os.path.isdir if relative in DIRECTORIES else os.path.isfile)(os.path.join(mountpoint, relative))]


def _not_serving_message(mountpoint: str) -> str:
    return (f"cgroupfs is not serving {mountpoint} (start `cgroupfs daemon --mountpoint {mountpoint}` first); "
            "without it Docker would create empty directories there")


def print_flags(mountpoint: str) -> int:
    """Print the -v flags on one line, for `docker run $(cgroupfs flags) ...`."""
    if missing_sources(mountpoint):
        # stderr only: $(cgroupfs flags) must still expand to the flags alone
        print(f"cgroupfs: warning: {_not_serving_message(mountpoint)}", file=sys.stderr)
    print(" ".join(docker_volume_flags(mountpoint)))
    return 0


def docker_run(mountpoint: str, args: list[str]) -> int:
    """Exec `docker run FLAGS ARGS...`: stdio, signals and exit status are docker's own.

    Refuses when the daemon is not serving: Docker creates a missing -v source as an
    empty directory, which would then stop the daemon from mounting there.
    """
    if missing_sources(mountpoint):
        print(f"cgroupfs: {_not_serving_message(mountpoint)}", file=sys.stderr)
        return 1
    docker = shutil.which("docker")
    if docker is None:
        print("cgroupfs: no `docker` command on PATH", file=sys.stderr)
        return 127
    argv = [docker, "run", *docker_volume_flags(mountpoint), *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(docker, argv)
    except OSError as exc:
        print(f"cgroupfs: cannot run {docker}: {exc.strerror}", file=sys.stderr)
        return 126
    return 0  # not reached: execv does not return on success


def container_init_pid(docker_host: str | None, name_or_id: str) -> int:
    """The host pid of a running container's init process, from `docker inspect`."""
    import docker  # imported here: `flags` and `docker run` work without the SDK

    base_url = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    client = docker.DockerClient(base_url=base_url, timeout=10)
    try:
        state = client.api.inspect_container(name_or_id).get("State") or {}
    finally:
        client.close()
    pid = state.get("Pid") or 0
    if not state.get("Running") or pid <= 0:
        raise LookupError(f"container {name_or_id} is not running")
    return pid
