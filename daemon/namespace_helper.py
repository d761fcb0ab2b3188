"""The namespace helper: a single-threaded process that does the setns() half of injection.

setns() into a mount namespace needs a single-threaded caller (EINVAL otherwise), so
that work runs in a forked child.  Forking the daemon itself would copy a process
that runs the FUSE loop, the metrics server, the sampler and the watcher's pool into
a child that then runs Python: a lock another thread held at that moment (the
import lock, a logging handler's, the allocator's) stays held in the child forever.
So the daemon starts this helper as a program of its own (exec'd, never forked from
the daemon: see inject_runner.py); it has one thread, and forking it is safe.

Protocol, over the SOCK_SEQPACKET socket whose fd is argv[1], one message a request:
  daemon -> helper: JSON {"beneath": bool, "jobs": [[action, target], ...]}, action
    "mount" or "heal", with the fds [reply pipe, mount namespace, one detached
    mount per job] attached (SCM_RIGHTS);
  helper -> reply pipe: "accepted\\n"; then a forked child enters the namespace,
    writes "index outcome errno\\n" per job and exits.  The pipe's end of file
    (every copy closed) ends the reply.
A child that takes longer than CHILD_TIMEOUT_S (a wedged FUSE mount can hang a path
walk) is killed; its missing lines tell the daemon.  The helper exits when the
daemon closes its end of the socket, and its children die with it.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

from cgroupfs_daemon.syscalls import (
    CLONE_NEWNS,
    MOVE_MOUNT_BENEATH,
    detach,
    move_mount,
    set_parent_death_signal,
    setns,
)

ACCEPTED = b"accepted\n"
ACTIONS = ("mount", "heal")
# how long a child may take before it is killed (a wedged FUSE mount can hang a path walk)
CHILD_TIMEOUT_S = 5.0
# Bounds: requests are tiny (eight targets); children at once, beyond which requests
# wait in the socket (the daemon sends at most one per watcher worker).
MAX_REQUEST_BYTES = 65536
MAX_JOBS = 64
MAX_CHILDREN = 16


def encode_request(jobs: list[tuple[str, str]], beneath: bool) -> bytes:
    """The message for jobs [(action, target)]; its fds go with it, see the module docstring."""
    return json.dumps({"beneath": beneath, "jobs": jobs}).encode()


def decode_request(data: bytes, fds: list[int]) -> tuple[list[tuple[str, bytes]], bool]:
    """([(action, target)], beneath); ValueError for anything the daemon would not send."""
    request = json.loads(data)
    jobs, beneath = request["jobs"], request["beneath"]
    if not isinstance(jobs, list) or len(jobs) > MAX_JOBS or len(fds) != 2 + len(jobs):
        raise ValueError(f"{len(fds)} fds for {len(jobs)} jobs")
    decoded = []
    for action, target in jobs:
        if action not in ACTIONS or not isinstance(target, str) or not target.startswith("/"):
            raise ValueError(f"bad job {action!r} {target!r}")
        decoded.append((action, os.fsencode(target)))
    return decoded, bool(beneath)


def run_jobs(namespace_fd: int, jobs: list[tuple[int, bytes, str]], beneath: bool) -> bytes:
    """In the child: enter the namespace, attach each mount; one `index outcome errno` line per job."""
    err = setns(namespace_fd, CLONE_NEWNS)
    if err:
        return "".join(f"{index} failed {err}\n" for index in range(len(jobs))).encode()
    lines = []
    for index, (fd, target, action) in enumerate(jobs):
        if action == "mount":
            err = move_mount(fd, target)
            outcome = "mounted"
        else:  # heal: fresh mount beneath the dead one, then drop the dead one
            err = move_mount(fd, target, MOVE_MOUNT_BENEATH) if beneath else errno.EINVAL
            if err == 0:
                err = detach(target)
            elif err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                # no MOVE_MOUNT_BENEATH (kernel < 6.5): detach first; a short window
                # where readers see the host file, which beats "not connected"
                err = detach(target) or move_mount(fd, target)
            outcome = "healed"
        lines.append(f"{index} {'failed' if err else outcome} {err}\n")
    return "".join(lines).encode()


@dataclass
class _Child:
    pid: int
    exit_fd: int  # read end of a pipe only the child holds open: end of file when it is gone
    deadline: float
    killed: bool = False


def _start_child(control_fd: int, fds: list[int], jobs: list[tuple[str, bytes]], beneath: bool) -> _Child | None:
    """Fork the child for one request; None when the daemon stopped waiting for it."""
    reply_fd, namespace_fd, *mount_fds = fds
    try:
        os.write(reply_fd, ACCEPTED)
    except BrokenPipeError:  # the daemon gave up on this request
        return None
    exit_read, exit_write = os.pipe2(os.O_CLOEXEC)
    helper_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(control_fd)
            os.close(exit_read)
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() == helper_pid:  # else the helper died before prctl
                os.write(reply_fd, run_jobs(namespace_fd, [(fd, target, action) for fd, (action, target)
                                                           in zip(mount_fds, jobs)], beneath))
                code = 0
        finally:
            os._exit(code)
    os.close(exit_write)
    return _Child(pid, exit_read, time.monotonic() + CHILD_TIMEOUT_S)


def serve(control: socket.socket) -> None:
    """Answer requests until the daemon closes its end of `control`."""
    children: dict[int, _Child] = {}  # exit_fd -> child
    while True:
        now = time.monotonic()
        for child in children.values():
            if not child.killed and child.deadline <= now:
                os.kill(child.pid, signal.SIGKILL)  # our own child, by pid
                child.killed = True
        waits = [child.deadline - now for child in children.values() if not child.killed]
        watched: list = list(children)
        if len(children) < MAX_CHILDREN:
            watched.append(control)
        ready, _, _ = select.select(watched, [], [], max(0.0, min(waits)) if waits else None)
        for item in ready:
            if item is control:
                if not _accept(control, children):
                    return
            else:
                child = children.pop(item)
                os.close(item)
                os.waitpid(child.pid, 0)


def _accept(control: socket.socket, children: dict[int, _Child]) -> bool:
    """Take one request from `control`; False when the daemon has closed it."""
    data, fds, flags, _ = socket.recv_fds(control, MAX_REQUEST_BYTES, 2 + MAX_JOBS)
    if not data and not fds:
        return False
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError("request truncated")
        jobs, beneath = decode_request(data, fds)
        child = _start_child(control.fileno(), fds, jobs, beneath)
        if child is not None:
            children[child.exit_fd] = child
    except (ValueError, KeyError, TypeError) as exc:
        # Never sent by the daemon; without "accepted" it replaces this helper.
        print(f"cgroupfs namespace helper: dropped a malformed request: {exc}", file=sys.stderr, flush=True)
    finally:
        for fd in fds:
            os.close(fd)
    return True


def main(argv: list[str]) -> int:
    serve(socket.socket(fileno=int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
