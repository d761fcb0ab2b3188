"""What `cgroupfs-runtime` costs: per non-create call, and per `docker run --rm IMAGE true`.

    python -m benchmarks.runtime_wrapper [--calls 50] [--runs 20]

1. A non-create call (`state` of a container that does not exist, which runc answers
   at once), run directly, through `cgroupfs-runtime` (the sh front, which execs runc)
   and through `cgroupfs-runtime-create` (the Python half, which is what every call
   cost before the front), interleaved; with the Python start-up floor
   (`python -I -S -c pass`) beside them.
2. `docker run --rm IMAGE true` against one private dockerd that has three runtimes,
   runc, the front, and the Python half for every call (with a cgroupfs daemon serving,
   so create does all its work), interleaved; median of `--runs` each.
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

from testbed.daemon_process import DaemonProcess
from testbed.docker_engine import DockerEngine
from testbed.runtime_engines import write_runtime_script


def timed(argv: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def default_wrapper() -> str:
    return shutil.which("cgroupfs-runtime", path=os.path.dirname(sys.executable)) or "cgroupfs-runtime"


def python_half(wrapper: str) -> str:
    """The Python wrapper the front execs for create, installed beside it."""
    return os.path.join(os.path.dirname(shutil.which(wrapper) or wrapper), "cgroupfs-runtime-create")


def interpreter(script: str) -> str:
    """The python a console script runs with (its #! line)."""
    with open(script) as f:
        return f.readline()[2:].split()[0]


def non_create(calls: int, runtime: str, wrapper: str) -> dict[str, list[float]]:
    python = interpreter(python_half(wrapper))
    env = dict(os.environ, CGROUPFS_RUNTIME=runtime, CGROUPFS_CONFIG="/nonexistent")
    runtime_path = shutil.which(runtime) or runtime
    with tempfile.TemporaryDirectory() as root:
        args = ["--root", root, "state", "cgroupfs-bench-none"]
        cases = {
            f"{runtime} directly": lambda: timed([runtime_path, *args]),
            "through cgroupfs-runtime (the sh front)": lambda: timed([wrapper, *args], env),
            "through cgroupfs-runtime-create (Python, as before the front)": lambda: timed(
                [python_half(wrapper), *args], env),
            "its python -I -S -c pass (start-up floor)": lambda: timed([python, "-I", "-S", "-c", "pass"]),
            "its python -c pass (with site)": lambda: timed([python, "-c", "pass"]),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(calls):
            for name, case in cases.items():
                samples[name].append(case())
    return samples


def docker_runs(runs: int, wrapper_path: str) -> dict[str, list[float]]:
    base = tempfile.mkdtemp(prefix="cgfs-bench-rt-", dir="/tmp")
    mountpoint = os.path.join(base, "mnt")
    # Docker's runtime name -> this report's name and the script it runs
    runtimes = {"runc": ("runc", None), "cgroupfs": ("cgroupfs-runtime", wrapper_path),
                "cgroupfs-py": ("cgroupfs-runtime-create (Python for every call)", python_half(wrapper_path))}
    extra_args: list[str] = []
    for runtime, (_, script) in runtimes.items():
        if script:
            os.mkdir(os.path.join(base, runtime))
            path = write_runtime_script(os.path.join(base, runtime), mountpoint, wrapper=script)
            extra_args += ["--add-runtime", f"{runtime}={path}"]
    os.mkdir(os.path.join(base, "docker"))
    engine = DockerEngine(os.path.join(base, "docker"), extra_args=tuple(extra_args))
    daemon = DaemonProcess(mountpoint, log_path=os.path.join(base, "d.log"))
    samples: dict[str, list[float]] = {name: [] for name, _ in runtimes.values()}
    try:
        engine.start()
        image = engine.build_image()
        daemon.start()
        for runtime in runtimes:  # warm-up
            engine.cli("run", "--rm", "--network", "none", "--runtime", runtime, image, "true")
        for _ in range(runs):
            for runtime, (name, _) in runtimes.items():
                started = time.perf_counter()
                engine.cli("run", "--rm", "--network", "none", "--runtime", runtime, image, "true")
                samples[name].append(time.perf_counter() - started)
    finally:
        daemon.stop()
        engine.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="non-create calls per case")
    parser.add_argument("--runs", type=int, default=20, help="`docker run`s per runtime")
    parser.add_argument("--runtime", default="runc", help="the real runtime")
    parser.add_argument("--no-docker", action="store_true", help="only the non-create calls")
    parser.add_argument("--wrapper", default=None, help="the cgroupfs-runtime to measure, cgroupfs-runtime-create "
                        "beside it (default: this virtualenv's; an editable install's Python pays ~25 ms more at "
                        "start-up than `make install`'s)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    wrapper = args.wrapper or default_wrapper()
    print(f"wrapper: {wrapper}")
    calls = non_create(args.calls, args.runtime, wrapper)
    direct = statistics.median(calls[f"{args.runtime} directly"])
    print("| non-create call (`state`), median of", args.calls, "| time | added |\n|---|---:|---:|")
    for name, samples in calls.items():
        added = statistics.median(samples) - direct
        print(f"| {name} | {median_ms(samples)} | {'' if name.endswith('directly') else f'{added * 1000:+.1f} ms'} |")
    if not args.no_docker:
        runs = docker_runs(args.runs, wrapper)
        runc = statistics.median(runs["runc"])
        print(f"\n| `docker run --rm IMAGE true`, median of {args.runs} | time | vs runc |\n|---|---:|---:|")
        for name, samples in runs.items():
            print(f"| {name} | {median_ms(samples)} | {statistics.median(samples) / runc - 1:+.1%} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
