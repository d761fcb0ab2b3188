"""proc/loadavg: the container's 1/5/15-minute load, `a b c running/total last_pid`.

The averages are the kernel's exponentially damped fixed-point averages of the
number of the cgroup's tasks in R or D state, sampled every 5 s
(kernel/sched/loadavg.c: FSHIFT 11, EXP_1 1884, EXP_5 2014, EXP_15 2037); the
daemon's sampler keeps them, this module holds the arithmetic and the format.
"""

from __future__ import annotations

FSHIFT = 11
FIXED_1 = 1 << FSHIFT
EXP_1, EXP_5, EXP_15 = 1884, 2014, 2037
SAMPLE_INTERVAL_S = 5.0


def calc_load(load: int, exp: int, active: int) -> int:
    """One step of the kernel's calc_load() for `active` tasks (fixed point)."""
    active_fixed = active * FIXED_1
    new = load * exp + active_fixed * (FIXED_1 - exp)
    if active_fixed >= load:
        new += FIXED_1 - 1  # round up while rising, like the kernel
    return new // FIXED_1


def step(loads: tuple[int, int, int], active: int) -> tuple[int, int, int]:
    return (
        calc_load(loads[0], EXP_1, active),
        calc_load(loads[1], EXP_5, active),
        calc_load(loads[2], EXP_15, active),
    )


def _format_fixed(load: int) -> str:
    # The kernel's LOAD_INT / LOAD_FRAC with rounding to two decimals.
    load += FIXED_1 // 200
    return f"{load >> FSHIFT}.{((load & (FIXED_1 - 1)) * 100) >> FSHIFT:02d}"


def render(loads: tuple[int, int, int], running: int, total: int, last_pid: int) -> bytes:
    averages = " ".join(_format_fixed(load) for load in loads)
    return f"{averages} {running}/{total} {last_pid}\n".encode()
