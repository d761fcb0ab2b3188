"""proc/stat: the container's cpu time per visible cpu, idle measured against its quota.

Per visible cpu: user, nice and system are the cgroup's (v1: cpuacct.usage_all for
that cpu; v2, which has no per-cpu split, or when the quota hides some of the
cpuset: the cgroup's total spread evenly over the visible cpus).  nice is v2's
cpu.stat nice_usec (inside its user_usec, so user = user_usec - nice_usec); v1's
cpuacct has no nice split: 0.

idle, without a quota below the visible cpus' count: host total ticks of that cpu -
the container's busy ticks there (LXCFS's formula), so a line adds up to the host
cpu's elapsed ticks.  With a quota q (in cpus) below the k visible cpus, the
container's capacity is q/k of their elapsed ticks: idle (all lines) = q/k x the
visible cpus' elapsed ticks - the container's busy ticks (never below 0), shared
evenly by the cpu lines; a container running flat out at its quota reads 100% busy
(LXCFS's cpu view scales idle the same way).  iowait, irq, softirq, steal, guest
are 0.  procs_running/procs_blocked are the container's threads in R/D state (the
kernel's procs_blocked counts tasks in iowait, which no per-task file shows; D is
the nearest per-cgroup count); intr, ctxt, btime, processes, softirq are the host's.
"""

from __future__ import annotations

from cgroupfs.cgroups.model import CpuStats
from cgroupfs.files.capacity import cpu_capacity
from cgroupfs.host.stat import CPU_COLUMNS, HostStat

USEC_PER_SEC = 1_000_000


def per_cpu_busy_ticks(cpu: CpuStats, visible: tuple[int, ...], ticks_per_second: int
                       ) -> list[tuple[int, int, int]]:
    """(user, nice, system) ticks for each visible cpu, in visible order."""
    def ticks(usec: int) -> int:
        return usec * ticks_per_second // USEC_PER_SEC

    per_cpu = cpu.per_cpu_usec
    hidden_usage = per_cpu is not None and any(
        (user or system) for number, (user, system) in enumerate(per_cpu) if number not in visible
    )
    if per_cpu is not None and not hidden_usage:
        return [
            (ticks(per_cpu[c][0]), 0, ticks(per_cpu[c][1])) if c < len(per_cpu) else (0, 0, 0)
            for c in visible
        ]
    count = max(1, len(visible))
    nice_usec = min(cpu.nice_usec, cpu.user_usec)
    return [(ticks((cpu.user_usec - nice_usec) // count), ticks(nice_usec // count), ticks(cpu.system_usec // count))
            for _ in visible]


def _line(name: str, values: list[int]) -> str:
    return name + " " + " ".join(str(v) for v in values)


def quota_idle_ticks(host: HostStat, cpu: CpuStats, visible: tuple[int, ...], ticks_per_second: int = 100
                     ) -> int | None:
    """idle of all the lines when measured against the quota (None: not measured so)."""
    return _quota_idle(_rows(host, cpu, visible, ticks_per_second), cpu)


def _rows(host: HostStat, cpu: CpuStats, visible: tuple[int, ...], ticks_per_second: int) -> list[list[int]]:
    """One row of cpu columns per visible cpu, idle = the host cpu's elapsed - busy."""
    columns = len(host.total.values) or len(CPU_COLUMNS)
    busy = per_cpu_busy_ticks(cpu, visible, ticks_per_second)
    rows = []
    for host_cpu, (user, nice, system) in zip(visible, busy):
        host_ticks = host.per_cpu.get(host_cpu)
        elapsed = host_ticks.total if host_ticks else user + nice + system
        # Clamp: an even spread (v2) can attribute more to one cpu than it ran.
        user = min(user, elapsed)
        nice = min(nice, elapsed - user)
        system = min(system, elapsed - user - nice)
        values = [0] * columns
        values[0], values[1], values[2], values[3] = user, nice, system, elapsed - user - nice - system
        rows.append(values)
    return rows


def _quota_idle(rows: list[list[int]], cpu: CpuStats) -> int | None:
    """idle of all the lines against the quota; None without a quota below the rows' count."""
    capacity = cpu_capacity(cpu, len(rows))
    if not rows or capacity >= len(rows):
        return None
    elapsed_total = sum(values[0] + values[1] + values[2] + values[3] for values in rows)
    busy_total = sum(values[0] + values[1] + values[2] for values in rows)
    return max(0, int(elapsed_total * capacity / len(rows)) - busy_total)


def render(
    host: HostStat,
    cpu: CpuStats,
    visible: tuple[int, ...],
    procs_running: int,
    procs_blocked: int,
    ticks_per_second: int = 100,
    idle_floor_ticks: int = 0,
) -> bytes:
    """`idle_floor_ticks`: the quota-measured idle served last for this cgroup; never
    served lower (cgroupfs/rising.py says why)."""
    rows = _rows(host, cpu, visible, ticks_per_second)
    columns = len(host.total.values) or len(CPU_COLUMNS)
    idle_total = _quota_idle(rows, cpu)
    if idle_total is not None:
        idle_total = max(idle_total, idle_floor_ticks)
        for number, values in enumerate(rows):
            values[3] = idle_total // len(rows) + (number < idle_total % len(rows))
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
