"""Noisy neighbour: does one container polling its /proc slow another one down?

    python -m benchmarks.neighbour [--seconds 10] [--noisy 64]

Container A (a cgroup) runs --noisy C readers reading its /proc/meminfo and
/proc/stat as fast as they can (half each); container B (another cgroup) reads its
own /proc/meminfo every 10 ms, recording each read's latency and how old the value
was.  Run three ways in one go: the per-reader files (A and B share one mount, one
Python loop), cgroupfs views (each reads its own view), and B alone on views.

Age of a value: B grows its memory by 256 KiB every 10 ms and notes the cgroup's
real usage (memory.usage_in_bytes) after each step; a read whose MemTotal - MemFree
equals the usage noted at time t was at least (read time - t) old.  The bound to meet
is two refresh intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import servers
from benchmarks.cgroups import BenchCgroups
from benchmarks.readers import build_c_reader

# B's loop, run inside B: grow, note the truth, read the file, every 10 ms.
B_LOOP = r"""
import json, os, re, sys, time
path, usage_file, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
blocks, samples, truth = [], [], []
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    started = time.monotonic()
    if len(blocks) < 160:
        block = bytearray(256 << 10); block[::4096] = b"x" * 64; blocks.append(block)
    else:
        blocks.clear()
    with open(usage_file) as f:
        truth.append((time.monotonic(), int(f.read()) // 1024))
    before = time.monotonic()
    fd = os.open(path, os.O_RDONLY); text = os.read(fd, 65536); os.close(fd)
    after = time.monotonic()
    total = int(re.search(rb"^MemTotal:\s+(\d+)", text, re.M).group(1))
    free = int(re.search(rb"^MemFree:\s+(\d+)", text, re.M).group(1))
    samples.append((before, after, total - free))
    time.sleep(max(0.0, 0.010 - (time.monotonic() - started)))
print(json.dumps({"samples": samples, "truth": truth}))
"""


def value_ages_ms(samples, truth, tolerance_kb: int = 64) -> list[float]:
    """For each read, how long before it the value it showed was the real usage."""
    ages = []
    for _before, after, used_kb in samples:
        matches = [t for t, kb in truth if t <= after and abs(kb - used_kb) <= tolerance_kb]
        if matches:
            ages.append((after - max(matches)) * 1000)
    return ages


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_case(name: str, paths_a: dict[str, str] | None, path_b: str, usage_file: str, args, reader: list[str],
             cgroup_a, cgroup_b, server) -> dict:
    noisy = []
    if paths_a:
        now = time.monotonic_ns()
        stop = now + int((args.seconds + 2) * 1e9)
        for index in range(args.noisy):
            path = paths_a["meminfo"] if index % 2 == 0 else paths_a["stat"]
            noisy.append(subprocess.Popen([*reader, "loop", path, str(now), str(now), str(stop)],
                                          stdout=subprocess.PIPE, preexec_fn=cgroup_a.join))
        time.sleep(0.5)
    cpu_before = server.cpu_seconds() if server is not None else 0.0
    b = subprocess.run([sys.executable, "-c", B_LOOP, path_b, usage_file, str(args.seconds)],
                       capture_output=True, check=True, preexec_fn=cgroup_b.join)
    cpu = (server.cpu_seconds() - cpu_before) if server is not None else 0.0
    a_reads = 0
    for process in noisy:
        out, _ = process.communicate(timeout=60)
        match = re.search(rb"^reads (\d+)", out, re.M)
        a_reads += int(match.group(1)) if match else 0
    result = json.loads(b.stdout)
    latencies = [(after - before) * 1000 for before, after, _ in result["samples"]]
    ages = value_ages_ms(result["samples"], result["truth"])
    return {
        "case": name, "a_reads_per_s": a_reads / (args.seconds + 1.5), "b_reads": len(latencies),
        "b_p50_ms": statistics.median(latencies), "b_p99_ms": percentile(latencies, 0.99),
        "b_max_ms": max(latencies), "b_age_p99_ms": percentile(ages, 0.99) if ages else None,
        "b_age_max_ms": max(ages) if ages else None, "b_ages_matched": len(ages),
        "server_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.neighbour", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="B's measured seconds per case")
    parser.add_argument("--noisy", type=int, default=64, help="A's readers (default 64)")
    parser.add_argument("--json", metavar="PATH", default=None)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="cgroupfs-neighbour-")
    cgroups = BenchCgroups(name=f"cgroupfs-neighbour-{os.getpid()}")
    started: list = []
    rows = []
    try:
        cgroups.create_parent()
        cgroup_a = cgroups.create_child("a", 512 << 20)
        cgroup_b = cgroups.create_child("b", 256 << 20)
        usage_file = os.path.join(cgroups.memory_directory(f"{cgroups.name}/b"), "memory.usage_in_bytes")
        reader = build_c_reader(workdir)
        members = {}
        for label, cgroup in (("a", cgroup_a), ("b", cgroup_b)):
            members[label] = subprocess.Popen(["sleep", "infinity"], preexec_fn=cgroup.join)
            started.append(members[label])
        per_reader = servers.cgroupfs(workdir)
        views = servers.cgroupfs_views(workdir, {"b": members["b"].pid, "a": members["a"].pid})
        started.extend([per_reader, views])
        per_reader.start()
        views.start()
        in_per_reader = {f: per_reader.path(f) for f in ("meminfo", "stat")}
        in_views = {f: views.path(f, "a") for f in ("meminfo", "stat")}
        cases = [
            ("per-reader files, B alone", None, per_reader.path("meminfo"), per_reader),
            ("per-reader files, A noisy", in_per_reader, per_reader.path("meminfo"), per_reader),
            ("views, B alone", None, views.path("meminfo"), views),
            ("views, A noisy", in_views, views.path("meminfo"), views),
        ]
        for name, paths_a, path_b, server in cases:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(run_case(name, paths_a, path_b, usage_file, args, reader, cgroup_a, cgroup_b, server))
    finally:
        for thing in reversed(started):
            if isinstance(thing, subprocess.Popen):
                thing.kill()
                thing.wait()
            else:
                thing.stop()
        left = cgroups.remove()
        if left:
            print(f"warning: could not remove {left}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"`python -m benchmarks.neighbour {' '.join(argv if argv is not None else sys.argv[1:])}`, "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}\n")
    print("| case | A reads/s | B p50 ms | B p99 ms | B max ms | B value age p99 / max ms | server CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        age = ("–" if row["b_age_p99_ms"] is None
               else f"{row['b_age_p99_ms']:.0f} / {row['b_age_max_ms']:.0f}")
        print(f"| {row['case']} | {row['a_reads_per_s']:,.0f} | {row['b_p50_ms']:.3f} | {row['b_p99_ms']:.3f} | "
              f"{row['b_max_ms']:.2f} | {age} | {row['server_cpu_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
