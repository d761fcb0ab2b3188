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
from cgroupfs.host.vmstat import HostVmstat, parse_vmstat

# name -> path relative to the root (proc_root or sys_root)
PROC_FILES = ("meminfo", "cpuinfo", "stat", "diskstats", "uptime", "loadavg", "swaps", "vmstat")
# Files some kernels lack (no PSI: psi=0 or CONFIG_PSI off): raw() raises
# FileNotFoundError for them, which readers see as ENOENT.
OPTIONAL_PROC_FILES = ("pressure/cpu", "pressure/memory", "pressure/io")
CPU_DIRECTORY = "devices/system/cpu"
CPU_ONLINE = f"{CPU_DIRECTORY}/online"
# sys files by name (the name is the last part of the path)
SYS_FILES = (CPU_ONLINE, f"{CPU_DIRECTORY}/possible", f"{CPU_DIRECTORY}/present")

_CHUNK = 256 * 1024


class HostReader:
    def __init__(self, proc_root: str = "/proc", sys_root: str = "/sys"):
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        for name in PROC_FILES:
            self._fds[name] = os.open(os.path.join(proc_root, name), os.O_RDONLY | os.O_CLOEXEC)
        for name in OPTIONAL_PROC_FILES:
            try:
                self._fds[name] = os.open(os.path.join(proc_root, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
        for path in SYS_FILES:
            self._fds[os.path.basename(path)] = os.open(os.path.join(sys_root, path), os.O_RDONLY | os.O_CLOEXEC)
        # The cpu directory, whose other entries the cpu view passes through (openat
        # from here: a mount made later over the path can never be read instead).
        self.cpu_directory_fd = os.open(os.path.join(sys_root, CPU_DIRECTORY),
                                        os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in (*self._fds.values(), self.cpu_directory_fd):
            os.close(fd)
        self._fds.clear()
        self.cpu_directory_fd = -1

    def __del__(self) -> None:
        # A reader dropped without close() (a library user's, a test's): sixteen
        # descriptors each would soon exhaust a process's limit.
        if getattr(self, "cpu_directory_fd", -1) >= 0:
            self.close()

    def raw(self, name: str) -> bytes:
        """The current content of a host file: one of PROC_FILES, OPTIONAL_PROC_FILES
        or the base name of one of SYS_FILES ("online")."""
        fd = self._fds.get(name)
        if fd is None:
            raise FileNotFoundError(f"the host has no {name}")
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

    def vmstat(self) -> HostVmstat:
        return parse_vmstat(self._text("vmstat"))

    def online_cpus(self) -> tuple[int, ...]:
        return parse_cpu_list(self._text("online"))
