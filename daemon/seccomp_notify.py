"""seccomp user notification (seccomp_unotify(2)): take a trapped system call, answer it.

A container whose seccomp filter says SCMP_ACT_NOTIFY for a call stops in that
call until whoever holds the filter's listener descriptor answers: with a result
(`answer`), or by letting the kernel run the call itself (`let_kernel_run`).  The
descriptor comes from the OCI runtime (daemon/sysinfo_responder.py).

The caller's memory is written through /proc/<pid>/mem opened *before* the
notification is checked still valid (the order seccomp_unotify(2) prescribes): the
open descriptor is bound to that process's memory, so a caller that died and whose
pid was reused is never written to.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

# include/uapi/linux/seccomp.h: _IOWR('!', 0, struct seccomp_notif),
# _IOWR('!', 1, struct seccomp_notif_resp), _IOW('!', 2, __u64).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE (Linux >= 5.5)

# struct seccomp_notif: u64 id; u32 pid; u32 flags; struct seccomp_data {int nr;
# u32 arch; u64 instruction_pointer; u64 args[6]}.  The kernel wants it zeroed.
_NOTIFICATION = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp: u64 id; s64 val; s32 error; u32 flags.
_RESPONSE = struct.Struct("=QqiI")
_ID = struct.Struct("=Q")

# AUDIT_ARCH_* of the 64-bit ABIs whose struct sysinfo is cgroupfs.sysinfo.LAYOUT,
# with sysinfo's number there (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h).  A call from another ABI (i386, x32) is left
# to the kernel.
SYSINFO_CALLS = {
    "x86_64": (0xC000003E, 99),
    "aarch64": (0xC00000B7, 179),
}
X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class Notification:
    id: int
    pid: int      # in the pid namespace of the process that received it: ours, the host's
    nr: int
    arch: int
    args: tuple[int, ...]


def receive(listener: int) -> Notification | None:
    """The next trapped call on `listener`; None when its caller was killed first (ENOENT)."""
    buffer = bytearray(_NOTIFICATION.size)
    try:
        fcntl.ioctl(listener, NOTIF_RECV, buffer, True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    id_, pid, _flags, nr, arch, _ip, *args = _NOTIFICATION.unpack(buffer)
    return Notification(id_, pid, nr, arch, tuple(args))


def still_waiting(listener: int, notification_id: int) -> bool:
    """Whether the caller still waits for this answer (it was not killed meanwhile)."""
    try:
        fcntl.ioctl(listener, NOTIF_ID_VALID, _ID.pack(notification_id))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def _send(listener: int, notification_id: int, value: int, error: int, flags: int) -> bool:
    """False when the caller is gone (it was killed: nobody to answer)."""
    try:
        fcntl.ioctl(listener, NOTIF_SEND, _RESPONSE.pack(notification_id, value, error, flags))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def answer(listener: int, notification_id: int, value: int = 0) -> bool:
    """The call returns `value` (its effects already done by us)."""
    return _send(listener, notification_id, value, 0, 0)


def let_kernel_run(listener: int, notification_id: int) -> bool:
    """The kernel runs the call as if it had not been trapped: its own result, its own errno."""
    return _send(listener, notification_id, 0, 0, FLAG_CONTINUE)


def write_to_caller(listener: int, notification: Notification, address: int, data: bytes) -> bool:
    """Write `data` at `address` in the caller's memory, only if the caller is the process
    that made the call.  False when it is gone; OSError when the address is bad."""
    try:
        memory = os.open(f"/proc/{notification.pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not still_waiting(listener, notification.id):
            return False  # the pid may belong to another process by now: never write
        if os.pwrite(memory, data, address) != len(data):
            raise OSError(errno.EFAULT, "short write to the caller's memory")
        return True
    finally:
        os.close(memory)
