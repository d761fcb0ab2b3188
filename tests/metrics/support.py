"""Helpers for the metrics tests: real cgroups, scrapes, promtool, CI policy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from cgroupfs.cgroups.hierarchy import Hierarchy, discover
from testbed.cgroups import kill_members
from testbed.metrics import free_port, ids_in, samples, scrape  # noqa: F401 (re-exported to the metrics tests)
from testbed.timing import wait_for  # noqa: F401 (re-exported to the metrics tests)
from tests.conftest import require  # noqa: F401 (re-exported to the metrics tests)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
MIB = 1 << 20


def require_root_cgroups() -> Hierarchy:
    require(os.geteuid() == 0, "needs root to create cgroups")
    hierarchy = discover()
    require(hierarchy.version_of("memory") is not None, "needs the memory cgroup controller")
    return hierarchy


def values(exposition: str, metric: str, /, **labels: str) -> list[float]:
    """Values of the samples named `metric` whose labels include `labels`."""
    wanted = set(labels.items())
    return [value for (sample, label_set), value in samples(exposition).items()
            if sample == metric and wanted <= label_set]


def promtool_check(exposition: str) -> subprocess.CompletedProcess:
    require(os.access(PROMTOOL, os.X_OK), "promtool missing (Debian package prometheus)")
    return subprocess.run([PROMTOOL, "check", "metrics"], input=exposition.encode(),
                          capture_output=True, timeout=60)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class LiveCgroup:
    """A real cgroup with the same path in every hierarchy that counts what metrics read.

    v1: memory, cpu, cpuacct, blkio, pids (each its own mount or co-mounted);
    v2: one directory with memory, cpu, io, pids enabled from the root down.
    """

    CONTROLLERS = ("memory", "cpu", "cpuacct", "blkio", "io", "pids")

    def __init__(self, name: str, hierarchy: Hierarchy | None = None):
        self.hierarchy = hierarchy or discover()
        self.path = "/" + name.strip("/")
        self.directories: list[str] = []
        self._v2_dir: str | None = None
        try:
            for controller in self.CONTROLLERS:
                version = self.hierarchy.version_of(controller)
                if version == 1:
                    self._make(os.path.join(self.hierarchy.v1[controller].directory, name))
                elif version == 2:
                    self._make_v2()
        except BaseException:
            self.remove()
            raise

    def _make(self, directory: str) -> None:
        if directory not in self.directories:
            os.makedirs(directory, exist_ok=True)
            self.directories.append(directory)

    def _make_v2(self) -> None:
        root = self.hierarchy.v2.directory
        wanted = {"memory", "cpu", "io", "pids"} & set(self.hierarchy.v2_controllers)
        with open(os.path.join(root, "cgroup.subtree_control")) as f:
            missing = wanted - set(f.read().split())
        if missing:
            _write(os.path.join(root, "cgroup.subtree_control"), " ".join("+" + c for c in sorted(missing)))
        v2_dir = self._v2_dir = os.path.join(root, self.path.lstrip("/"))
        self._make(v2_dir)

    def _file(self, controller: str, v1_name: str, v2_name: str) -> str:
        if self.hierarchy.version_of(controller) == 1:
            return os.path.join(self.hierarchy.v1[controller].directory, self.path.lstrip("/"), v1_name)
        assert self._v2_dir is not None
        return os.path.join(self._v2_dir, v2_name)

    def set_memory_limit(self, limit_bytes: int) -> None:
        _write(self._file("memory", "memory.limit_in_bytes", "memory.max"), str(limit_bytes))

    def forbid_swap(self, memory_limit_bytes: int) -> None:
        """So the memory limit ends in an OOM kill rather than in swap (memsw >= memory on v1)."""
        if self.hierarchy.version_of("memory") == 1:
            path = self._file("memory", "memory.memsw.limit_in_bytes", "")
            if os.path.exists(path):
                _write(path, str(memory_limit_bytes))
        elif os.path.exists(self._file("memory", "", "memory.swap.max")):
            _write(self._file("memory", "", "memory.swap.max"), "0")

    def set_cpu_quota(self, quota_usec: int, period_usec: int = 100_000) -> None:
        if self.hierarchy.version_of("cpu") == 1:
            _write(self._file("cpu", "cpu.cfs_period_us", ""), str(period_usec))
            _write(self._file("cpu", "cpu.cfs_quota_us", ""), str(quota_usec))
        else:
            _write(self._file("cpu", "", "cpu.max"), f"{quota_usec} {period_usec}")

    def popen(self, args, **kwargs) -> subprocess.Popen:
        """Start `args` inside the cgroup (it joins before exec, so all it does is counted)."""
        directories = list(self.directories)

        def enter():
            for directory in directories:
                with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        return subprocess.Popen(args, preexec_fn=enter, **kwargs)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.directories:
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    found.update(int(p) for p in f.read().split())
            except OSError:
                pass
        return found

    def remove(self) -> None:
        """Kill what the test started inside, then rmdir every directory (retrying while it drains)."""
        kill_members(self.pids, attempts=100)
        for directory in reversed(self.directories):
            for _ in range(100):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.directories = [d for d in self.directories if os.path.isdir(d)]


ALLOCATE_20_MIB = (
    "import sys\n"
    "data = b'\\x01' * (20 << 20)  # written, so every page is charged\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.read()\n"
)
# Spins until it has used `seconds` of CPU, however busy the host is.
# Waits for a line on stdin, then allocates far past a 32 MiB limit.
ALLOCATE_ON_REQUEST = (
    "import sys\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.readline()\n"
    "data = b'\\x01' * (128 << 20)\n"
)
BUSY_LOOP = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end:\n    pass\n"
SLEEP_FOREVER = "import sys\nsys.stdin.read()\n"


def start_in(cgroup: LiveCgroup, code: str, wait_ready: bool = False) -> subprocess.Popen:
    process = cgroup.popen([PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if wait_ready:
        assert process.stdout.readline() == b"ready\n"
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        if stream:
            stream.close()
