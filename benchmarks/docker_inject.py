"""How fast the Docker watcher puts the files in place, on a private engine.

1. Start event -> files in place: 50 containers started one after another; for each,
   the time from the engine's `start` event (its own timestamp) to the moment all
   eight files are mounted in the container's namespace (polled every ms from
   /proc/<pid>/mountinfo), p50/p99.
2. Heal after a restart: 100 running containers, the daemon killed with SIGKILL and
   started again; the time until every container has live files again, from the new
   daemon's spawn and from the moment its mount answers.

Run as root from the repository: `python -m benchmarks.docker_inject [--containers 50 --heal 100]`.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker

from cgroupfs.layout import CONTAINER_TARGETS
from testbed.daemon_process import DaemonProcess
from testbed.docker_checks import injected_targets, memtotal_kb, our_identities, read_in
from testbed.docker_engine import IMAGE, DockerEngine

ALL_TARGETS = set(CONTAINER_TARGETS.values())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def wait_all_injected(pids: list[int], mountpoint: str, timeout: float) -> float:
    """time.monotonic() at which every pid had all files; raises after `timeout`."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        ours = our_identities(mountpoint)
        pending = {pid for pid in pending if injected_targets(pid, mountpoint, ours) != ALL_TARGETS}
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} containers still without their files after {timeout}s")
        time.sleep(0.01)  # light polling: the daemon shares these cpus
    return time.monotonic()


def start_latencies(client: docker.DockerClient, mountpoint: str, count: int) -> list[float]:
    """Milliseconds from each container's start event to its files being in place."""
    starts: queue.Queue[dict] = queue.Queue()
    events = client.api.events(decode=True, filters={"type": "container", "event": ["start"]})

    def follow() -> None:
        for event in events:
            starts.put(event)

    threading.Thread(target=follow, daemon=True).start()
    latencies = []
    try:
        for index in range(count):
            container = client.containers.run(IMAGE, ["sleep", "600"], detach=True, network_mode="none",
                                              mem_limit=f"{32 + index}m", labels={"cgroupfs.bench": "1"})
            while True:
                event = starts.get(timeout=30)
                if event.get("id") == container.id:
                    break
            container.reload()
            pid = container.attrs["State"]["Pid"]
            deadline = time.monotonic() + 5
            while injected_targets(pid, mountpoint) != ALL_TARGETS:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"container {container.short_id} not injected after 5s")
                time.sleep(0.001)
            latencies.append((time.time_ns() - int(event["timeNano"])) / 1e6)
    finally:
        events.close()
    return latencies


def heal_time(engine: DockerEngine, client: docker.DockerClient, daemon: DaemonProcess, count: int
              ) -> tuple[float, float]:
    """Seconds until `count` running containers are healed: (from spawn, from serving)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        containers = list(pool.map(
            lambda i: client.containers.run(IMAGE, ["sleep", "600"], detach=True, network_mode="none",
                                            mem_limit="64m", labels={"cgroupfs.bench": "1"}), range(count)))
    pids = []
    for container in containers:
        container.reload()
        pids.append(container.attrs["State"]["Pid"])
    wait_all_injected(pids, daemon.mountpoint, timeout=60)
    daemon.kill(signal.SIGKILL)
    spawned = time.monotonic()
    daemon.start()
    serving = time.monotonic()
    done = wait_all_injected(pids, daemon.mountpoint, timeout=60)
    # spot check what a container reads
    assert memtotal_kb(read_in(engine, containers[0].short_id, "/proc/meminfo")) == 65536
    return done - spawned, done - serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=50, help="containers for the start-latency run")
    parser.add_argument("--heal", type=int, default=100, help="running containers for the heal run")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: it starts dockerd and mounts FUSE", file=sys.stderr)
        return 2

    engine = DockerEngine()
    daemon = None
    try:
        engine.start()
        engine.build_image()
        daemon = DaemonProcess(os.path.join(engine.base, "mnt"), "--docker-host", engine.host,
                               log_path=os.path.join(engine.base, "cgroupfs.log"))
        daemon.start()
        client = docker.DockerClient(base_url=engine.host, timeout=60)
        latencies = start_latencies(client, daemon.mountpoint, args.containers)
        for container in client.containers.list(all=True, filters={"label": "cgroupfs.bench=1"}):
            container.remove(force=True)
        from_spawn, from_serving = heal_time(engine, client, daemon, args.heal)
        client.close()
        sweeps = [line for line in daemon.log().splitlines() if "running containers in" in line]
    finally:
        if daemon is not None:
            daemon.stop()
        engine.cleanup()

    print(f"kernel {os.uname().release}, {os.cpu_count()} cpus")
    print("| measure | n | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(f"| start event -> files in place (ms) | {len(latencies)} | {statistics.median(latencies):.1f} | "
          f"{percentile(latencies, 0.99):.1f} | {max(latencies):.1f} |")
    print(f"| heal {args.heal} running containers after SIGKILL + restart, from spawn (s) | 1 | "
          f"{from_spawn:.2f} | | |")
    print(f"| same, from the new mount answering (s) | 1 | {from_serving:.2f} | | |")
    if sweeps:
        print(f"daemon's own account of the heal: {sweeps[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
