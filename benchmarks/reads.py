"""Read throughput, latency and server cost: native /proc vs LXCFS vs cgroupfs, side by side.

    python -m benchmarks.reads [--duration S] [--files meminfo,stat,cpuinfo] [--json PATH]

Run as root from the repository root (`make bench` does).  The harness creates a
limited cgroup (`cgroupfs-bench-<pid>` in the v1 controllers memory, cpu, cpuacct,
cpuset, blkio, pids; 256 MiB by default), starts LXCFS and cgroupfs on mount points
of their own under a temporary directory, and for every file and reader count runs
reader processes inside that cgroup doing open + read-to-EOF + close in a loop
(reader.c, compiled with gcc at run time).  It prints reads/s, p50/p99 latency and
the server's CPU seconds per 1000 reads (utime+stime of the server process over the
measured window), the cgroupfs/LXCFS ratios against the targets of issue 2, and the
servers' RSS while 200 cgroups read every file.  Everything it creates (mounts,
cgroups, processes, the temporary directory) is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import servers as server_kinds
from benchmarks.cgroups import BenchCgroups, Cgroup, CgroupSetupError
from benchmarks.per_reader_server import VARIANTS
from benchmarks.readers import (
    Histogram,
    LoopResult,
    ReaderError,
    machine_busy_seconds,
    read_once_in,
    reader_command,
    run_loop,
    start_rounds,
)
from benchmarks.servers import FILES, Native, ServerError, fuse_mounted_at

# Issue 2's targets.
TARGET_RATE_RATIO = {1: 2.0, 4: 4.0}   # cgroupfs reads/s >= this x LXCFS's, by reader count
TARGET_P99_US = 500.0                  # at 4 readers
TARGET_CPU_RATIO = 0.5                 # cgroupfs server CPU per read <= this x LXCFS's
TARGET_RSS_MB = 60.0                   # with 200 cgroups being read

# CPU used by other processes during a run above which its numbers are flagged.
NOISY_OTHER_LOAD_CORES = 0.25

SOURCE_ORDER = ("native", "LXCFS", "cgroupfs", "views")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per run (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per (file, readers, server), interleaved; reads/s is their median (default 3)")
    parser.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds before each run")
    parser.add_argument("--files", default="meminfo,stat,cpuinfo",
                        help=f"comma-separated, from: {','.join(FILES)} (default meminfo,stat,cpuinfo)")
    parser.add_argument("--readers", default="1,4", help="concurrent reader counts (default 1,4)")
    parser.add_argument("--sources", default="native,lxcfs,cgroupfs,views", help="which servers to measure")
    parser.add_argument("--variants", default="", metavar="V[,V]",
                        help="also the per-reader files with one protocol choice undone: "
                             "no-noflush, flush-answered (benchmarks/per_reader_server.py; 'shipped' is the same "
                             "code as the daemon's, to tell the variants' own overhead from the daemon's)")
    parser.add_argument("--cgroupfs-at", default="", metavar="COMMIT[,COMMIT]",
                        help="also the per-reader daemon as it was at COMMIT (installed from PyPI into a "
                             "virtualenv of its own under the work directory), e.g. e9a7828: mfusepy on libfuse")
    parser.add_argument("--reader", choices=("c", "python"), default="c",
                        help="reader implementation (default c: least noise and least CPU per read)")
    parser.add_argument("--pin-cpu", type=int, default=None, metavar="CPU",
                        help="run the harness, the servers and the readers on this one cpu (inherited): "
                             "shows the cost of a read without cross-cpu wake-ups")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait until other work uses less than "
                             f"{NOISY_OTHER_LOAD_CORES} cores, spending at most SECONDS in total (default 0)")
    parser.add_argument("--memory-limit-mib", type=int, default=256)
    parser.add_argument("--rss-cgroups", type=int, default=200,
                        help="cgroups reading every file during the RSS measurement (0 skips it)")
    parser.add_argument("--cache-ttl-ms", type=float, default=None, help="passed to cgroupfs (default: its own)")
    parser.add_argument("--profile", metavar="PATH", default=None,
                        help="run cgroupfs under cProfile, write the profile to PATH and print its top entries")
    parser.add_argument("--compare-readers", action="store_true",
                        help="instead of the benchmark: repeat runs with the C and the Python reader and "
                             "compare their noise and their own CPU cost")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions for --compare-readers")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write all results as JSON to PATH ('-': stdout, the tables go to stderr)")
    args = parser.parse_args(argv)
    args.files = [f.strip() for f in args.files.split(",") if f.strip()]
    unknown = [f for f in args.files if f not in FILES]
    if unknown:
        parser.error(f"unknown file(s) {', '.join(unknown)}; choose from {', '.join(FILES)}")
    args.readers = [int(n) for n in args.readers.split(",")]
    wanted = {s.strip().lower() for s in args.sources.split(",")}
    args.sources = [s for s in SOURCE_ORDER if s.lower() in wanted]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.cgroupfs_at = [c.strip() for c in args.cgroupfs_at.split(",") if c.strip()]
    return args


def machine() -> dict:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    try:
        result = subprocess.run(["lxcfs", "--version"], capture_output=True, text=True)
        lxcfs_version = (result.stdout or result.stderr).strip()
    except OSError:
        lxcfs_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=server_kinds.REPO).stdout.strip()
    except OSError:
        commit = None
    return {
        "date": datetime.date.today().isoformat(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024),
        "python": platform.python_version(),
        "lxcfs": lxcfs_version.strip('"') if lxcfs_version else None,
        "cgroupfs_commit": commit,
    }


def summarize(source: str, file: str, runs: list[LoopResult]) -> dict:
    """One table row from the rounds of one (file, readers, server) cell.

    reads/s is the median over rounds (robust to a round disturbed by other work);
    latency percentiles come from all rounds' histograms merged; CPU per read is
    total CPU over total reads.
    """
    histogram = Histogram()
    for run in runs:
        histogram.merge(run.output.histogram)
    reads = sum(run.output.reads for run in runs)
    server_cpus = [run.server_cpu_s for run in runs if run.server_cpu_s is not None]
    server_cpu = sum(server_cpus) if len(server_cpus) == len(runs) else None
    rates = [run.output.reads / run.seconds for run in runs]
    return {
        "file": file,
        "readers": runs[0].readers,
        "server": source,
        "rounds": len(runs),
        "seconds": sum(run.seconds for run in runs),
        "reads": reads,
        "errors": sum(run.output.errors for run in runs),
        "reads_per_s": statistics.median(rates),
        "reads_per_s_rounds": rates,
        "p50_us": histogram.percentile_us(0.50),
        "p99_us": histogram.percentile_us(0.99),
        "p999_us": histogram.percentile_us(0.999),
        "bytes_per_read": sum(run.output.bytes for run in runs) / reads if reads else None,
        "server_cpu_s_per_1000_reads": server_cpu / reads * 1000 if server_cpu is not None and reads else None,
        "reader_cpu_us_per_read": sum(run.output.cpu_us for run in runs) / reads if reads else None,
        "other_load_cores": max(run.other_load_cores for run in runs),
    }


# -- the phases ---------------------------------------------------------------

def sanity_checks(cgroup: Cgroup, sources: dict, memory_limit_bytes: int) -> list[str]:
    """Both filesystems must tailor the files to the readers' cgroup, or the comparison is moot."""
    problems = []
    cpu_counts = {}
    for name, source in sources.items():
        if name == "native":
            continue
        meminfo = read_once_in(cgroup, source.path("meminfo")).decode()
        total_kb = int(meminfo.split("\n", 1)[0].split()[1])
        if total_kb != memory_limit_bytes // 1024:
            problems.append(f"{name}: MemTotal {total_kb} kB, expected {memory_limit_bytes // 1024} kB")
        cpuinfo = read_once_in(cgroup, source.path("cpuinfo")).decode()
        cpu_counts[name] = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    if len(set(cpu_counts.values())) > 1:
        problems.append(f"the servers disagree on the number of processors: {cpu_counts}")
    return problems


