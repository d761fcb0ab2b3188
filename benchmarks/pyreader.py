"""The Python twin of reader.c (same arguments, same output), for `--reader python`.

A standalone script (no imports from the project): the harness runs it as
`python pyreader.py loop PATH T0_NS T1_NS T2_NS`.  Kept to compare how noisy and
how costly each kind of reader is; reader.c is the default.
"""

import os
import resource
import sys
import time

FINE_NS, FINE_BUCKETS = 100, 100_000
COARSE_NS, COARSE_BUCKETS = 10_000, 100_000


def read_once(path: str, open=os.open, read=os.read, close=os.close, flags=os.O_RDONLY | os.O_CLOEXEC) -> int:
    fd = open(path, flags)
    total = 0
    try:
        while True:
            chunk = read(fd, 65536)
            if not chunk:
                return total
            total += len(chunk)
    finally:
        close(fd)


def run_loop(path: str, t0: int, t1: int, t2: int) -> None:
    clock = time.monotonic_ns  # CLOCK_MONOTONIC, like reader.c
    sleep_until(t0)
    latencies: list[int] = []
    append = latencies.append
    reads = errors = total_bytes = reads_all = 0
    cpu_start = None
    while True:
        before = clock()
        if before >= t2:
            break
        if cpu_start is None and before >= t1:
            cpu_start = cpu_seconds()
            before = clock()
        try:
            got = read_once(path)
        except OSError:
            got = -1
        after = clock()
        reads_all += 1
        if before < t1:
            continue
        if got < 0:
            errors += 1
            continue
        reads += 1
        total_bytes += got
        append(after - before)
    cpu_us = 0 if cpu_start is None else int((cpu_seconds() - cpu_start) * 1e6)
    histogram: dict[int, int] = {}
    for ns in latencies:
        if ns < FINE_NS * FINE_BUCKETS:
            lower = ns // FINE_NS * FINE_NS
        elif ns < COARSE_NS * COARSE_BUCKETS:
            lower = ns // COARSE_NS * COARSE_NS
        else:
            lower = COARSE_NS * COARSE_BUCKETS
        histogram[lower] = histogram.get(lower, 0) + 1
    lines = [f"reads {reads}", f"errors {errors}", f"bytes {total_bytes}", f"cpu_us {cpu_us}",
             f"reads_all {reads_all}"]
    lines += [f"hist {lower} {count}" for lower, count in sorted(histogram.items())]
    sys.stdout.write("\n".join(lines) + "\n")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sleep_until(t_ns: int) -> None:
    delay = t_ns - time.monotonic_ns()
    if delay > 0:
        time.sleep(delay / 1e9)


def run_rounds(t0: int, rounds: int, pause_ms: int, paths: list[str]) -> None:
    sleep_until(t0)
    reads = errors = 0
    for round_index in range(rounds):
        if round_index:
            time.sleep(pause_ms / 1000)
        for path in paths:
            try:
                read_once(path)
                reads += 1
            except OSError:
                errors += 1
    print(f"reads {reads}\nerrors {errors}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "loop":
        run_loop(sys.argv[2], *(int(a) for a in sys.argv[3:6]))
    elif len(sys.argv) >= 6 and sys.argv[1] == "rounds":
        run_rounds(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit("usage: pyreader.py loop PATH T0_NS T1_NS T2_NS | rounds T0_NS N PAUSE_MS PATH...")
