"""Reader processes for the reliability tests: they run inside test cgroups and report JSON."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

from testbed.daemon_process import REPO

PYTHON = sys.executable
MIB = 1 << 20

# Reads `path` in a loop until `stop` exists; reports successes, errnos, the longest
# single call and the errno of every call that took longer than 0.3 s.
LOOP_READER = r"""
import errno, json, os, re, sys, time
path, stop, expect_kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
ok = wrong = 0; errors = {}; longest = 0.0; slow = []; first_error_at = None
while not os.path.exists(stop):
    started = time.monotonic()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        outcome = None
        m = re.search(rb"^MemTotal:\s+(\d+) kB", data, re.M)
        if m and int(m.group(1)) == expect_kb: ok += 1
        else: wrong += 1
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, str(exc.errno))
        errors[outcome] = errors.get(outcome, 0) + 1
        if first_error_at is None: first_error_at = time.time()
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    longest = max(longest, elapsed)
    if elapsed > 0.3: slow.append([round(elapsed, 2), outcome])
print(json.dumps({"ok": ok, "wrong": wrong, "errors": errors, "longest_s": longest, "slow": slow,
                  "first_error_at": first_error_at}))
"""

# `n` reads of `path`; latency percentiles in ms.
LATENCY_READER = r"""
import json, os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
samples = []
for _ in range(n):
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 65536): pass
    os.close(fd)
    samples.append((time.perf_counter() - started) * 1000)
samples.sort()
print(json.dumps({"p50": samples[n // 2], "p99": samples[int(n * 0.99)], "max": samples[-1], "n": n}))
"""


def env() -> dict:
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def memtotal_kb(text: str | bytes) -> int:
    if isinstance(text, bytes):
        text = text.decode()
    return int(re.search(r"^MemTotal:\s+(\d+) kB", text, re.M).group(1))


def latency(cgroup, path: str, n: int = 2000) -> dict:
    result = cgroup.run([PYTHON, "-c", LATENCY_READER, path, str(n)], timeout=300, env=env())
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def collect(process: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])
