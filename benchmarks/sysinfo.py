"""What answering sysinfo(2) costs a container, and whether a tight loop starves a neighbour.

    python -m benchmarks.sysinfo [--calls 20000] [--rounds 4] [--variants uncached,constant]

A daemon, one runc bundle shape (busybox root, 256 MiB memory limit, the host's
/usr and its libraries bound read-only so that the host's python3 runs in it), and
a measuring loop that times each call with perf_counter_ns through ctypes:
sysinfo(2) (glibc's wrapper, a direct system call) and, in the same loop, getppid(2),
a trivial system call whose time is the loop's own overhead plus a syscall's entry
and exit.  Nothing is subtracted.

1. Interception: the loop on the host (reference), in a container started by plain
   runc (the kernel answers), and in one started through `cgroupfs-runtime` (the
   seccomp filter traps sysinfo and the daemon answers), interleaved over --rounds
   rounds of --calls / --rounds calls each.  The daemon's CPU (utime + stime of the
   process, /proc/PID/stat) over the intercepted loops, per 1000 calls; and its idle
   cost, over 2 s before and after in which nothing runs.  With --variants, the
   same containers through daemons of their own whose answer is cheaper
   (benchmarks/sysinfo_variant.py), in the same rounds.
2. Tight loop: container B (intercepted) measures sysinfo and a read of its
   /proc/meminfo (a FUSE read from the daemon), alone and while container A
   (intercepted) calls sysinfo in a tight loop; interleaved over the same rounds.

Each loop waits, started, for a line on stdin: the harness samples the daemon's and
the machine's CPU counters just before it says go and just after the results come
back, so container start-up is outside every window.  "Other load" is the CPU the
machine spent on anything but the loop(s) and the daemon in that window, in cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from benchmarks.neighbour import percentile
from benchmarks.readers import machine_busy_seconds
from benchmarks.servers import process_cpu_seconds
from benchmarks.sysinfo_variant import VARIANTS, VARIANT_SETTING
from testbed.daemon_process import DaemonProcess
from testbed.docker_engine import busybox_rootfs_tar
from testbed.metrics import free_port, samples, scrape
from testbed.runtime_engines import runtime_log, write_runtime_script

PYTHON = "/usr/bin/python3"  # the host's, under /usr: what the containers run through the bind mounts
MEMORY_LIMIT_BYTES = 256 << 20
SCRIPT = "/sibench.py"
MIN_LOAD_WINDOW_S = 0.5
TARGET_P99_US = 200  # issue 15
INTERCEPTED = "through cgroupfs-runtime"

# Runs in the containers and on the host: `measure CALLS OPS` or `loop`.  Says "ready",
# waits for a line on stdin, then measures; `loop` calls sysinfo until a second line.
LOOP_PROGRAM = r"""
import ctypes, json, os, struct, sys, threading, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
buf = ctypes.create_string_buffer(128)  # struct sysinfo: 112 bytes on 64-bit
sysinfo, getppid = libc.sysinfo, libc.getppid
def read_meminfo():
    fd = os.open("/proc/meminfo", os.O_RDONLY)
    try:
        return len(os.read(fd, 65536)) - 1  # >= 0; never counted as a failure
    finally:
        os.close(fd)
OPS = {"sysinfo": lambda: sysinfo(buf), "getppid": lambda: getppid(), "meminfo": read_meminfo}
def cpu():
    t = os.times()
    return t.user + t.system
mode = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()
cpu0, wall0 = cpu(), time.monotonic()
if mode == "loop":
    stop = []
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.append(1)), daemon=True).start()
    calls = 0
    while not stop:
        sysinfo(buf)
        calls += 1
    result = {"calls": calls}
else:
    calls, names = int(sys.argv[2]), sys.argv[3].split(",")
    latencies = {name: [] for name in names}
    failed = {name: 0 for name in names}
    ops = [(name, OPS[name], latencies[name].append) for name in names]
    for _, op, _ in ops:
        op()  # warm-up: first-call costs (ctypes, page faults) are not the call's
    clock = time.perf_counter_ns
    for _ in range(calls):
        for name, op, note in ops:
            started = clock()
            returned = op()
            note(clock() - started)
            if returned < 0:
                failed[name] += 1
    total, = struct.unpack_from("@L", buf, 32)  # totalram, mem_unit: cgroupfs/sysinfo.py's LAYOUT
    unit, = struct.unpack_from("@I", buf, 104)
    result = {"latencies_ns": latencies, "failed": failed, "total_ram_bytes": total * unit}