def measure_reads(args, command, cgroup: Cgroup, sources: dict, started: list, log) -> list[dict]:
    """Every (file, readers, server) cell, `args.rounds` times, rounds outermost.

    Interleaving spreads any disturbance from other work on the machine over all
    servers alike instead of hitting one of them.
    """
    cells: dict[tuple, list[LoopResult]] = {}
    quiet = QuietWaiter(args.wait_quiet, log)
    for round_index in range(args.rounds):
        for file in args.files:
            for readers in args.readers:
                for name, source in sources.items():
                    quiet.wait()
                    server_cpu = source.cpu_seconds if source.pid else None
                    result = run_loop(command, source.path(file), readers, args.duration, args.warmup,
                                      cgroup, server_cpu=server_cpu, started=started)
                    cells.setdefault((file, readers, name), []).append(result)
                    out = result.output
                    log(f"  round {round_index + 1}: {file:9} {readers} reader(s) {name:9} "
                        f"{out.reads / result.seconds:9.0f} reads/s  "
                        f"p50 {fmt(out.histogram.percentile_us(0.5), 1)} µs  "
                        f"p99 {fmt(out.histogram.percentile_us(0.99), 1)} µs  "
                        f"other load {result.other_load_cores:.2f} cores"
                        + (f"  ERRORS {out.errors}" if out.errors else ""))
    return [summarize(name, file, runs) for (file, readers, name), runs in cells.items()]


