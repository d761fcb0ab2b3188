"""Soak: a real daemon under constant read load while cgroups (and containers) come and go.

    python -m benchmarks.soak --short              # 60 s, the mode `make test` runs
    python -m benchmarks.soak --long               # 10 min, then the 1000-cgroup scale phase
    python -m benchmarks.soak --long --docker-host unix:///path/docker.sock

What runs (root, real FUSE, real cgroups, everything under unique names):

- 16 reader processes, two in each of 8 cgroups with distinct memory limits and
  cpu sets/quotas, read all eight files in a loop (open, read to EOF, close) and
  check what they read against their own cgroup (MemTotal, cpus, online).
- A churn loop creates a cgroup, starts a reader in it, checks its MemTotal,
  kills a second reader in the middle of its read (a process that really
  exits), removes the cgroup; again and again.  With --docker-host, a second loop
  does the same with containers (`docker run --rm` with the cgroupfs flags).
- A sampler records the daemon's RSS, open fds, threads and the number of
  cgroupfs mounts every second.

Reported, and compared with the thresholds (exit status 1 when one is missed):
failed reads (0: readers that were killed on purpose are not counted), the slowest
read (< 100 ms), RSS growth between minute 2 and the end (< 10 MiB; the short mode
scales the window: 12 s to 60 s), growth of fds, threads and mounts (0), and the
number of cgroups/containers created and destroyed (>= 500 in the long mode).

The scale phase (--scale N, default 1000 in the long mode) starts a fresh daemon,
measures read latency from one cgroup, then creates N cgroups each holding a
process that has read every file (so the daemon has tracked all of them), and
measures again: latency must stay within 2x, and the daemon's memory per tracked
cgroup is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from cgroupfs.cgroups.hierarchy import discover
from cgroupfs.layout import docker_volume_flags
from cgroupfs.mountinfo import read_mountinfo
from cgroupfs.table import FILES
from testbed.cgroups import TestCgroup
from testbed.daemon_process import REPO, DaemonProcess

MIB = 1 << 20
PYTHON = sys.executable

# Thresholds (issue 5).
MAX_FAILED_READS = 0
MAX_READ_S = 0.100
MAX_RSS_GROWTH_BYTES = 10 * MIB
LONG_CHURN_MIN = 500
SCALE_LATENCY_RATIO = 2.0


@dataclass(frozen=True)
class Mode:
    name: str
    duration_s: float
    window_start_s: float     # RSS/fd/thread/mount growth is measured from here to the end
    churn_min: int
    scale_cgroups: int


MODES = {
    "short": Mode("short", 60.0, 12.0, 50, 0),
    "long": Mode("long", 600.0, 120.0, LONG_CHURN_MIN, 1000),
}


# --- the reader process --------------------------------------------------------------

READER_FILES = sorted(FILES)


def check_content(path: str, data: bytes, expect: dict) -> str | None:
    """Why `data` is wrong for a reader whose cgroup is described by `expect` (None: fine)."""
    text = data.decode("ascii", "replace")
    if path == "proc/meminfo":
        first = text.split("\n", 1)[0].split()
        if first[:1] != ["MemTotal:"] or int(first[1]) != expect["memtotal_kb"]:
            return f"MemTotal line {first} != {expect['memtotal_kb']} kB"
    elif path == "sys/devices/system/cpu/online":
        if text.strip() != expect["online"]:
            return f"online {text.strip()!r} != {expect['online']!r}"
    elif path == "proc/cpuinfo":
        count = sum(1 for line in text.splitlines() if line.startswith("processor"))
        if count != expect["cpus"]:
            return f"{count} processors != {expect['cpus']}"
    elif path == "proc/stat":
        count = sum(1 for line in text.splitlines() if line.startswith("cpu") and line[3:4].isdigit())
        if count != expect["cpus"] or not text.startswith("cpu "):
            return f"{count} cpuN lines != {expect['cpus']}"
    elif path == "proc/loadavg":
        fields = text.split()
        if len(fields) != 5 or "/" not in fields[3]:
            return f"loadavg {text.strip()!r}"
    elif path == "proc/uptime":
        fields = text.split()
        if len(fields) != 2 or float(fields[0]) < 0:
            return f"uptime {text.strip()!r}"
    elif path == "proc/swaps":
        if not text.startswith("Filename"):
            return f"swaps {text[:40]!r}"
    return None


def read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def reader_main(mountpoint: str, expect_json: str, stop_file: str, pause_s: str = "0") -> None:
    """Read every file in a loop until `stop_file` exists; print a JSON summary.

    With `pause_s`, sleep that long between reads (the probe)."""
    expect = json.loads(expect_json)
    pause = float(pause_s)
    buckets = [0] * 12  # < 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250 ms, more
    bounds = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
    reads = failures = 0
    slowest = 0.0
    slowest_file = ""
    errors: list[str] = []
    iteration = 0
    while True:
        if iteration % 8 == 0 and os.path.exists(stop_file):
            break
        relative = READER_FILES[iteration % len(READER_FILES)]
        iteration += 1
        started = time.perf_counter()
        try:
            data = read_file(os.path.join(mountpoint, relative))
            elapsed = time.perf_counter() - started
            problem = check_content(relative, data, expect)
        except (OSError, ValueError, IndexError) as exc:
            elapsed = time.perf_counter() - started
            problem = f"{type(exc).__name__}: {exc}"
        reads += 1
        if elapsed > slowest:
            slowest, slowest_file = elapsed, relative
        for index, bound in enumerate(bounds):
            if elapsed <= bound:
                buckets[index] += 1
                break
        else:
            buckets[-1] += 1
        if problem is not None:
            failures += 1
            if len(errors) < 10:
                errors.append(f"{relative}: {problem}")
        if pause:
            time.sleep(pause)
    print(json.dumps({"reads": reads, "failures": failures, "slowest_s": slowest, "slowest_file": slowest_file,
                      "buckets": buckets, "errors": errors}))


READER_CODE = "import sys; from benchmarks.soak import reader_main; reader_main(*sys.argv[1:5])"

# The probe: what a monitoring agent on the host experiences while the soak runs.  One
# read every 10 ms, at a niceness that keeps it from waiting for a cpu behind the 16
# readers (on a 2-cpu host they keep both cpus busy), so its latency is the daemon's:
# the requests queued ahead of it, the daemon's work, the daemon's own wait for a cpu.
PROBE_PAUSE_S = 0.01
PROBE_NICE = -10


# --- the daemon's resources ------------------------------------------------------------

def daemon_resources(pid: int, base: str) -> dict[str, int]:
    """The daemon's RSS, fds, threads and CPU time; the cgroupfs mounts under `base` (ours)."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    prefix = os.path.realpath(base).rstrip("/") + "/"
    entries = read_mountinfo()
    mounts = len(entries)
    ours = sum(e.fstype == "fuse.cgroupfs" and (e.mount_point + "/").startswith(prefix) for e in entries)
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:  # the main thread: the FUSE loop
        on_cpu_ns, runqueue_ns, _ = (int(v) for v in f.read().split())
    return {
        "loop_on_cpu_ns": on_cpu_ns,
        "loop_waiting_for_cpu_ns": runqueue_ns,
        "rss": int(status["VmRSS"].split()[0]) * 1024,
        **open_files(pid),
        "threads": int(status["Threads"]),
        "cpu_ticks": int(fields[11]) + int(fields[12]),  # utime + stime
        "cgroupfs_mounts": ours,
        "mounts": mounts,
    }