result.update(cpu_s=cpu() - cpu0, seconds=time.monotonic() - wall0)
print(json.dumps(result), flush=True)
"""


@dataclass
class Window:
    """What one loop measured, and what the daemon and the machine spent meanwhile."""

    result: dict
    daemon_cpu_s: float
    machine_busy_s: float
    seconds: float

    def other_cpu_s(self) -> float:
        """CPU the machine spent on neither the loop(s) nor the daemon."""
        loops = self.result["cpu_s"] + self.result.get("a", {}).get("cpu_s", 0.0)
        return max(0.0, self.machine_busy_s - self.daemon_cpu_s - loops)


def other_load(windows: list[Window]) -> str:
    """Other load over these windows, in cores; "–" when they are too short for the
    counters' 10 ms ticks to say."""
    seconds = sum(window.seconds for window in windows)
    if seconds < MIN_LOAD_WINDOW_S:
        return "–"
    return f"{sum(window.other_cpu_s() for window in windows) / seconds:.2f}"


def quiet_sample(daemon_pid: int, seconds: float = 2.0) -> tuple[float, float]:
    """(the machine's busy cores, the daemon's CPU in ms/s) over `seconds` in which
    nothing of this benchmark runs: the host's own load, and the daemon's idle cost."""
    busy, daemon = machine_busy_seconds(), process_cpu_seconds(daemon_pid)
    time.sleep(seconds)
    return ((machine_busy_seconds() - busy) / seconds, (process_cpu_seconds(daemon_pid) - daemon) / seconds * 1000)


