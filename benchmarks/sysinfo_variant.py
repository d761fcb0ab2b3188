"""The daemon with a cheaper sysinfo(2) answer, to measure what such a change would buy.

    CGROUPFS_BENCH_SYSINFO_VARIANT=VARIANT python -m benchmarks.sysinfo_variant daemon [ARGS]

(the arguments are `cgroupfs daemon`'s; the variant is in the environment because
testbed.daemon_process starts `python -m MODULE daemon ...`).  VARIANT is one of:
- `uncached`: the struct built for every call from the three cached texts (meminfo,
  uptime, loadavg: each its own pid -> cgroup lookup, limits check and cache key), as
  the first version did, instead of kept per (listener, cgroup) for the interval;
- `constant`: one struct for every caller, computed once: the cost of the
  notification round trip itself in Python (take the call, open /proc/PID/mem,
  check the id, write, answer).

Only this process's SysinfoResponder._packed_for changes; everything else is
`cgroupfs daemon`.
"""

from __future__ import annotations

import os
import sys

from cgroupfs_daemon import cli
from cgroupfs_daemon.sysinfo_responder import SysinfoResponder

VARIANTS = ("uncached", "constant")
VARIANT_SETTING = "CGROUPFS_BENCH_SYSINFO_VARIANT"


def uncached() -> None:
    def packed_for(self: SysinfoResponder, listener: int, pid: int) -> bytes:
        return self.sysinfo_for(pid).pack()

    SysinfoResponder._packed_for = packed_for  # type: ignore[method-assign]


def constant() -> None:
    shipped = SysinfoResponder._packed_for
    first: list[bytes] = []

    def packed_for(self: SysinfoResponder, listener: int, pid: int) -> bytes:
        if not first:
            first.append(shipped(self, listener, pid))
        return first[0]

    SysinfoResponder._packed_for = packed_for  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    variant = os.environ.get(VARIANT_SETTING, "")
    if variant not in VARIANTS:
        print(f"{VARIANT_SETTING} must be one of {', '.join(VARIANTS)}, not {variant!r}", file=sys.stderr)
        return 2
    {"uncached": uncached, "constant": constant}[variant]()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