class QuietWaiter:
    """Waits for the machine to be idle (our servers idle too) within a total time budget."""

    def __init__(self, budget_s: float, log):
        self.budget_s = budget_s
        self.log = log
        self.waited_s = 0.0

    def wait(self) -> None:
        while self.waited_s < self.budget_s:
            started = time.monotonic()
            busy_before = machine_busy_seconds()
            time.sleep(0.3)
            load = (machine_busy_seconds() - busy_before) / (time.monotonic() - started)
            if load <= NOISY_OTHER_LOAD_CORES:
                self.waited_s += time.monotonic() - started
                return
            time.sleep(1.0)
            self.waited_s += time.monotonic() - started
            if self.waited_s >= self.budget_s:
                self.log(f"  the machine stayed busy ({load:.2f} cores); --wait-quiet budget spent, running anyway")


def measure_rss(args, command, cgroups: BenchCgroups, sources: dict, started: list, log) -> list[dict]:
    """Peak RSS of each server while `args.rss_cgroups` cgroups read every file a few times."""
    count = args.rss_cgroups
    children = []
    for index in range(count):
        # Different limits so every cgroup renders different content.
        limit = (64 << 20) + index * (256 << 10)
        children.append(cgroups.create_child(f"c{index:03d}", limit))
    rows = []
    for name, source in sources.items():
        if not source.pid or isinstance(source, server_kinds.ViewsServer):
            continue  # native has no server; a views server serves one view, not 200 cgroups
        before = source.memory_kb()
        paths = [source.path(file) for file in FILES]
        start_ns = time.monotonic_ns() + int((0.5 + 0.01 * count) * 1e9)
        processes = []
        for child in children:
            process = start_rounds(command, paths, start_ns, rounds=5, pause_ms=100, cgroup=child)
            processes.append(process)
            started.append(process)
        peak_kb = before["VmRSS"]
        while any(p.poll() is None for p in processes):
            peak_kb = max(peak_kb, source.memory_kb()["VmRSS"])
            time.sleep(0.01)
        reads = errors = 0
        for process in processes:
            stdout, _ = process.communicate()
            for line in stdout.decode().splitlines():
                key, value = line.split()
                reads += int(value) if key == "reads" else 0
                errors += int(value) if key == "errors" else 0
            started.remove(process)
        after = source.memory_kb()
        rows.append({"server": name, "cgroups": count, "reads": reads, "errors": errors,
                     "rss_before_mb": before["VmRSS"] / 1024, "rss_peak_mb": peak_kb / 1024,
                     "rss_after_mb": after["VmRSS"] / 1024, "hwm_mb": after["VmHWM"] / 1024})
        log(f"  {name:9} RSS {before['VmRSS'] / 1024:.1f} MB idle, peak {peak_kb / 1024:.1f} MB "
            f"while {count} cgroups read ({reads} reads, {errors} errors)")
    return rows


