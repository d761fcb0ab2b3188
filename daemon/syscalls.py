"""The system calls Python's os module lacks: one libc handle, one table of numbers.

The mount API (open_tree, move_mount, mount_setattr; Linux >= 5.2/5.12) has no libc
wrapper in the glibc versions we support, so it goes through syscall(2) by number.
Functions used in a forked child or on the FUSE hot path return 0 or an errno
instead of raising; the others raise OSError like the os module does.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

# From the kernel's syscall tables (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h).  Calls added since 5.1 (>= 424) have one
# number on every architecture.
_NUMBERS = {
    "x86_64": {"tgkill": 234, "open_tree": 428, "move_mount": 429, "mount_setattr": 442},
    "aarch64": {"tgkill": 131, "open_tree": 428, "move_mount": 429, "mount_setattr": 442},
}
_SYS = _NUMBERS.get(os.uname().machine, {})
# tgkill is the hot one (every FUSE open); look its number up once.
_SYS_TGKILL = _SYS.get("tgkill")

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_BENEATH = 0x200  # kernel >= 6.5
MOUNT_ATTR_RDONLY = 0x1
CLONE_NEWNS = 0x20000
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1


class _MountAttr(ctypes.Structure):  # struct mount_attr, include/uapi/linux/mount.h
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _errno() -> int:
    return ctypes.get_errno() or errno.EIO


def _number(name: str) -> int:
    number = _SYS.get(name)
    if number is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number for {os.uname().machine}")
    return number


def open_tree_clone_readonly(path: str) -> int:
    """A detached, read-only copy of the mount of `path`, as a close-on-exec fd."""
    encoded = os.fsencode(path)
    fd = _libc.syscall(ctypes.c_long(_number("open_tree")), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(encoded),
                       ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC))
    if fd < 0:
        err = _errno()
        raise OSError(err, f"open_tree: {os.strerror(err)}", path)
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    if _libc.syscall(ctypes.c_long(_number("mount_setattr")), ctypes.c_int(fd), ctypes.c_char_p(b""),
                     ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) < 0:
        err = _errno()
        os.close(fd)
        raise OSError(err, f"mount_setattr: {os.strerror(err)}", path)
    return fd


def move_mount(fd: int, target: bytes, flags: int = 0) -> int:
    """Attach the detached mount `fd` at `target`: 0 or an errno."""
    number = _SYS.get("move_mount")
    if number is None:
        return errno.ENOSYS
    if _libc.syscall(ctypes.c_long(number), ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | flags)) < 0:
        return _errno()
    return 0


def mount_fuse(source: str, target: str, subtype: str, flags: int, options: str) -> int:
    """mount(2) of a FUSE connection ("fuse.<subtype>"): 0 or an errno."""
    result = _libc.mount(source.encode(), os.fsencode(target), f"fuse.{subtype}".encode(), flags, options.encode())
    return _errno() if result != 0 else 0


def mount_filesystem(source: str, target: str, fstype: str, flags: int = 0, options: str = "") -> int:
    """mount(2) of a filesystem that needs no device (fusectl): 0 or an errno."""
    result = _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, options.encode())
    return _errno() if result != 0 else 0


def detach(target: bytes) -> int:
    """umount2(target, MNT_DETACH), a lazy unmount: 0 or an errno."""
    return _errno() if _libc.umount2(target, MNT_DETACH) != 0 else 0


def setns(fd: int, nstype: int) -> int:
    """Enter the namespace `fd` (a mount namespace needs a single-threaded caller): 0 or an errno."""
    return _errno() if _libc.setns(fd, nstype) != 0 else 0


def set_parent_death_signal(signal_number: int) -> int:
    """Have the kernel send `signal_number` to this process when its parent dies: 0 or an errno."""
    return _errno() if _libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0 else 0


def thread_of(tgid: int, tid: int) -> bool | None:
    """Whether thread `tid` belongs to process `tgid`; None where tgkill's number is unknown.

    tgkill(tgid, tid, 0) succeeds only for a thread of that process: the same
    answer as /proc/<tgid>/task/<tid> existing, at ~1 µs instead of ~5 µs (a
    procfs path walk), measured by benchmarks/reads.py.
    """
    if _SYS_TGKILL is None:
        return None
    return _libc.syscall(_SYS_TGKILL, tgid, tid, 0) == 0
