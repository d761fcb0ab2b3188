"""What one /metrics scrape costs with 100 running cgroups (`python -m benchmarks.scrape`).

Budget (issue 4): a scrape takes <= 100 ms and costs the exporting process <= 50 ms
of CPU.  Every cgroup holds one sleeping process and a memory limit.  The exporter
is a separate process, so its CPU time (utime+stime from /proc/<pid>/stat, summed
over all its threads, averaged over many scrapes) is not mixed with this client's:
- `--mode daemon` (default): the real `cgroupfs daemon`; each cgroup's process reads
  proc/meminfo through the mount once, which is how the daemon learns of it;
- `--mode component`: MetricsServer alone in a child process, the cgroups
  registered with DaemonStats.note_served (what the FUSE path calls).
Run as root; everything created is removed, even on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from cgroupfs.cgroups import discover
from testbed.cgroups import TestCgroup
from testbed.daemon_process import REPO
from testbed.metrics import free_port, ids_in, scrape
from testbed.timing import wait_for

BUDGET_WALL_S = 0.100
BUDGET_CPU_S = 0.050
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def serve_component(port: int, pids: list[int]) -> None:
    """The child process of --mode component: MetricsServer with these readers' cgroups."""
    import signal

    from cgroupfs.cgroups import CgroupReader, read_proc_cgroup
    from cgroupfs_daemon.metrics import MetricsServer
    from cgroupfs_daemon.stats import DaemonStats

    # Blocked before any thread starts, so sigwait() below is what receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    stats = DaemonStats()
    for pid in pids:
        stats.note_served(read_proc_cgroup(pid))
    server = MetricsServer(f"127.0.0.1:{port}", stats, CgroupReader(discover()))
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def measure(port: int, exporter_pid: int, scrapes: int, round_size: int = 10) -> dict:
    """Wall time per scrape; CPU per scrape averaged over rounds of `round_size`
    (utime/stime tick in 10 ms steps: a round resolves 1 ms)."""
    walls, round_cpus = [], []
    body = ""
    for _ in range(max(1, scrapes // round_size)):
        cpu_before = process_cpu_s(exporter_pid)
        for _ in range(round_size):
            started = time.perf_counter()
            body = scrape(port)
            walls.append(time.perf_counter() - started)
        round_cpus.append((process_cpu_s(exporter_pid) - cpu_before) / round_size)
    walls.sort()
    return {
        "wall_median_s": statistics.median(walls), "wall_p95_s": walls[int(0.95 * (len(walls) - 1))],
        "wall_max_s": walls[-1], "cpu_median_s": statistics.median(round_cpus), "cpu_min_s": min(round_cpus),
        "bytes": len(body), "series": sum(1 for line in body.splitlines() if line[:1] not in ("#", "")),
    }


def fuse_read_latency(mountpoint: str, port: int, reads: int = 300) -> dict:
    """p50/p99 of open+read of proc/meminfo through the mount, idle and during back-to-back scrapes."""
    import threading

    def probe() -> tuple[float, float]:
        latencies = []
        for _ in range(reads):
            started = time.perf_counter()
            with open(os.path.join(mountpoint, "proc/meminfo"), "rb") as f:
                f.read()
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        return latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]

    idle = probe()
    scraping = threading.Event()
    scraping.set()

    def scrape_loop():
        while scraping.is_set():
            scrape(port)

    scraper = threading.Thread(target=scrape_loop)
    scraper.start()
    try:
        busy = probe()
    finally:
        scraping.clear()
        scraper.join()
    return {"idle": idle, "scraping": busy}


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(count: int, scrapes: int, mode: str) -> int:
    if os.geteuid() != 0:
        print("benchmarks.scrape: run as root (it creates cgroups and mounts the daemon)", file=sys.stderr)
        return 2
    hierarchy = discover()
    workdir = tempfile.mkdtemp(prefix="cgroupfs-bench-scrape-")
    mountpoint = os.path.join(workdir, "mnt")
    os.mkdir(mountpoint)
    port = free_port()
    cgroups: list[TestCgroup] = []
    sleepers: list[subprocess.Popen] = []
    exporter: subprocess.Popen | None = None
    log = open(os.path.join(workdir, "exporter.log"), "wb")
    try:
        if mode == "daemon":
            exporter = subprocess.Popen(
                [sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", "--mountpoint", mountpoint, "--no-docker",
                 "--metrics-address", f"127.0.0.1:{port}", "--log-level", "warning"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_for(lambda: os.path.exists(os.path.join(mountpoint, "proc/meminfo")), 30, what="the mount")
        for index in range(count):
            cgroup = TestCgroup(f"cgroupfs-bench-scrape-{os.getpid()}-{index}", hierarchy)
            cgroups.append(cgroup)
            cgroup.set_memory_limit(256 << 20)
            command = (f"cat {mountpoint}/proc/meminfo >/dev/null; exec sleep infinity" if mode == "daemon"
                       else "exec sleep infinity")
            sleepers.append(cgroup.popen(["sh", "-c", command], stdin=subprocess.DEVNULL))
        if mode == "component":
            time.sleep(0.2)  # let every sh exec sleep inside its cgroup
            exporter = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.scrape", "--serve-component", str(port),
                 *(str(p.pid) for p in sleepers)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if exporter is None:
            raise ValueError(f"unknown mode {mode!r}")
        wanted = {"/" + cgroup.relative for cgroup in cgroups}  # the ids the exporter gives them

        def all_exported():
            try:
                return wanted <= ids_in(scrape(port, timeout=5))
            except OSError:
                return False

        wait_for(all_exported, 60, interval=0.2, what=f"all {count} cgroups in a scrape")
        for _ in range(3):  # warm-up: imports, caches, first-time allocations
            scrape(port)
        result = measure(port, exporter.pid, scrapes)
        if mode == "daemon":
            result["fuse"] = fuse_read_latency(mountpoint, port)
    finally:
        if exporter is not None:
            exporter.terminate()
            try:
                exporter.wait(timeout=20)
            except subprocess.TimeoutExpired:
                exporter.kill()
                exporter.wait()
        for process in sleepers:
            process.kill()
            process.wait()
        for cgroup in cgroups:
            cgroup.remove()
        log.close()
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", mountpoint], check=False)
        if not os.path.ismount(mountpoint):  # never delete through a mount
            shutil.rmtree(workdir, ignore_errors=True)

    ok = result["wall_median_s"] <= BUDGET_WALL_S and result["cpu_median_s"] <= BUDGET_CPU_S
    print(f"scrape of {count} running cgroups ({mode}, {scrapes} scrapes, {hierarchy.mode} cgroups, "
          f"{result['series']} series, {result['bytes'] / 1024:.0f} KiB; {os.cpu_count()} cpus, "
          f"load average {load_average()}):")
    print(f"  wall   median {result['wall_median_s'] * 1000:6.1f} ms   p95 {result['wall_p95_s'] * 1000:6.1f} ms   "
          f"max {result['wall_max_s'] * 1000:6.1f} ms   (budget {BUDGET_WALL_S * 1000:.0f} ms)")
    print(f"  CPU    median {result['cpu_median_s'] * 1000:6.1f} ms   min {result['cpu_min_s'] * 1000:6.1f} ms"
          f"   per scrape in the exporting process (budget {BUDGET_CPU_S * 1000:.0f} ms)")
    if "fuse" in result:
        (idle_p50, idle_p99), (busy_p50, busy_p99) = result["fuse"]["idle"], result["fuse"]["scraping"]
        print(f"  FUSE   open+read of proc/meminfo: p50 {idle_p50 * 1000:.2f} ms, p99 {idle_p99 * 1000:.2f} ms idle; "
              f"p50 {busy_p50 * 1000:.2f} ms, p99 {busy_p99 * 1000:.2f} ms during back-to-back scrapes")
    print("  within budget" if ok else "  OVER BUDGET")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scrape", description=__doc__.splitlines()[0])
    parser.add_argument("--cgroups", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--mode", choices=("daemon", "component"), default="daemon")
    parser.add_argument("--serve-component", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("pids", nargs="*", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_component is not None:
        serve_component(args.serve_component, args.pids)
        return 0
    return run(args.cgroups, args.scrapes, args.mode)


if __name__ == "__main__":
    sys.exit(main())