def compare_readers(args, cgroup: Cgroup, sources: dict, workdir: str, started: list, log) -> list[dict]:
    """Same runs with each reader implementation, `args.repeat` times: spread and own cost."""
    rows = []
    quiet = QuietWaiter(args.wait_quiet, log)
    commands = {kind: reader_command(kind, workdir) for kind in ("c", "python")}
    for name, source in sources.items():
        for readers in args.readers:
            for kind, command in commands.items():
                runs = []
                for _ in range(args.repeat):
                    quiet.wait()
                    server_cpu = source.cpu_seconds if source.pid else None
                    runs.append(run_loop(command, source.path("meminfo"), readers, args.duration,
                                         args.warmup, cgroup, server_cpu=server_cpu, started=started))
                rates = [run.output.reads / run.seconds for run in runs]
                p99s = [p99 for run in runs if (p99 := run.output.histogram.percentile_us(0.99)) is not None]
                if len(p99s) < len(runs):
                    raise RuntimeError(f"{name}: a round with {readers} {kind} reader(s) read nothing")
                row = {
                    "server": name, "readers": readers, "reader": kind,
                    "reads_per_s_mean": statistics.mean(rates),
                    "reads_per_s_cv_pct": 100 * statistics.pstdev(rates) / statistics.mean(rates),
                    "p99_us_mean": statistics.mean(p99s),
                    "p99_cv_pct": 100 * statistics.pstdev(p99s) / statistics.mean(p99s),
                    "reader_cpu_us_per_read": (sum(run.output.cpu_us for run in runs)
                                               / sum(run.output.reads for run in runs)),
                    "other_load_cores": max(run.other_load_cores for run in runs),
                }
                rows.append(row)
                log(f"  {name:9} {readers} reader(s) {kind:6} {row['reads_per_s_mean']:9.0f} reads/s "
                    f"(cv {row['reads_per_s_cv_pct']:.1f}%)  p99 {row['p99_us_mean']:.0f} µs "
                    f"(cv {row['p99_cv_pct']:.1f}%)  reader CPU {row['reader_cpu_us_per_read']:.1f} µs/read  "
                    f"other load ≤ {row['other_load_cores']:.2f} cores")
    return rows


# -- the report ---------------------------------------------------------------

def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def verdicts(rows: list[dict], rss_rows: list[dict]) -> list[dict]:
    by_key = {(r["file"], r["readers"], r["server"]): r for r in rows}
    checks = []
    for (file, readers, server), ours in by_key.items():
        if server != "cgroupfs":
            continue
        theirs = by_key.get((file, readers, "LXCFS"))
        check = {"file": file, "readers": readers, "p99_us": ours["p99_us"]}
        if theirs and theirs["reads_per_s"]:
            check["rate_ratio"] = ours["reads_per_s"] / theirs["reads_per_s"]
            target = TARGET_RATE_RATIO.get(readers)
            check["rate_target"] = target
            check["rate_ok"] = None if target is None else check["rate_ratio"] >= target
        if theirs and theirs["server_cpu_s_per_1000_reads"] and ours["server_cpu_s_per_1000_reads"] is not None:
            check["cpu_ratio"] = ours["server_cpu_s_per_1000_reads"] / theirs["server_cpu_s_per_1000_reads"]
            check["cpu_ok"] = check["cpu_ratio"] <= TARGET_CPU_RATIO
        if readers == 4 and ours["p99_us"] is not None:
            check["p99_ok"] = ours["p99_us"] <= TARGET_P99_US
        checks.append(check)
    for rss in rss_rows:
        if rss["server"] == "cgroupfs":
            checks.append({"rss_mb": rss["rss_peak_mb"], "rss_ok": rss["rss_peak_mb"] <= TARGET_RSS_MB})
    return checks


