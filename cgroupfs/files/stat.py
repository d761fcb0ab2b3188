"""proc/stat: the container's cpu time per visible cpu, idle so each line adds up.

Per visible cpu: user and system are the cgroup's (v1: cpuacct.usage_all for that
cpu; v2, which has no per-cpu split, or when the quota hides some of the cpuset:
the cgroup's total spread evenly over the visible cpus).  idle = host total ticks
of that cpu - container user - container system (LXCFS's formula), so
user + system + idle equals the host cpu's elapsed ticks.  nice, iowait, irq,
softirq, steal, guest are 0.  procs_running/procs_blocked are the container's
tasks in R/D state; intr, ctxt, btime, processes, softirq are the host's.
"""

from __future__ import annotations

from cgroupfs.cgroups.model import CpuStats
from cgroupfs.host.stat import CPU_COLUMNS, HostStat

USEC_PER_SEC = 1_000_000


def per_cpu_busy_ticks(cpu: CpuStats, visible: tuple[int, ...], ticks_per_second: int) -> list[tuple[int, int]]:
    """(user, system) ticks for each visible cpu, in visible order."""
    def ticks(usec: int) -> int:
        return usec * ticks_per_second // USEC_PER_SEC

    per_cpu = cpu.per_cpu_usec
    hidden_usage = per_cpu is not None and any(
        (user or system) for number, (user, system) in enumerate(per_cpu) if number not in visible
    )
    if per_cpu is not None and not hidden_usage:
        return [
            (ticks(per_cpu[c][0]), ticks(per_cpu[c][1])) if c < len(per_cpu) else (0, 0)
            for c in visible
        ]
    count = max(1, len(visible))
    return [(ticks(cpu.user_usec // count), ticks(cpu.system_usec // count)) for _ in visible]


def _line(name: str, values: list[int]) -> str:
    return name + " " + " ".join(str(v) for v in values)


def render(
    host: HostStat,
    cpu: CpuStats,
    visible: tuple[int, ...],
    procs_running: int,
    procs_blocked: int,
    ticks_per_second: int = 100,
) -> bytes:
    columns = len(host.total.values) or len(CPU_COLUMNS)
    busy = per_cpu_busy_ticks(cpu, visible, ticks_per_second)
    rows = []
    for host_cpu, (user, system) in zip(visible, busy):
        host_ticks = host.per_cpu.get(host_cpu)
        elapsed = host_ticks.total if host_ticks else user + system
        # Clamp: an even spread (v2) can attribute more to one cpu than it ran.
        user = min(user, elapsed)
        system = min(system, elapsed - user)
        idle = elapsed - user - system
        values = [0] * columns
        values[0], values[2], values[3] = user, system, idle
        rows.append(values)
    total = [sum(column) for column in zip(*rows)] if rows else [0] * columns
    out = [_line("cpu ", total)]  # the kernel prints two spaces after "cpu"
    out += [_line(f"cpu{number}", values) for number, values in zip(visible, rows)]  # kernel ids
    for line in host.other_lines:
        key = line.split(" ", 1)[0]
        if key == "procs_running":
            line = f"procs_running {procs_running}"
        elif key == "procs_blocked":
            line = f"procs_blocked {procs_blocked}"
        out.append(line)
    return ("\n".join(out) + "\n").encode()
