"""I/O for the host's files: opened once, re-read with pread.

Opening every file once, at construction, and re-reading it with pread(offset 0)
is faster than open/read/close per request and means a later mount covering one
of these paths (for example one of our own files bind-mounted over /proc/meminfo
in this namespace) can never route the daemon's reads through its own FUSE mount,
where a single-threaded loop would deadlock on itself.
"""

from __future__ import annotations

import os
import threading

from cgroupfs.cgroups.files import parse_cpu_list
from cgroupfs.errors import ParseError
from cgroupfs.host.cpuinfo import HostCpuinfo, parse_cpuinfo
from cgroupfs.host.diskstats import HostDiskstats, parse_diskstats
from cgroupfs.host.meminfo import HostMeminfo, parse_meminfo
from cgroupfs.host.stat import HostStat, parse_stat

# name -> path relative to the root (proc_root or sys_root)
PROC_FILES = ("meminfo", "cpuinfo", "stat", "diskstats", "uptime", "loadavg", "swaps")
CPU_ONLINE = "devices/system/cpu/online"

_CHUNK = 256 * 1024


class HostReader:
    def __init__(self, proc_root: str = "/proc", sys_root: str = "/sys"):
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        for name in PROC_FILES:
            self._fds[name] = os.open(os.path.join(proc_root, name), os.O_RDONLY | os.O_CLOEXEC)
        self._fds["online"] = os.open(os.path.join(sys_root, CPU_ONLINE), os.O_RDONLY | os.O_CLOEXEC)

    def raw(self, name: str) -> bytes:
        """The current content of a host file: one of PROC_FILES or "online"."""
        fd = self._fds[name]
        chunks = []
        offset = 0
        with self._lock:  # seq_file keeps one position per open file
            while True:
                chunk = os.pread(fd, _CHUNK, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
        return b"".join(chunks)

    def _text(self, name: str) -> str:
        try:
            return self.raw(name).decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(f"host {name}: not ASCII") from None

    def meminfo(self) -> HostMeminfo:
        return parse_meminfo(self._text("meminfo"))

    def cpuinfo(self) -> HostCpuinfo:
        return parse_cpuinfo(self.raw("cpuinfo").decode("utf-8", "replace"))

    def stat(self) -> HostStat:
        return parse_stat(self._text("stat"))

    def diskstats(self) -> HostDiskstats:
        return parse_diskstats(self._text("diskstats"))

    def online_cpus(self) -> tuple[int, ...]:
        return parse_cpu_list(self._text("online"))