def open_files(pid: int) -> dict[str, int]:
    """The daemon's descriptors: `fds`, every one but the cgroup control files it holds
    open on purpose (cgroupfs.cgroups.files.HeldFiles: a bounded cache of recently read
    limit files, which follows the cgroups being read), and `held_cgroup_files`."""
    held = other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("/sys/fs/cgroup/"):
            held += 1
        else:
            other += 1
    return {"fds": other, "held_cgroup_files": held}


class Sampler(threading.Thread):
    def __init__(self, pid: int, base: str, interval_s: float = 1.0):
        super().__init__(name="sampler", daemon=True)
        self.pid, self.base, self.interval_s = pid, base, interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.started = time.monotonic()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic() - self.started, daemon_resources(self.pid, self.base)))
            except (OSError, KeyError, ValueError):
                pass
            self.stop_event.wait(self.interval_s)

    def around(self, start: float, end: float) -> list[dict[str, int]]:
        return [s for t, s in self.samples if start <= t <= end]


# --- churn -----------------------------------------------------------------------------

@dataclass
class ChurnStats:
    cgroups: int = 0
    containers: int = 0
    failures: int = 0
    killed_readers: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures += 1
            if len(self.errors) < 10:
                self.errors.append(message)


def memtotal_kb(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return None


def churn_cgroups(run: Run, stop: threading.Event) -> None:
    rng = random.Random(os.getpid())
    meminfo = os.path.join(run.mountpoint, "proc/meminfo")
    stat = os.path.join(run.mountpoint, "proc/stat")
    while not stop.is_set():
        cgroup = run.make_cgroup("c")
        try:
            limit = rng.randrange(16, 512, 4) * MIB
            cgroup.set_memory_limit(limit)
            # A reader that is killed in the middle of its read: it really exits.
            victim = cgroup.popen(["cat", stat, stat, stat], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.random() * 0.002)
            victim.kill()
            victim.wait()
            with run.churn.lock:
                run.churn.killed_readers += 1
            result = cgroup.run(["cat", meminfo], timeout=10)
            got = memtotal_kb(result.stdout.decode(errors="replace")) if result.returncode == 0 else None
            if got != limit // 1024:
                run.churn.fail(f"churn cgroup {cgroup.relative}: MemTotal {got} != {limit // 1024} "
                               f"(exit {result.returncode}: {result.stderr.decode(errors='replace').strip()})")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the soak
            run.churn.fail(f"churn cgroup: {type(exc).__name__}: {exc}")
        finally:
            cgroup.remove()
            run.forget_cgroup(cgroup)
        with run.churn.lock:
            run.churn.cgroups += 1


def churn_containers(run: Run, stop: threading.Event) -> None:
    rng = random.Random(os.getpid() + 1)
    flags = docker_volume_flags(run.mountpoint)
    while not stop.is_set():
        name = f"cgroupfs-soak-{os.getpid()}-{next(run.counter)}"
        limit = rng.randrange(16, 512, 4) * MIB
        try:
            result = run.docker("run", "--rm", "--name", name, "--network", "none", "-m", str(limit), *flags,
                                run.image, "head", "-n", "1", "/proc/meminfo")
            got = memtotal_kb(result.stdout) if result.returncode == 0 else None
            if got != limit // 1024:
                run.churn.fail(f"container {name}: MemTotal {got} != {limit // 1024} ({result.stderr.strip()})")
        except Exception as exc:  # noqa: BLE001
            run.churn.fail(f"container {name}: {type(exc).__name__}: {exc}")
            run.docker("rm", "-f", name)
        with run.churn.lock:
            run.churn.containers += 1


# --- the run ---------------------------------------------------------------------------

class Run:
    """Everything the soak created, so that `cleanup()` can remove all of it."""

    def __init__(self, docker_host: str | None):
        self.base = tempfile.mkdtemp(prefix="cgroupfs-soak-")
        self.mountpoint = os.path.join(self.base, "mnt")
        self.stop_file = os.path.join(self.base, "stop")
        self.hierarchy = discover()
        self.counter = iter(range(1, 1 << 62))
        self.cgroups: list[TestCgroup] = []
        self.cgroups_lock = threading.Lock()
        self.processes: list[subprocess.Popen] = []
        self.daemons: list[DaemonProcess] = []
        self.churn = ChurnStats()
        self.stop = threading.Event()  # ends the churn threads
        self.workers: list[threading.Thread] = []
        self.docker_host = docker_host
        self.image = "cgroupfs-soak-busybox:latest"

    def make_cgroup(self, kind: str) -> TestCgroup:
        cgroup = TestCgroup(f"cgroupfs-soak-{os.getpid()}-{kind}{next(self.counter)}", self.hierarchy)
        with self.cgroups_lock:
            self.cgroups.append(cgroup)
        return cgroup

    def forget_cgroup(self, cgroup: TestCgroup) -> None:
        with self.cgroups_lock:
            self.cgroups.remove(cgroup)

    def start_daemon(self, name: str, *extra: str, nice: int = 0, cpu_weight: int = 0) -> DaemonProcess:
        env = {"CGROUPFS_STATE_FILE": os.path.join(self.base, name + ".state.json"),
               "CGROUPFS_CONFIG": os.path.join(self.base, "no-such-config")}
        daemon = DaemonProcess(os.path.join(self.base, name), *extra, log_path=os.path.join(self.base, name + ".log"),
                               env=env)
        self.daemons.append(daemon)
        daemon.start()
        if nice:  # every thread (Linux niceness is per thread), as systemd's Nice= would
            for tid in os.listdir(f"/proc/{daemon.pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        if cpu_weight:  # a cpu cgroup of its own with this weight, as systemd's CPUWeight= makes
            cgroup = self.make_cgroup("d")
            if cgroup.is_v2("cpu"):
                name, value = "cpu.weight", cpu_weight
            else:  # systemd's mapping to v1 shares: weight 100 = 1024 shares
                name, value = "cpu.shares", cpu_weight * 1024 // 100
            with open(os.path.join(cgroup.dir("cpu"), name), "w") as f:
                f.write(str(value))
            with open(os.path.join(cgroup.dir("cpu"), "cgroup.procs"), "w") as f:
                f.write(str(daemon.pid))
        return daemon

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.docker_host is None:
            raise RuntimeError("this run has no Docker engine")
        env = dict(os.environ, DOCKER_HOST=self.docker_host)
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=input is None,
                              input=input, timeout=timeout)

    def build_image(self) -> None:
        from testbed.docker_engine import busybox_rootfs_tar

        result = self.docker("import", "--change", "ENV PATH=/bin", "-", self.image, input=busybox_rootfs_tar())
        if result.returncode != 0:
            raise RuntimeError(f"docker import failed: {result.stderr.decode(errors='replace').strip()}")

    def cleanup(self) -> None:
        # The churn threads first: one still running would create a cgroup after the sweep.
        self.stop.set()
        for worker in self.workers:
            if worker.is_alive():
                worker.join(timeout=120)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.docker_host:
            listed = self.docker("ps", "-aq", "--filter", f"name=cgroupfs-soak-{os.getpid()}-")
            ids = listed.stdout.split() if listed.returncode == 0 else []
            if ids:
                self.docker("rm", "-f", *ids)
        for daemon in self.daemons:  # before the cgroups: a daemon may sit in one (--cpu-weight)
            daemon.stop()
        for cgroup in reversed(self.cgroups):
            cgroup.remove()
        shutil.rmtree(self.base, ignore_errors=True)


def expectations(cpu_ids: list[int], memory_limit: int) -> dict:
    """What a reader in the cgroup should find: the kernel's ids of its visible cpus."""
    first, last = min(cpu_ids), max(cpu_ids)
    contiguous = cpu_ids == list(range(first, last + 1))
    online = str(first) if first == last else f"{first}-{last}" if contiguous else ",".join(map(str, cpu_ids))
    return {"memtotal_kb": memory_limit // 1024, "cpus": len(cpu_ids), "online": online}


def reader_cgroups(run: Run, count: int) -> list[tuple[TestCgroup, dict]]:
    """`count` cgroups with distinct memory limits and cpu sets/quotas, with what they should read."""
    online = sorted(os.sched_getaffinity(0))
    made = []
    for index in range(count):
        cgroup = run.make_cgroup("r")
        limit = (64 + 16 * index) * MIB
        cgroup.set_memory_limit(limit)
        cpu_ids = online
        if index % 4 == 1:
            cgroup.set_cpus(str(online[index % len(online)]))
            cpu_ids = [online[index % len(online)]]
        elif index % 4 == 2 and len(online) > 1:
            cgroup.set_cpu_quota(50_000)  # half a cpu: one cpu shown, the lowest of the cpuset
            cpu_ids = online[:1]
        made.append((cgroup, expectations(cpu_ids, limit)))
    return made


def start_readers(run: Run, cgroups: list[tuple[TestCgroup, dict]], per_cgroup: int, mountpoint: str
                  ) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    readers = []
    for cgroup, expect in cgroups:
        for _ in range(per_cgroup):
            process = cgroup.popen([PYTHON, "-c", READER_CODE, mountpoint, json.dumps(expect), run.stop_file],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
            run.processes.append(process)
            readers.append(process)
    return readers


def start_probe(run: Run, mountpoint: str) -> subprocess.Popen:
    cgroup = run.make_cgroup("p")
    cgroup.set_memory_limit(200 * MIB)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    expect = expectations(sorted(os.sched_getaffinity(0)), 200 * MIB)
    process = cgroup.popen([PYTHON, "-c", READER_CODE, mountpoint, json.dumps(expect), run.stop_file,
                            str(PROBE_PAUSE_S)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    run.processes.append(process)
    os.setpriority(os.PRIO_PROCESS, process.pid, PROBE_NICE)
    return process


def collect_readers(readers: list[subprocess.Popen], timeout: float = 60) -> list[dict]:
    summaries = []
    for process in readers:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            summaries.append({"reads": 0, "failures": 1, "slowest_s": float("inf"), "slowest_file": "",
                              "buckets": [], "errors": [f"reader {process.pid} did not stop: blocked?"]})
            continue
        try:
            summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            summaries.append({"reads": 0, "failures": 1, "slowest_s": 0.0, "slowest_file": "", "buckets": [],
                              "errors": [f"reader {process.pid} exited {process.returncode}: "
                                         f"{err.decode(errors='replace')[-500:]}"]})
    return summaries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_loop(port: int, stop: threading.Event, failures: list[str], interval_s: float = 5.0) -> None:
    while not stop.wait(interval_s):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                response.read()
        except OSError as exc:
            failures.append(f"scrape: {exc}")


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def service_time_buckets(exposition: str) -> dict[str, int]:
    """The daemon's own time per open (resolve + render), summed over files: le -> count."""
    buckets: dict[str, int] = {}
    for line in exposition.splitlines():
        if line.startswith("cgroupfs_fuse_request_duration_seconds_bucket{"):
            labels, _, value = line.rpartition(" ")
            le = re.search(r'[{,]le="([^"]*)"', labels)
            if le is not None:
                buckets[le.group(1)] = buckets.get(le.group(1), 0) + int(float(value))
    return dict(sorted(buckets.items(), key=lambda item: float(item[0])))


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def growth(sampler: Sampler, key: str, start: float, end: float, span: float, reduce) -> tuple[int, int]:
    first = [s[key] for s in sampler.around(start, start + span)]
    last = [s[key] for s in sampler.around(end - span, end)]
    if not first or not last:
        raise RuntimeError(f"no samples of {key} around {start:.0f}s or {end:.0f}s")
    return reduce(first), reduce(last)


def soak(run: Run, mode: Mode, readers_per_cgroup: int, reader_cgroup_count: int, nice: int, cpu_weight: int
         ) -> dict:
    port = free_port()
    load_start = load_average()
    extra = ["--metrics-address", f"127.0.0.1:{port}"]
    if run.docker_host:
        extra += ["--docker-host", run.docker_host]
        run.build_image()
    daemon = run.start_daemon("mnt", *extra, nice=nice, cpu_weight=cpu_weight)
    process = daemon.process
    if process is None:
        raise RuntimeError("the daemon was not started")
    sampler = Sampler(daemon.pid, run.base)
    sampler.start()
    cgroups = reader_cgroups(run, reader_cgroup_count)
    readers = start_readers(run, cgroups, readers_per_cgroup, daemon.mountpoint)
    probe = start_probe(run, daemon.mountpoint)
    stop = run.stop
    scrape_failures: list[str] = []
    workers = run.workers
    workers += [threading.Thread(target=churn_cgroups, args=(run, stop), daemon=True),
                threading.Thread(target=scrape_loop, args=(port, stop, scrape_failures), daemon=True)]
    if run.docker_host:
        workers.append(threading.Thread(target=churn_containers, args=(run, stop), daemon=True))
    for worker in workers:
        worker.start()
    started = sampler.started
    deadline = started + mode.duration_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(1)
        elapsed = time.monotonic() - started
        if int(elapsed) % 60 == 0:
            print(f"  {elapsed:4.0f}s  churn {run.churn.cgroups} cgroups, {run.churn.containers} containers, "
                  f"{run.churn.failures} failures", flush=True)
    end = time.monotonic() - started
    # Resources are measured under load, before anything stops.
    span = max(3.0, min(10.0, mode.duration_s / 20))
    rss = growth(sampler, "rss", mode.window_start_s, end, span, statistics.median)
    fds = growth(sampler, "fds", mode.window_start_s, end, span, min)
    held = growth(sampler, "held_cgroup_files", mode.window_start_s, end, span, max)
    threads = growth(sampler, "threads", mode.window_start_s, end, span, min)
    mounts = growth(sampler, "cgroupfs_mounts", mode.window_start_s, end, span, min)
    host_mounts = growth(sampler, "mounts", mode.window_start_s, end, span, min)
    cpu_ticks = growth(sampler, "cpu_ticks", 0, end, 2.0, min)
    on_cpu = growth(sampler, "loop_on_cpu_ns", 0, end, 2.0, min)
    waiting = growth(sampler, "loop_waiting_for_cpu_ns", 0, end, 2.0, min)
    load_end = load_average()
    try:
        service = service_time_buckets(scrape_text(port))
    except OSError as exc:
        service = {}
        scrape_failures.append(f"final scrape: {exc}")
    stop.set()
    with open(run.stop_file, "w"):
        pass
    summaries = collect_readers(readers)
    probe_summary = collect_readers([probe])[0]
    for worker in workers:
        worker.join(timeout=120)
    sampler.stop_event.set()
    daemon_alive = process.poll() is None
    reads = sum(s["reads"] for s in summaries)
    failed = sum(s["failures"] for s in summaries) + probe_summary["failures"] + run.churn.failures
    slowest = max(summaries, key=lambda s: s["slowest_s"])
    buckets = [sum(column) for column in zip(*(s["buckets"] for s in summaries if s["buckets"]))]
    return {
        "mode": mode.name,
        "duration_s": round(end, 1),
        "readers": len(readers),
        "reader_cgroups": len(cgroups),
        "reads": reads,
        "reads_per_s": round(reads / end),
        "failed_reads": failed,
        "failure_examples": ([e for s in summaries for e in s["errors"]][:10] + probe_summary["errors"][:10]
                             + run.churn.errors[:10]),
        "slowest_read_ms": round(probe_summary["slowest_s"] * 1000, 2),
        "slowest_file": probe_summary["slowest_file"],
        "probe_reads": probe_summary["reads"],
        "probe_latency_buckets_ms": dict(zip(
            ["0.1", "0.25", "0.5", "1", "2", "5", "10", "25", "50", "100", "250", "+Inf"], probe_summary["buckets"])),
        "readers_slowest_read_ms": round(slowest["slowest_s"] * 1000, 2),
        "readers_slowest_file": slowest["slowest_file"],
        "latency_buckets_ms": dict(zip(
            ["0.1", "0.25", "0.5", "1", "2", "5", "10", "25", "50", "100", "250", "+Inf"], buckets)),
        "cgroups_churned": run.churn.cgroups,
        "containers_churned": run.churn.containers,
        "killed_readers": run.churn.killed_readers,
        "scrape_failures": len(scrape_failures),
        "window_s": [mode.window_start_s, round(end, 1)],
        "rss_mib": [round(rss[0] / MIB, 2), round(rss[1] / MIB, 2)],
        "rss_growth_mib": round((rss[1] - rss[0]) / MIB, 2),
        "fds": list(fds), "held_cgroup_files": list(held),
        "threads": list(threads), "cgroupfs_mounts": list(mounts), "host_mounts": list(host_mounts),
        "daemon_alive": daemon_alive,
        "daemon_service_time_buckets_s": service,
        "daemon_cpu_ms_per_1000_reads": round((cpu_ticks[1] - cpu_ticks[0]) * 1000 / os.sysconf("SC_CLK_TCK")
                                              / max(1, reads) * 1000, 1),
        "host_load_average": [load_start, load_end],
        "daemon_nice": nice,
        "daemon_cpu_weight": cpu_weight,
        # The FUSE loop's thread: seconds on a cpu, and runnable but waiting for one.
        "loop_on_cpu_s": round((on_cpu[1] - on_cpu[0]) / 1e9, 1),
        "loop_waiting_for_cpu_s": round((waiting[1] - waiting[0]) / 1e9, 1),
    }


def latency_run(run: Run, cgroup: TestCgroup, expect: dict, mountpoint: str, reads: int) -> dict:
    """One reader in `cgroup` does `reads` reads round-robin over the files; latency in µs."""
    code = ("import json, os, sys, time; from benchmarks.soak import READER_FILES, read_file, check_content\n"
            "mnt, expect, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]); samples = []; bad = 0\n"
            "for i in range(n):\n"
            "    rel = READER_FILES[i % len(READER_FILES)]; t = time.perf_counter()\n"
            "    data = read_file(os.path.join(mnt, rel)); samples.append(time.perf_counter() - t)\n"
            "    bad += check_content(rel, data, expect) is not None\n"
            "samples.sort(); print(json.dumps({'p50': samples[n // 2] * 1e6, 'p99': samples[int(n * 0.99)] * 1e6,"
            " 'mean': sum(samples) / n * 1e6, 'max': samples[-1] * 1e6, 'bad': bad}))\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = cgroup.run([PYTHON, "-c", code, mountpoint, json.dumps(expect), str(reads)], timeout=300, cwd=REPO,
                        env=env)
    if result.returncode != 0:
        raise RuntimeError(f"latency reader failed: {result.stderr.decode(errors='replace')[-1000:]}")
    return {k: round(v, 1) for k, v in json.loads(result.stdout.decode()).items()}


def scale(run: Run, count: int, nice: int, cpu_weight: int, reads: int = 4000) -> dict:
    """Latency from one cgroup with 1 and with `count` tracked cgroups; daemon memory per cgroup."""
    daemon = run.start_daemon("scale", "--no-metrics", nice=nice, cpu_weight=cpu_weight)
    mnt = daemon.mountpoint
    probe = run.make_cgroup("s")
    probe.set_memory_limit(96 * MIB)
    expect = expectations(sorted(os.sched_getaffinity(0)), 96 * MIB)
    latency_run(run, probe, expect, mnt, 500)  # warm up
    single = latency_run(run, probe, expect, mnt, reads)
    rss_before = daemon_resources(daemon.pid, run.base)["rss"]
    files = " ".join(os.path.join(mnt, f) for f in READER_FILES)
    # Each cgroup holds one process that reads every file once, then sleeps (a container's worth).
    script = f"for f in {files}; do cat $f >/dev/null || exit 1; done; exec sleep 3600"
    created_at = time.monotonic()
    sleepers = []
    crowd = []
    for index in range(count):
        cgroup = run.make_cgroup("m")
        crowd.append(cgroup)
        cgroup.set_memory_limit((32 + index % 64) * MIB)
        process = cgroup.popen(["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        run.processes.append(process)
        sleepers.append(process)
    failed = 0
    for process in sleepers:  # every process has read every file once it is `sleep`
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                failed += 1
                break
            try:
                with open(f"/proc/{process.pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        break
            except OSError:
                pass
            time.sleep(0.01)
    setup_s = time.monotonic() - created_at
    time.sleep(2)
    rss_after = daemon_resources(daemon.pid, run.base)["rss"]
    many = [latency_run(run, probe, expect, mnt, reads) for _ in range(2)]
    for cgroup in crowd:  # and once more with the crowd gone: the host drifts, so compare to both
        cgroup.remove()
        run.forget_cgroup(cgroup)
    after = latency_run(run, probe, expect, mnt, reads)
    single_p50 = (single["p50"] + after["p50"]) / 2
    many_p50 = (many[0]["p50"] + many[1]["p50"]) / 2
    return {
        "cgroups": count,
        "setup_s": round(setup_s, 1),
        "setup_failures": failed,
        "single_us": single,
        "many_us": many[0],
        "many_again_us": many[1],
        "single_after_us": after,
        "p50_ratio": round(many_p50 / single_p50, 2),
        "rss_before_mib": round(rss_before / MIB, 2),
        "rss_after_mib": round(rss_after / MIB, 2),
        "bytes_per_tracked_cgroup": round((rss_after - rss_before) / count),
    }


def verdicts(report: dict, mode: Mode) -> list[str]:
    """The thresholds missed (empty: all met)."""
    missed = []
    s = report.get("soak")
    if s is not None:
        if not s["daemon_alive"]:
            missed.append("the daemon died during the soak")
        if s["failed_reads"] > MAX_FAILED_READS:
            missed.append(f"{s['failed_reads']} failed reads")
        if s["slowest_read_ms"] >= MAX_READ_S * 1000:
            missed.append(f"slowest read {s['slowest_read_ms']} ms >= {MAX_READ_S * 1000:.0f} ms")
        if s["rss_growth_mib"] * MIB >= MAX_RSS_GROWTH_BYTES:
            missed.append(f"RSS grew {s['rss_growth_mib']} MiB")
        for key in ("fds", "threads", "cgroupfs_mounts"):
            if s[key][1] > s[key][0]:
                missed.append(f"{key} grew from {s[key][0]} to {s[key][1]}")
        if s["cgroups_churned"] + s["containers_churned"] < mode.churn_min:
            missed.append(f"only {s['cgroups_churned'] + s['containers_churned']} cgroups/containers churned "
                          f"(< {mode.churn_min})")
        if s["scrape_failures"]:
            missed.append(f"{s['scrape_failures']} metrics scrapes failed")
    c = report.get("scale")
    if c is not None:
        if c["setup_failures"]:
            missed.append(f"{c['setup_failures']} of the {c['cgroups']} cgroup readers failed")
        if c["p50_ratio"] > SCALE_LATENCY_RATIO:
            missed.append(f"with {c['cgroups']} cgroups the median read is {c['p50_ratio']}x slower")
        if any(c[k]["bad"] for k in ("single_us", "many_us", "many_again_us", "single_after_us")):
            missed.append("the scale phase read wrong content")
    return missed


def print_report(report: dict, missed: list[str]) -> None:
    s = report.get("soak")
    if s is not None:
        print(f"soak ({s['mode']}, {s['duration_s']} s, {s['readers']} readers in {s['reader_cgroups']} cgroups):")
        print(f"  reads: {s['reads']} ({s['reads_per_s']}/s), failed: {s['failed_reads']}")
        for example in s["failure_examples"]:
            print(f"    {example}")
        print(f"  slowest read of the probe (one read every {PROBE_PAUSE_S * 1000:.0f} ms at nice {PROBE_NICE}, "
              f"{s['probe_reads']} reads): {s['slowest_read_ms']} ms ({s['slowest_file']}); "
              f"buckets (ms, upper bounds): {s['probe_latency_buckets_ms']}")
        print(f"  slowest read of the 16 readers (their own wait for a cpu included): "
              f"{s['readers_slowest_read_ms']} ms ({s['readers_slowest_file']}); buckets: {s['latency_buckets_ms']}")
        print(f"  daemon niceness {s['daemon_nice']}, cpu weight {s['daemon_cpu_weight'] or 'unchanged'}; "
              f"its FUSE loop ran {s['loop_on_cpu_s']} s on a cpu and waited {s['loop_waiting_for_cpu_s']} s "
              "for one (runnable, another task running)")
        print(f"  the daemon's own time per open (cumulative, s): {s['daemon_service_time_buckets_s']}")
        print(f"  daemon CPU: {s['daemon_cpu_ms_per_1000_reads']} ms per 1000 reads; host load average "
              f"{s['host_load_average'][0]} at the start, {s['host_load_average'][1]} at the end")
        print(f"  churned: {s['cgroups_churned']} cgroups, {s['containers_churned']} containers, "
              f"{s['killed_readers']} readers killed mid-read; metrics scrape failures: {s['scrape_failures']}")
        print(f"  daemon between {s['window_s'][0]:.0f} s and {s['window_s'][1]:.0f} s: RSS {s['rss_mib'][0]} -> "
              f"{s['rss_mib'][1]} MiB ({s['rss_growth_mib']:+} MiB), fds {s['fds'][0]} -> {s['fds'][1]} "
              f"(besides {s['held_cgroup_files'][1]} cgroup files held open at most), "
              f"threads {s['threads'][0]} -> {s['threads'][1]}, cgroupfs mounts {s['cgroupfs_mounts'][0]} -> "
              f"{s['cgroupfs_mounts'][1]} (host mounts {s['host_mounts'][0]} -> {s['host_mounts'][1]})")
    c = report.get("scale")
    if c is not None:
        print(f"scale ({c['cgroups']} cgroups, each with a process that read every file; set up in {c['setup_s']} s):")
        for label, key in (("one cgroup", "single_us"), (f"{c['cgroups']} cgroups", "many_us"),
                           (f"{c['cgroups']} cgroups", "many_again_us"), ("one cgroup again", "single_after_us")):
            m = c[key]
            print(f"  {label:17} p50 {m['p50']} µs, mean {m['mean']} µs, p99 {m['p99']} µs, max {m['max']} µs")
        print(f"  median read with {c['cgroups']} cgroups / with one: x{c['p50_ratio']}")
        print(f"  daemon RSS {c['rss_before_mib']} -> {c['rss_after_mib']} MiB: "
              f"{c['bytes_per_tracked_cgroup']} bytes per tracked cgroup")
    print("PASS" if not missed else "FAIL: " + "; ".join(missed))


def unit_settings(path: str = os.path.join(REPO, "systemd", "cgroupfs.service")) -> dict[str, str]:
    """Key=value lines of the unit's [Service] section: the soak runs the daemon as the unit does."""
    settings: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith(("#", ";")):
                    settings[key.strip()] = value.strip()
    except OSError:
        pass
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--short", action="store_const", const="short", dest="mode", help="60 s")
    which.add_argument("--long", action="store_const", const="long", dest="mode", help="10 min + scale phase")
    docker = parser.add_mutually_exclusive_group()
    docker.add_argument("--docker-host", default=None, help="also churn containers on this engine (unix:// only)")
    docker.add_argument("--private-docker", action="store_true",
                        help="start a private dockerd (testbed/docker_engine.py) and churn containers on it")
    parser.add_argument("--duration", type=float, default=None, help="override the mode's duration (s)")
    parser.add_argument("--scale", type=int, default=None, help="cgroups in the scale phase (0: skip)")
    parser.add_argument("--no-soak", action="store_true", help="run only the scale phase")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    unit = unit_settings()
    parser.add_argument("--nice", type=int, default=int(unit.get("Nice", 0)),
                        help="the daemon's niceness (default: Nice= of systemd/cgroupfs.service)")
    parser.add_argument("--cpu-weight", type=int, default=int(unit.get("CPUWeight", 0)),
                        help="put the daemon in a cpu cgroup of this weight, 1-10000 (default: CPUWeight= of "
                             "systemd/cgroupfs.service; 0: leave it where it is)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (FUSE mounts, cgroups)", file=sys.stderr)
        return 2
    if args.docker_host and not args.docker_host.startswith("unix://"):
        print("soak: --docker-host must be a unix:// socket (only local engines)", file=sys.stderr)
        return 2
    base = MODES[args.mode]
    window = base.window_start_s
    duration = base.duration_s
    if args.duration is not None:
        window, duration = args.duration * base.window_start_s / base.duration_s, args.duration
    mode = Mode(base.name, duration, window,
                base.churn_min if args.duration is None else int(base.churn_min * duration / base.duration_s),
                base.scale_cgroups if args.scale is None else args.scale)
    engine = None
    if args.private_docker:
        from testbed.docker_engine import DockerEngine, EngineUnavailable

        engine = DockerEngine()
        try:
            engine.start()
        except EngineUnavailable as exc:
            engine.cleanup()
            print(f"soak: cannot start a private Docker engine: {exc}", file=sys.stderr)
            return 2
        args.docker_host = engine.host
    run = Run(args.docker_host)
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "kernel": os.uname().release,
                    "cpus": os.cpu_count(), "cgroup_mode": run.hierarchy.mode}
    interrupted = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not args.no_soak:
            print(f"soak: {mode.name} mode, {mode.duration_s:.0f} s, "
                  f"{'cgroups and containers' if args.docker_host else 'cgroups'} churned", flush=True)
            report["soak"] = soak(run, mode, readers_per_cgroup=2, reader_cgroup_count=8, nice=args.nice,
                                  cpu_weight=args.cpu_weight)
        if mode.scale_cgroups:
            print(f"scale: {mode.scale_cgroups} cgroups", flush=True)
            report["scale"] = scale(run, mode.scale_cgroups, nice=args.nice, cpu_weight=args.cpu_weight)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        run.cleanup()
        if engine is not None:
            engine.cleanup()
    if interrupted:
        print("soak: interrupted; everything it created was removed", file=sys.stderr)
        return 130
    missed = verdicts(report, mode)
    report["missed"] = missed
    print_report(report, missed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
