"""proc/pressure/{cpu,memory,io}: the cgroup's own PSI, in /proc/pressure's format.

The cgroup's cpu.pressure / memory.pressure / io.pressure (cgroup v2; on a hybrid
host the unified hierarchy's cgroup) line for line: `some avg10=.. avg60=..
avg300=.. total=..` and the `full` line where the cgroup's file has it.  They are
the kernel's own numbers for the cgroup's tasks (kernel/sched/psi.c keeps them per
cgroup); only the source changes.
"""

from __future__ import annotations

from cgroupfs.cgroups.model import PressureStats


def _line(kind: str, averages: tuple[float, float, float], total_usec: int) -> str:
    avg10, avg60, avg300 = averages
    return f"{kind} avg10={avg10:.2f} avg60={avg60:.2f} avg300={avg300:.2f} total={total_usec}\n"


def render(pressure: PressureStats) -> bytes:
    out = ""
    if pressure.some_total_usec is not None:
        out += _line("some", pressure.some_averages or (0.0, 0.0, 0.0), pressure.some_total_usec)
    if pressure.full_total_usec is not None:
        out += _line("full", pressure.full_averages or (0.0, 0.0, 0.0), pressure.full_total_usec)
    return out.encode()
