"""What a restart or an upgrade of the daemon costs the containers' readers.

16 readers in 4 containers (4 each, memory limits 64/80/96/112 MiB, on a private
Docker engine the daemon watches, so they read their views) read /proc/meminfo and
/proc/stat in a loop, and one descriptor kept open with pread at offset 0, while:

1. `--kills` times (20): the daemon is SIGKILLed and started again 200 ms later
   (the unit's RestartSec=) with its connections handed back from a file
   descriptor store, as systemd does (testbed/service_manager.py stands in for it);
2. `--reloads` times (20): SIGHUP, the upgrade (`systemctl reload`): re-execution
   with the connections;
3. `--baseline` times (5): SIGKILL and a start *without* the store: what every
   restart cost before (a fresh mount, the watcher heals each container).

For each phase: reads, failed reads, reads that saw another container's (or the
host's) MemTotal, the longest any single read waited, and how long each restart took
(from the kill or the SIGHUP to the successor serving).  Readers run on the host in
the container's mount namespace (setns), so a failure is counted, never hidden by a
shell.  Run as root: `python -m benchmarks.restart [--kills 20 --reloads 20 --baseline 5]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from testbed.daemon_process import REPO, detach_daemon_mounts
from testbed.docker_engine import IMAGE, DockerEngine
from testbed.service_manager import NotifyListener, popen_with_descriptors

LIMITS_MIB = (64, 80, 96, 112)
READERS_PER_CONTAINER = 4
RESTART_DELAY_S = 0.2  # systemd/cgroupfs.service RestartSec=
STORED = {"state", "fuse-cgroupfs", "fuse-cgroupfs-views"}

# Enters the container's mount namespace (before any file of the container is needed:
# everything is imported first), then reads until STOP exists.
READER = r"""
import ctypes, json, os, sys, time
pid, stop, expected = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
stop_fd = os.open(os.path.dirname(stop), os.O_RDONLY)  # the host path, reachable after setns
assert libc.setns(ns, 0x00020000) == 0, ctypes.get_errno()
stop_name = os.path.basename(stop)
kept = os.open("/proc/meminfo", os.O_RDONLY)
ok = failed = wrong = 0
slowest = 0.0
failures = []
def stopped():
    try:
        os.stat(stop_name, dir_fd=stop_fd)
        return True
    except FileNotFoundError:
        return False
while not stopped():
    started = time.monotonic()
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
        with open("/proc/stat", "rb") as f:
            f.read()
        kept_text = os.pread(kept, 65536, 0)
        for t in (text, kept_text):
            if int(t.split(b"\n", 1)[0].split()[1]) != expected:
                wrong += 1
        ok += 1
    except OSError as exc:
        failed += 1
        if len(failures) < 3:
            failures.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.005)
    slowest = max(slowest, time.monotonic() - started)