def mark(ok) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def render_tables(meta: dict, rows: list[dict], checks: list[dict], rss_rows: list[dict], command: str) -> str:
    lines = [
        f"{meta['date']}, {meta['cpus']} cores / {meta['memory_gib']} GiB, kernel {meta['kernel']}, "
        f"LXCFS {meta['lxcfs']}, Python {meta['python']}, cgroupfs {meta['cgroupfs_commit']}",
        f"`{command}`", "",
        "| file | readers | server | reads/s | p50 µs | p99 µs | server CPU s / 1000 reads | other load (cores) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['file']} | {r['readers']} | {r['server']} | {fmt(r['reads_per_s'])} | "
                     f"{fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {fmt(r['server_cpu_s_per_1000_reads'], 3)} | "
                     f"{r['other_load_cores']:.2f}{' ⚠' if r['other_load_cores'] > NOISY_OTHER_LOAD_CORES else ''} |")
    lines += ["", "other load: CPU seconds per second used by processes other than the server and the readers "
              f"during the measured window (highest round); ⚠ above {NOISY_OTHER_LOAD_CORES} cores: "
              "the row was disturbed, rerun on a quiet machine."]
    rate_checks = [c for c in checks if "file" in c]
    if rate_checks:
        lines += ["", "| file | readers | reads/s cgroupfs ÷ LXCFS (target) | server CPU/read cgroupfs ÷ LXCFS "
                  f"(≤ {TARGET_CPU_RATIO}) | cgroupfs p99 µs (≤ {TARGET_P99_US:.0f} at 4) |",
                  "|---|---:|---:|---:|---:|"]
        for c in rate_checks:
            rate = (f"{c['rate_ratio']:.2f}× (≥ {c['rate_target']:.0f}×){mark(c.get('rate_ok'))}"
                    if "rate_ratio" in c and c.get("rate_target") else fmt(c.get("rate_ratio"), 2))
            cpu = f"{c['cpu_ratio']:.2f}{mark(c.get('cpu_ok'))}" if "cpu_ratio" in c else "–"
            p99 = f"{fmt(c['p99_us'], 0)}{mark(c.get('p99_ok'))}"
            lines.append(f"| {c['file']} | {c['readers']} | {rate} | {cpu} | {p99} |")
    if rss_rows:
        lines += ["", f"| server | RSS idle MB | peak RSS MB while {rss_rows[0]['cgroups']} cgroups read "
                  f"(cgroupfs ≤ {TARGET_RSS_MB:.0f}) | reads | errors |", "|---|---:|---:|---:|---:|"]
        for r in rss_rows:
            ok = r["rss_peak_mb"] <= TARGET_RSS_MB if r["server"] == "cgroupfs" else None
            lines.append(f"| {r['server']} | {r['rss_before_mb']:.1f} | {r['rss_peak_mb']:.1f}{mark(ok)} | "
                         f"{r['reads']} | {r['errors']} |")
    return "\n".join(lines)


