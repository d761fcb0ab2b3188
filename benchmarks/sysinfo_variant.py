"""The daemon with a cheaper sysinfo(2) answer, to measure what such a change would buy.

    CGROUPFS_BENCH_SYSINFO_VARIANT=VARIANT python -m benchmarks.sysinfo_variant daemon [ARGS]

(the arguments are `cgroupfs daemon`'s; the variant is in the environment because
testbed.daemon_process starts `python -m MODULE daemon ...`).  VARIANT is one of:
- `struct-cache`: the struct kept per (cgroup, pid namespace) for the render cache's
  interval (100 ms), reused while the cgroup's memory limit files read the same: per
  call one pid -> cgroup lookup (cached), one limits check and one readlink, instead
  of the three cached texts the daemon takes now (each with its own lookup, limits
  check and cache key);
- `constant`: one struct for every caller, computed once: the cost of the
  notification round trip itself in Python (take the call, open /proc/PID/mem,
  check the id, write, answer).

Only this process's SysinfoResponder.sysinfo_for changes; everything else is
`cgroupfs daemon`.
"""

from __future__ import annotations

import os
import sys
import time

from cgroupfs.procs import pid_namespace
from cgroupfs.sysinfo import Sysinfo
from cgroupfs_daemon import cli
from cgroupfs_daemon.sysinfo_responder import SysinfoResponder

VARIANTS = ("struct-cache", "constant")
VARIANT_SETTING = "CGROUPFS_BENCH_SYSINFO_VARIANT"
CACHE_INTERVAL_S = 0.1  # the daemon's default --cache-ttl-ms


def struct_cache() -> None:
    shipped = SysinfoResponder.sysinfo_for
    cache: dict[tuple, tuple[tuple, float, Sysinfo]] = {}  # unbounded: a benchmark's few containers

    def sysinfo_for(self: SysinfoResponder, pid: int) -> Sysinfo:
        now = time.monotonic()
        paths = self.server.resolve(pid, now)
        key = (paths.key(), pid_namespace(pid))
        limits = self.server.limits_of("proc/meminfo", paths)
        cached = cache.get(key)
        if cached is not None and cached[0] == limits and now - cached[1] < CACHE_INTERVAL_S:
            return cached[2]
        values = shipped(self, pid)
        cache[key] = (limits, now, values)
        return values

    SysinfoResponder.sysinfo_for = sysinfo_for  # type: ignore[method-assign]


def constant() -> None:
    shipped = SysinfoResponder.sysinfo_for
    first: list[Sysinfo] = []

    def sysinfo_for(self: SysinfoResponder, pid: int) -> Sysinfo:
        if not first:
            first.append(shipped(self, pid))
        return first[0]

    SysinfoResponder.sysinfo_for = sysinfo_for  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    variant = os.environ.get(VARIANT_SETTING, "")
    if variant not in VARIANTS:
        print(f"{VARIANT_SETTING} must be one of {', '.join(VARIANTS)}, not {variant!r}", file=sys.stderr)
        return 2
    {"struct-cache": struct_cache, "constant": constant}[variant]()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