class Loop:
    """A loop program started (by `argv`), ready, and told to go."""

    def __init__(self, argv: list[str]):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdin is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            _, err = self.process.communicate()
            raise RuntimeError(f"{' '.join(argv)} did not start: {line}{err[-2000:]}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, stop: bool = False) -> dict:
        out, err = self.process.communicate("stop\n" if stop else None, timeout=600)
        if self.process.returncode != 0:
            raise RuntimeError(f"a loop failed ({self.process.returncode}): {err[-2000:]}")
        return json.loads(out.splitlines()[-1])


@dataclass
class Answerer:
    """A daemon that answers sysinfo, and the `cgroupfs-runtime` script that sends it containers."""

    row: str
    daemon: DaemonProcess
    wrapper: str


class Bench:
    def __init__(self, base: str):
        self.base = base
        self.answerers: list[Answerer] = []
        self.runc_root = os.path.join(base, "runc")
        self.rootfs = os.path.join(base, "rootfs")
        self.containers: list[str] = []
        self.loops: list[Loop] = []

    def add_answerer(self, variant: str | None, *flags: str) -> Answerer:
        """Start a daemon (shipped, or a variant of benchmarks.sysinfo_variant) of its own."""
        name = variant or "shipped"
        directory = os.path.join(self.base, name)
        os.mkdir(directory)
        mountpoint = os.path.join(directory, "mnt")
        extra: dict = ({} if variant is None else
                       {"module": "benchmarks.sysinfo_variant", "env": {VARIANT_SETTING: variant}})
        daemon = DaemonProcess(mountpoint, *flags, log_path=os.path.join(directory, "daemon.log"), **extra)
        answerer = Answerer(INTERCEPTED if variant is None else f"{INTERCEPTED}, variant `{variant}`", daemon,
                            write_runtime_script(directory, mountpoint))
        self.answerers.append(answerer)
        daemon.start()
        return answerer

    def logs(self) -> str:
        """The daemons' and the wrappers' logs, for a failure report."""
        text = []
        for answerer in self.answerers:
            text.append(f"daemon of {answerer.row}:\n{answerer.daemon.log()}")
            path = runtime_log(os.path.dirname(answerer.wrapper))
            if os.path.exists(path):
                with open(path) as f:
                    text.append(f"its cgroupfs-runtime:\n{f.read()[-3000:]}")
        return "\n".join(text)

    def build_rootfs(self) -> None:
        os.mkdir(self.rootfs)
        subprocess.run(["tar", "-x", "-C", self.rootfs], input=busybox_rootfs_tar(), check=True)
        os.mkdir(os.path.join(self.rootfs, "usr"))
        for name in ("lib", "lib64"):  # a merged-/usr host links them, an older one gets them bound
            if os.path.islink(f"/{name}"):
                os.symlink(os.readlink(f"/{name}"), os.path.join(self.rootfs, name))
            elif os.path.isdir(f"/{name}"):
                os.mkdir(os.path.join(self.rootfs, name))
        with open(os.path.join(self.rootfs, SCRIPT.lstrip("/")), "w") as f:
            f.write(LOOP_PROGRAM)

    def bundle(self, container: str, args: list[str]) -> str:
        """A fresh bundle for `container` (the wrapper edits config.json in place)."""
        bundle = os.path.join(self.base, container)
        os.mkdir(bundle)
        subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            spec = json.load(f)
        spec["root"] = {"path": self.rootfs, "readonly": True}
        spec["process"].update(terminal=False, args=[PYTHON, "-I", "-S", SCRIPT, *args])
        spec["mounts"] += [{"destination": f"/{name}", "type": "bind", "source": f"/{name}",
                            "options": ["rbind", "ro", "nosuid", "nodev"]}
                           for name in ("usr", "lib", "lib64") if not os.path.islink(f"/{name}")]
        spec["linux"]["cgroupsPath"] = f"/{container}"
        spec["linux"].setdefault("resources", {})["memory"] = {"limit": MEMORY_LIMIT_BYTES}
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        return bundle

    def start(self, label: str, answerer: Answerer | None, args: list[str]) -> Loop:
        """A container running the loop program with `args`: through `answerer`'s
        cgroupfs-runtime, or plain runc (None)."""
        container = f"sibench-{os.getpid()}-{len(self.containers)}-{label}"
        bundle = self.bundle(container, args)
        self.containers.append(container)
        runtime = answerer.wrapper if answerer is not None else "runc"
        return self._loop([runtime, "--root", self.runc_root, "run", "--bundle", bundle, container])

    def start_native(self, args: list[str]) -> Loop:
        return self._loop([PYTHON, "-I", "-S", os.path.join(self.rootfs, SCRIPT.lstrip("/")), *args])

    def _loop(self, argv: list[str]) -> Loop:
        loop = Loop(argv)
        self.loops.append(loop)
        return loop

    def measure(self, loop: Loop, daemon: DaemonProcess, looper: Loop | None = None) -> Window:
        """Run `loop` (with `looper` in its tight loop meanwhile), `daemon`'s CPU counted."""
        daemon0, busy0, wall0 = process_cpu_seconds(daemon.pid), machine_busy_seconds(), time.monotonic()
        if looper is not None:
            looper.go()
        loop.go()
        result = loop.result()
        if looper is not None:
            result["a"] = looper.result(stop=True)
        return Window(result, process_cpu_seconds(daemon.pid) - daemon0, machine_busy_seconds() - busy0,
                      time.monotonic() - wall0)

    def clean_up(self) -> None:
        """Delete every container started (runc kills what still runs in it), then end
        the loops still running (on the host, or a `runc run` left waiting)."""
        for container in self.containers:
            subprocess.run(["runc", "--root", self.runc_root, "delete", "-f", container],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for loop in self.loops:
            if loop.process.poll() is None:
                loop.process.kill()
                loop.process.wait()
        for answerer in self.answerers:
            answerer.daemon.stop()


def interception(bench: Bench, calls: int, rounds: int) -> dict[str, list[Window]]:
    args = ["measure", str(calls // rounds), "sysinfo,getppid"]
    shipped = bench.answerers[0]
    windows: dict[str, list[Window]] = {"host (no container)": [], "plain runc": []}
    windows.update({answerer.row: [] for answerer in bench.answerers})
    for round_number in range(rounds):
        print(f"interception, round {round_number + 1}/{rounds} ...", file=sys.stderr, flush=True)
        windows["host (no container)"].append(bench.measure(bench.start_native(args), shipped.daemon))
        windows["plain runc"].append(bench.measure(bench.start("plain", None, args), shipped.daemon))
        for answerer in bench.answerers:
            window = bench.measure(bench.start("icpt", answerer, args), answerer.daemon)
            if window.result["total_ram_bytes"] != MEMORY_LIMIT_BYTES:
                # The wrapper left the bundle alone (its log says why): the kernel answered.
                raise RuntimeError(f"{answerer.row}: sysinfo was not trapped (total RAM "
                                   f"{window.result['total_ram_bytes']:,}, not the limit)")
            windows[answerer.row].append(window)
    return windows


def tight_loop(bench: Bench, calls: int, rounds: int) -> dict[str, list[Window]]:
    """B measures alone, then beside A, both through the shipped daemon."""
    args = ["measure", str(calls // rounds), "sysinfo,getppid,meminfo"]
    shipped = bench.answerers[0]
    windows: dict[str, list[Window]] = {"B alone": [], "B, A in a tight loop": []}
    for round_number in range(rounds):
        print(f"tight loop, round {round_number + 1}/{rounds} ...", file=sys.stderr, flush=True)
        windows["B alone"].append(bench.measure(bench.start("b", shipped, args), shipped.daemon))
        looper = bench.start("a", shipped, ["loop"])
        windows["B, A in a tight loop"].append(bench.measure(bench.start("b", shipped, args), shipped.daemon, looper))
    return windows


def pooled(windows: list[Window], op: str) -> list[float]:
    """Every latency of `op` in these windows, in µs."""
    return [ns / 1000 for window in windows for ns in window.result["latencies_ns"][op]]


def summary(windows: list[Window], op: str) -> dict:
    values = pooled(windows, op)
    return {"calls": len(values), "p50_us": percentile(values, 0.5), "p90_us": percentile(values, 0.9),
            "p99_us": percentile(values, 0.99), "max_us": max(values),
            "failed": sum(window.result["failed"][op] for window in windows)}


def daemon_sysinfo_metrics(port: int) -> dict[str, float]:
    found = samples(scrape(port))
    values = {outcome: found.get(("cgroupfs_sysinfo_calls_total", frozenset({("outcome", outcome)})), 0.0)
              for outcome in ("answered", "kernel", "gone")}
    values["answer_s"] = found.get(("cgroupfs_sysinfo_answer_duration_seconds_sum", frozenset()), 0.0)
    values["answer_count"] = found.get(("cgroupfs_sysinfo_answer_duration_seconds_count", frozenset()), 0.0)
    return values


def latency_cells(windows: list[Window], op: str) -> tuple[dict, str]:
    row = summary(windows, op)
    return row, (f"{row['calls']:,} | {row['p50_us']:.1f} | {row['p90_us']:.1f} | {row['p99_us']:.1f} | "
                 f"{row['max_us']:,.0f}")


def p50_p99(row: dict) -> str:
    return f"{row['p50_us']:.1f} / {row['p99_us']:.1f}"


def interception_table(first: dict[str, list[Window]]) -> dict:
    print("| sysinfo(2) | calls | p50 µs | p90 µs | p99 µs | max µs | getppid p50 / p99 µs (loop + syscall) | "
          "total RAM seen | other load, cores |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for name, windows in first.items():
        row, cells = latency_cells(windows, "sysinfo")
        floor = summary(windows, "getppid")
        ram_mib = windows[-1].result["total_ram_bytes"] >> 20
        other = other_load(windows)
        print(f"| {name} | {cells} | {p50_p99(floor)} | {ram_mib:,} MiB | {other} |")
        rows[name] = {"sysinfo": row, "getppid": floor, "total_ram_mib": ram_mib, "other_load_cores": other}
    return rows


def daemon_cost(first: dict[str, list[Window]], host_load: dict[str, float], metrics: dict[str, float]) -> dict:
    """The daemons' CPU per 1000 calls, the shipped one's metrics, and the target."""
    idle_ms_per_s = (host_load["daemon_idle_before"] + host_load["daemon_idle_after"]) / 2
    print()
    cost: dict = {"daemon_idle_ms_per_s": idle_ms_per_s, "metrics": metrics, "daemon_cpu_ms_per_1000_calls": {}}
    for row, windows in first.items():
        if not row.startswith(INTERCEPTED):
            continue
        calls = sum(len(window.result["latencies_ns"]["sysinfo"]) + 1 for window in windows)  # + its warm-up
        cpu_s = sum(window.daemon_cpu_s for window in windows)
        seconds = sum(window.seconds for window in windows)
        per_1000_ms = cpu_s / calls * 1e6
        cost["daemon_cpu_ms_per_1000_calls"][row] = per_1000_ms
        print(f"Daemon CPU {row}: {per_1000_ms:.1f} ms per 1000 calls ({cpu_s:.2f} s over {calls:,} calls in "
              f"{seconds:.1f} s).")
    print(f"Idle, the daemon uses {idle_ms_per_s:.1f} ms/s.")
    mean_us = metrics["answer_s"] / metrics["answer_count"] * 1e6 if metrics["answer_count"] else 0.0
    cost["mean_answer_us"] = mean_us
    print(f"The daemon's metrics over the whole run: cgroupfs_sysinfo_calls_total answered "
          f"{metrics['answered']:,.0f}, kernel {metrics['kernel']:,.0f}, gone {metrics['gone']:,.0f}; mean time "
          f"from taking a call to answering it {mean_us:.1f} µs.")
    p99 = summary(first[INTERCEPTED], "sysinfo")["p99_us"]
    verdict = "met" if p99 <= TARGET_P99_US else f"missed by {p99 - TARGET_P99_US:.0f} µs"
    print(f"Target p99 ≤ {TARGET_P99_US} µs {INTERCEPTED}: {p99:.0f} µs, {verdict}.")
    return cost


def tight_loop_table(second: dict[str, list[Window]]) -> dict:
    print("\n| B, through cgroupfs-runtime | calls | sysinfo p50 µs | p90 µs | p99 µs | max µs | "
          "getppid p50 / p99 µs | /proc/meminfo read p50 / p99 µs | A's sysinfo calls/s | daemon CPU, cores | "
          "other load, cores |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for name, windows in second.items():
        row, cells = latency_cells(windows, "sysinfo")
        floor, meminfo = summary(windows, "getppid"), summary(windows, "meminfo")
        looping = [window.result["a"] for window in windows if "a" in window.result]
        a_rate = sum(a["calls"] for a in looping) / sum(a["seconds"] for a in looping) if looping else None
        daemon_cores = sum(w.daemon_cpu_s for w in windows) / sum(w.seconds for w in windows)
        other = other_load(windows)
        print(f"| {name} | {cells} | {p50_p99(floor)} | {p50_p99(meminfo)} | "
              f"{'–' if a_rate is None else f'{a_rate:,.0f}'} | {daemon_cores:.2f} | {other} |")
        rows[name] = {"sysinfo": row, "getppid": floor, "meminfo": meminfo, "a_calls_per_s": a_rate,
                      "daemon_cores": daemon_cores, "other_load_cores": other}
    return rows


def report(first: dict[str, list[Window]], second: dict[str, list[Window]], metrics: dict[str, float],
           argv: list[str], host_load: dict[str, float]) -> dict:
    print(f"\n`python -m benchmarks.sysinfo {' '.join(argv)}`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cpus; "
          f"host load before / after: load average {host_load['average_before']:.1f} / "
          f"{host_load['average_after']:.1f}, busy cores over 2 s with nothing of ours running "
          f"{host_load['busy_before']:.2f} / {host_load['busy_after']:.2f}\n")
    rows = interception_table(first)
    cost = daemon_cost(first, host_load, metrics)
    rows.update(tight_loop_table(second))
    failed = sum(row["sysinfo"]["failed"] for row in rows.values())
    if failed:
        print(f"\nwarning: {failed} sysinfo calls failed", file=sys.stderr)
    return {"rows": rows, "host_load": host_load, **cost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sysinfo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="sysinfo calls per case, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--variants", default="", metavar="V[,V]",
                        help=f"also through daemons changed as benchmarks.sysinfo_variant says: {', '.join(VARIANTS)}")
    parser.add_argument("--json", metavar="PATH", default=None)
    args = parser.parse_args(argv)
    args.variants = [variant.strip() for variant in args.variants.split(",") if variant.strip()]
    unknown = [variant for variant in args.variants if variant not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if os.geteuid() != 0 or not os.path.exists(PYTHON) or shutil.which("runc") is None:
        print(f"benchmarks.sysinfo: run as root, with runc and {PYTHON} installed", file=sys.stderr)
        return 2
    host_load = {"average_before": os.getloadavg()[0]}
    base = tempfile.mkdtemp(prefix="sibench-", dir="/tmp")  # short: the sysinfo sockets' paths
    port = free_port()
    bench = Bench(base)
    try:
        bench.build_rootfs()
        shipped = bench.add_answerer(None, "--metrics-address", f"127.0.0.1:{port}")
        for variant in args.variants:
            bench.add_answerer(variant)
        host_load["busy_before"], host_load["daemon_idle_before"] = quiet_sample(shipped.daemon.pid)
        metrics_before = daemon_sysinfo_metrics(port)
        first = interception(bench, args.calls, args.rounds)
        second = tight_loop(bench, args.calls, args.rounds)
        metrics_after = daemon_sysinfo_metrics(port)
        host_load["busy_after"], host_load["daemon_idle_after"] = quiet_sample(shipped.daemon.pid)
        host_load["average_after"] = os.getloadavg()[0]
    except Exception:
        print(bench.logs(), file=sys.stderr)
        raise
    finally:
        bench.clean_up()
        shutil.rmtree(base, ignore_errors=True)
    metrics = {key: metrics_after[key] - metrics_before[key] for key in metrics_after}
    results = report(first, second, metrics, argv if argv is not None else sys.argv[1:], host_load)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