def print_profile(path: str, out) -> None:
    stats = pstats.Stats(path, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


# -- orchestration --------------------------------------------------------------

def preflight() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (the harness creates cgroups and FUSE mounts)")
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse is missing")
    if shutil.which("gcc") is None:
        problems.append("gcc is missing (the reader is compiled at run time)")
    return problems


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problems = preflight()
    if problems:
        for problem in problems:
            print(f"benchmarks.reads: {problem}", file=sys.stderr)
        return 2
    report = sys.stderr if args.json == "-" else sys.stdout

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command_line = " ".join(["python -m benchmarks.reads", *(sys.argv[1:] if argv is None else argv)])
    try:
        cgroups = BenchCgroups(memory_limit_bytes=args.memory_limit_mib << 20)
    except CgroupSetupError as exc:
        print(f"benchmarks.reads: {exc}", file=sys.stderr)
        return 2
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})  # inherited by every server and reader
    signal.signal(signal.SIGTERM, _terminate)
    workdir = tempfile.mkdtemp(prefix="cgroupfs-bench-")
    sources: dict = {}
    started: list = []  # reader processes still running, killed on failure
    profile_path = os.path.abspath(args.profile) if args.profile else None
    results: dict = {"machine": machine(), "command": command_line,
                     "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    status = 0
    try:
        cgroup = cgroups.create_parent()
        log(f"cgroup {cgroups.name} (memory limit {args.memory_limit_mib} MiB), work directory {workdir}")
        command = reader_command(args.reader, workdir)
        for name in args.sources:
            if name == "native":
                sources[name] = Native()
            elif name == "LXCFS":
                sources[name] = server_kinds.lxcfs(workdir)
            elif name == "views":
                # A view needs a member of the readers' cgroup: a sleeper, killed with the readers.
                member = subprocess.Popen(["sleep", "infinity"], preexec_fn=cgroup.join)
                started.append(member)
                sources[name] = server_kinds.cgroupfs_views(workdir, {"bench": member.pid}, args.cache_ttl_ms)
            else:
                sources[name] = server_kinds.cgroupfs(workdir, args.cache_ttl_ms, profile_path)
        for variant in args.variants:
            source = server_kinds.cgroupfs_variant(workdir, variant)
            sources[source.name] = source
        for commit in args.cgroupfs_at:
            source = server_kinds.cgroupfs_at(workdir, commit, log)
            sources[source.name] = source
        for source in sources.values():
            if not isinstance(source, Native):
                source.start()
                log(f"{source.name} serving {source.mountpoint} (pid {source.pid})")
        problems = sanity_checks(cgroup, sources, args.memory_limit_mib << 20)
        for problem in problems:
            log(f"warning: {problem}")
        results["sanity_problems"] = problems

        if args.compare_readers:
            log(f"comparing readers: meminfo, {args.repeat} × {args.duration:g} s per case")
            results["reader_comparison"] = compare_readers(args, cgroup, sources, workdir, started, log)
        else:
            log(f"reads: {args.rounds} rounds of {args.duration:g} s per run (+{args.warmup:g} s warm-up), "
                f"{args.reader} reader")
            rows = measure_reads(args, command, cgroup, sources, started, log)
            rss_rows = []
            if args.rss_cgroups > 0:
                log(f"RSS: {args.rss_cgroups} cgroups, one reader each, every file 5 times")
                rss_rows = measure_rss(args, command, cgroups, sources, started, log)
            checks = verdicts(rows, rss_rows)
            results.update(reads=rows, rss=rss_rows, checks=checks)
            print(render_tables(results["machine"], rows, checks, rss_rows, command_line), file=report)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        status = 130
    except (ServerError, ReaderError, CgroupSetupError) as exc:
        log(f"benchmarks.reads: {exc}")
        status = 1
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()
        for source in sources.values():
            source.stop()
        left = cgroups.remove()
        if left:
            log(f"warning: could not remove cgroups: {', '.join(left)}")
        if any(fuse_mounted_at(getattr(s, "mountpoint", "")) for s in sources.values()):
            log(f"warning: a mount is still under {workdir}; leaving the directory")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if profile_path and os.path.exists(profile_path):
        print(f"\ncProfile of the cgroupfs daemon ({profile_path}):", file=report)
        print_profile(profile_path, report)
    if args.json:
        text = json.dumps(results, indent=2, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
