"""Facts about processes from /proc/<pid>: state, start time, pid namespace.

Every function takes `proc_root` so tests can run on fixture trees.  A process
that vanished between two reads raises ProcessGone, nothing else (psutil's
discipline: ENOENT/ESRCH are the normal way a process ends, not an error).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cgroupfs.errors import ParseError, ProcessGone


@dataclass(frozen=True)
class TaskStat:
    pid: int
    state: str              # R, S, D, Z, T, I, ...
    start_time_ticks: int   # field 22: clock ticks after boot


def parse_task_stat(text: str) -> TaskStat:
    # The command name (field 2) may contain spaces and parentheses: split at the last ')'.
    head, paren, tail = text.rpartition(")")
    pid_text = head.partition(" ")[0]
    fields = tail.split()
    if not paren or len(fields) < 20 or not (pid_text.isascii() and pid_text.isdigit()):
        raise ParseError(f"stat: malformed {text[:80]!r}")
    try:
        return TaskStat(pid=int(pid_text), state=fields[0], start_time_ticks=int(fields[19]))
    except ValueError:
        raise ParseError(f"stat: malformed {text[:80]!r}") from None


def _read(path: str, pid: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        raise ProcessGone(pid) from None


def read_task_stat(pid: int, proc_root: str = "/proc") -> TaskStat:
    """A process's stat.  For a thread id use read_thread_stat: /proc/<tid>/stat is the
    whole-process view, which the kernel computes by walking every thread of the process."""
    text = _read(f"{proc_root}/{pid}/stat", pid)
    if not text:
        raise ProcessGone(pid)
    return parse_task_stat(text)


def read_thread_stat(tid: int, proc_root: str = "/proc") -> TaskStat:
    """One thread's stat, from /proc/<tid>/task/<tid>/stat: constant cost per thread.

    (/proc/<tid>/stat sums times over the whole thread group, so reading it for each
    of N threads of one process costs N^2 in the kernel: 3 s for 5,000 threads.)
    A tree without task/ directories (a fixture) is read at /proc/<tid>/stat.
    """
    try:
        text = _read(f"{proc_root}/{tid}/task/{tid}/stat", tid)
    except ProcessGone:
        return read_task_stat(tid, proc_root)
    if not text:
        raise ProcessGone(tid)
    return parse_task_stat(text)


def parse_nspid(status_text: str) -> tuple[int, ...]:
    """NSpid from /proc/<pid>/status: the pid in each nested namespace, outermost first."""
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            pids = line.split()[1:]
            if not pids or not all(p.isascii() and p.isdigit() for p in pids):
                raise ParseError(f"status: malformed NSpid line {line[:80]!r}")
            return tuple(int(p) for p in pids)
    raise ParseError("status: no NSpid line")


def read_nspid(pid: int, proc_root: str = "/proc") -> tuple[int, ...]:
    return parse_nspid(_read(f"{proc_root}/{pid}/status", pid))


def pid_namespace(pid: int, proc_root: str = "/proc") -> str:
    """An identity of the process's pid namespace, e.g. 'pid:[4026531836]'."""
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None


def find_namespace_init(pid: int, candidates: list[int], proc_root: str = "/proc") -> int | None:
    """The host pid of pid 1 in `pid`'s pid namespace.

    `candidates` are tried first (the reader's cgroup, where a container's init
    almost always is); then every process on the host.  None when not found.
    """
    namespace = pid_namespace(pid, proc_root)
    seen: set[int] = set()
    for source in (candidates, _all_pids(proc_root)):
        for candidate in source:
            if candidate in seen:
                continue
            seen.add(candidate)
            try:
                if pid_namespace(candidate, proc_root) != namespace:
                    continue
                if read_nspid(candidate, proc_root)[-1] == 1:
                    return candidate
            except (ProcessGone, ParseError, PermissionError):
                continue
    return None


def _all_pids(proc_root: str):
    for name in os.listdir(proc_root):
        if name.isdigit():
            yield int(name)