print(json.dumps({"ok": ok, "failed": failed, "wrong": wrong, "slowest_s": slowest, "failures": failures}))
"""


class Daemon:
    """`cgroupfs daemon` watching the private engine, with a stand-in fd store."""

    def __init__(self, base: str, docker_host: str):
        self.base = base
        self.mountpoint = os.path.join(base, "mnt")
        self.log_path = os.path.join(base, "cgroupfs.log")
        self.store = NotifyListener(os.path.join(base, "notify.sock"))
        self.args = [sys.executable, "-m", "cgroupfs_daemon.cli", "daemon", "--mountpoint", self.mountpoint,
                     "--docker-host", docker_host, "--no-metrics"]
        self.env = dict(os.environ, PYTHONPATH=REPO, NOTIFY_SOCKET=self.store.name,
                        CGROUPFS_STATE_FILE=os.path.join(base, "state.json"),
                        CGROUPFS_CONFIG=os.path.join(base, "no-config"))
        self.process: subprocess.Popen | None = None

    def start(self, handed: dict[str, int] | None = None, with_store: bool = True) -> float:
        """Start (with `handed` descriptors); the monotonic time it said READY=1."""
        since = time.monotonic()
        env = self.env if with_store else {k: v for k, v in self.env.items() if k != "NOTIFY_SOCKET"}
        with open(self.log_path, "ab") as log:
            if handed:
                self.process = popen_with_descriptors(self.args, handed, env, stdout=log, stderr=subprocess.STDOUT)
            else:
                self.process = subprocess.Popen(self.args, env=env, stdout=log, stderr=subprocess.STDOUT)
        if not with_store:
            return since
        return self.store.wait_for("READY=1", timeout=60, after=since).received

    def kill(self) -> float:
        assert self.process is not None
        killed = time.monotonic()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return killed

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        detach_daemon_mounts(self.mountpoint)
        self.store.close()


class Readers:
    def __init__(self, base: str, containers: dict[int, int]):
        self.stop_file = os.path.join(base, f"stop-{time.monotonic_ns()}")
        self.processes = [
            subprocess.Popen([sys.executable, "-c", READER, str(pid), self.stop_file, str(mib * 1024)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for pid, mib in containers.items() for _ in range(READERS_PER_CONTAINER)]

    def finish(self) -> dict:
        with open(self.stop_file, "w"):
            pass
        results = []
        for process in self.processes:
            out, err = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"a reader failed: {err.decode()[-2000:]}")
            results.append(json.loads(out))
        os.unlink(self.stop_file)
        return {"reads": sum(r["ok"] for r in results), "failed": sum(r["failed"] for r in results),
                "wrong": sum(r["wrong"] for r in results), "slowest_s": max(r["slowest_s"] for r in results),
                "failures": [f for r in results for f in r["failures"]][:3]}

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def count_in_log(daemon: Daemon, text: str) -> int:
    return daemon.log().count(text)


def wait_until(predicate, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)
    return time.monotonic()


def summary(durations: list[float]) -> dict:
    return {"count": len(durations), "p50_s": statistics.median(durations) if durations else None,
            "max_s": max(durations) if durations else None}


def kills_with_store(daemon: Daemon, count: int) -> list[float]:
    durations = []
    for _ in range(count):
        handed = daemon.store.wait_stored(STORED, timeout=30)
        killed = daemon.kill()
        time.sleep(RESTART_DELAY_S)
        durations.append(daemon.start(handed=handed) - killed)
        time.sleep(0.3)
    return durations


def reloads(daemon: Daemon, count: int) -> list[float]:
    durations = []
    for _ in range(count):
        assert daemon.process is not None
        before = count_in_log(daemon, "took over the live connection at")
        sent = time.monotonic()
        daemon.process.send_signal(signal.SIGHUP)
        done = wait_until(lambda b=before: count_in_log(daemon, "took over the live connection at") >= b + 2,
                          60, "the reload did not take over")
        durations.append(done - sent)
        time.sleep(0.3)
    return durations


def kills_without_store(daemon: Daemon, engine: DockerEngine, names: list[str], count: int) -> list[float]:
    """The old way: a fresh mount, then the watcher heals every container."""
    durations = []
    for _ in range(count):
        before = count_in_log(daemon, "healed")
        killed = daemon.kill()
        daemon.store.release_stored()  # no store: the connection dies with the daemon
        time.sleep(RESTART_DELAY_S)
        daemon.start(with_store=False)
        wait_until(lambda b=before: count_in_log(daemon, "healed") >= b + len(names), 120,
                   "the containers were not healed")
        durations.append(time.monotonic() - killed)
        time.sleep(0.3)
    return durations


def phase(base: str, containers: dict[int, int], run) -> dict:
    readers = Readers(base, containers)
    try:
        time.sleep(0.5)
        durations = run()
        result = readers.finish()
    finally:
        readers.kill()
    result["restarts"] = summary(durations)
    return result


def render(results: dict) -> str:
    lines = [f"{results['date']}, kernel {results['kernel']}, {os.cpu_count()} cpus; "
             f"`python -m benchmarks.restart {' '.join(results['argv'])}`", "",
             "| phase | restarts | reads | failed | wrong value | longest read ms | restart p50 / max ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("kills", "SIGKILL, fd store (systemd's Restart=)"), ("reloads", "SIGHUP (reload)"),
                        ("baseline", "SIGKILL, no store (mount and heal)")):
        r = results.get(name)
        if not r:
            continue
        restarts = r["restarts"]
        lines.append(f"| {label} | {restarts['count']} | {r['reads']:,} | {r['failed']:,} | {r['wrong']} | "
                     f"{r['slowest_s'] * 1000:,.0f} | "
                     f"{restarts['p50_s'] * 1000:,.0f} / {restarts['max_s'] * 1000:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="cgroupfs-restart-")
    engine = DockerEngine()  # a short path of its own: unix socket paths are short
    daemon: Daemon | None = None
    results: dict = {"date": datetime.date.today().isoformat(), "kernel": platform.release(),
                     "argv": sys.argv[1:] if argv is None else argv}
    try:
        engine.start()
        engine.build_image()
        daemon = Daemon(base, engine.host)
        daemon.start()
        names, containers = [], {}
        for mib in LIMITS_MIB:
            name = f"cgfs-restart-{os.getpid()}-{mib}"
            engine.cli("run", "-d", "--name", name, "--network", "none", "-m", f"{mib}m", IMAGE, "sleep", "3600")
            names.append(name)
            containers[engine.init_pid(name)] = mib
        wait_until(lambda: count_in_log(daemon, "injected") >= len(names), 60, "the containers were not injected")
        print(f"{len(names)} containers, {len(containers) * READERS_PER_CONTAINER} readers", file=sys.stderr)
        if args.kills:
            results["kills"] = phase(base, containers, lambda: kills_with_store(daemon, args.kills))
            print(f"kills: {results['kills']}", file=sys.stderr)
        if args.reloads:
            results["reloads"] = phase(base, containers, lambda: reloads(daemon, args.reloads))
            print(f"reloads: {results['reloads']}", file=sys.stderr)
        if args.baseline:
            results["baseline"] = phase(base, containers,
                                        lambda: kills_without_store(daemon, engine, names, args.baseline))
            print(f"baseline: {results['baseline']}", file=sys.stderr)
    finally:
        if daemon is not None:
            daemon.stop()
        engine.cleanup()
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
