"""Reader processes: build them, start them inside a cgroup, collect what they measured.

Readers are separate processes (the FUSE server sees each one's pid and cgroup) that
wait for a common start time, read in a tight loop, and print a latency histogram
(see reader.c).  The harness reads the server's CPU counters at the start and the
end of the measured window, which the readers and the harness agree on through
CLOCK_MONOTONIC timestamps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from benchmarks.cgroups import Cgroup
from benchmarks.servers import CLK_TCK

HERE = os.path.dirname(os.path.abspath(__file__))
SPAWN_MARGIN_S = 0.3  # time given to spawn the readers before they all start


class ReaderError(Exception):
    pass


def build_c_reader(workdir: str) -> list[str]:
    exe = os.path.join(workdir, "reader")
    result = subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "reader.c")],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ReaderError(f"gcc failed:\n{result.stderr}")
    return [exe]


def reader_command(kind: str, workdir: str) -> list[str]:
    if kind == "c":
        return build_c_reader(workdir)
    if kind == "python":
        return [sys.executable, "-S", os.path.join(HERE, "pyreader.py")]
    raise ValueError(kind)


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)  # bucket lower bound (ns) -> count

    def add(self, lower_ns: int, count: int) -> None:
        self.counts[lower_ns] = self.counts.get(lower_ns, 0) + count

    def merge(self, other: Histogram) -> None:
        for lower, count in other.counts.items():
            self.add(lower, count)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile_us(self, fraction: float) -> float | None:
        """The bucket holding the `fraction` quantile, as its midpoint in µs."""
        total = self.total
        if not total:
            return None
        wanted = fraction * total
        seen = 0
        ordered = sorted(self.counts)
        for lower in ordered:
            seen += self.counts[lower]
            if seen >= wanted:
                width = 100 if lower < 10_000_000 else 10_000
                return (lower + width / 2) / 1000
        return ordered[-1] / 1000


@dataclass
class ReaderOutput:
    reads: int = 0
    errors: int = 0
    bytes: int = 0
    cpu_us: int = 0     # the readers' own CPU time in the measured window
    reads_all: int = 0  # warm-up included
    histogram: Histogram = field(default_factory=Histogram)


def parse_output(text: str) -> ReaderOutput:
    out = ReaderOutput()
    for line in text.splitlines():
        key, *values = line.split()
        if key == "hist":
            out.histogram.add(int(values[0]), int(values[1]))
        elif key in ("reads", "errors", "bytes", "cpu_us", "reads_all"):
            setattr(out, key, int(values[0]))
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cpus spent not idle since boot (the `cpu` line of /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass
class LoopResult:
    readers: int
    seconds: float
    output: ReaderOutput
    server_cpu_s: float | None      # during the measured window
    machine_busy_s: float           # every cpu, every process, during the measured window

    @property
    def reader_cpu_us_per_read(self) -> float | None:
        """What one read costs the reader process itself (user + system, incl. the kernel's FUSE side)."""
        return self.output.cpu_us / self.output.reads if self.output.reads else None

    @property
    def other_load_cores(self) -> float:
        """CPU used by neither the server nor the readers (other work on the machine), in cores."""
        ours = (self.server_cpu_s or 0.0) + self.output.cpu_us / 1e6
        return max(0.0, (self.machine_busy_s - ours) / self.seconds)


def run_loop(command: list[str], path: str, readers: int, duration_s: float, warmup_s: float,
             cgroup: Cgroup, server_cpu=None, started: list | None = None) -> LoopResult:
    """`readers` processes in `cgroup` reading `path` for warmup_s + duration_s.

    `server_cpu` is a callable giving the server's CPU seconds (None for native).
    `started` collects the Popen objects so the caller can kill them on failure.
    """
    started = started if started is not None else []
    t0 = time.monotonic_ns() + int(SPAWN_MARGIN_S * 1e9)
    t1 = t0 + int(warmup_s * 1e9)
    t2 = t1 + int(duration_s * 1e9)
    processes = []
    for _ in range(readers):
        process = subprocess.Popen([*command, "loop", path, str(t0), str(t1), str(t2)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cgroup.join)
        processes.append(process)
        started.append(process)
    _sleep_until(t1)
    server_before = server_cpu() if server_cpu else None
    busy_before = machine_busy_seconds()
    _sleep_until(t2)
    server_after = server_cpu() if server_cpu else None
    busy_after = machine_busy_seconds()
    merged = ReaderOutput()
    for process in processes:
        stdout, stderr = process.communicate(timeout=60 + duration_s)
        if process.returncode != 0:
            raise ReaderError(f"reader exited {process.returncode}: {stderr.decode(errors='replace')[:500]}")
        one = parse_output(stdout.decode())
        merged.reads += one.reads
        merged.errors += one.errors
        merged.bytes += one.bytes
        merged.reads_all += one.reads_all
        merged.cpu_us += one.cpu_us
        merged.histogram.merge(one.histogram)
        started.remove(process)
    return LoopResult(
        readers=readers, seconds=(t2 - t1) / 1e9, output=merged,
        server_cpu_s=None if server_before is None else server_after - server_before,
        machine_busy_s=busy_after - busy_before,
    )


def start_rounds(command: list[str], paths: list[str], start_ns: int, rounds: int, pause_ms: int,
                 cgroup: Cgroup) -> subprocess.Popen:
    return subprocess.Popen([*command, "rounds", str(start_ns), str(rounds), str(pause_ms), *paths],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=cgroup.join)


def read_once_in(cgroup: Cgroup, path: str) -> bytes:
    """What a process in `cgroup` reads at `path` (for the sanity checks)."""
    return subprocess.run(["cat", path], capture_output=True, check=True, preexec_fn=cgroup.join).stdout


def _sleep_until(deadline_ns: int) -> None:
    while True:
        left = deadline_ns - time.monotonic_ns()
        if left <= 0:
            return
        time.sleep(left / 1e9)
