"""Keeping the FUSE connections alive across a crash, a restart and an upgrade.

A FUSE connection lives as long as some process holds its /dev/fuse descriptor;
while nobody reads it, requests simply wait.  So the daemon keeps its descriptors
where they outlive it, and a successor takes the live connections over instead of
mounting: every container's bind mounts stay valid, nothing needs healing.

- **Where they are kept.**  Under systemd, in the service's file descriptor store
  (`FDSTORE=1` over $NOTIFY_SOCKET, daemon/notify.py; the unit's
  FileDescriptorStoreMax=), handed back to the next instance after a crash or a
  watchdog kill as LISTEN_FDS/LISTEN_FDNAMES (sd_listen_fds(3)).  On SIGHUP (the
  upgrade: `systemctl reload cgroupfs`, or by hand) the daemon re-executes itself
  with the same protocol across execve(2), systemd or not.
- **What is kept.**  One descriptor per connection (`fuse-<subtype>`) and a memfd
  (`state`) holding what a successor cannot learn from the kernel again, because
  a taken-over connection never sends FUSE_INIT twice: each connection's mount
  point, device and negotiated protocol, the views registry (view numbers are
  node ids the kernel has cached), the file-handle generation, and whether the
  predecessor handed over cleanly.
- **Requests the predecessor took and never answered.**  A clean handoff (SIGHUP)
  finishes the request in hand before exec.  After a crash, a kernel with
  FUSE_NOTIFY_RESEND (6.9+, offered as HAS_RESEND in FUSE_INIT) queues them
  again.  An older kernel cannot: there, a connection with requests still waiting
  (/sys/fs/fuse/connections/N/waiting) is aborted, and the daemon mounts afresh and
  heals as before; one with none waiting is taken over.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import stat
import sys

from cgroupfs.mountinfo import read_mountinfo
from cgroupfs_daemon.syscalls import mount_filesystem

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
LISTEN_ENVIRONMENT = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
STATE_NAME = "state"
FUSE_CONNECTIONS = "/sys/fs/fuse/connections"
STATE_VERSION = 1
_STAGING_FD = 1000


def fuse_name(subtype: str) -> str:
    """The fd-store name of the connection mounted as fuse.<subtype> (no ':', the
    separator of LISTEN_FDNAMES)."""
    return f"fuse-{subtype}"


def received_descriptors(environ=os.environ, pid: int | None = None) -> dict[str, int]:
    """The descriptors handed to this process (sd_listen_fds_with_names(3)), by name.

    The variables are removed, so that nothing this process starts believes they are
    its own; descriptors that are not meant for this pid are ignored."""
    values = {name: environ.pop(name, None) for name in LISTEN_ENVIRONMENT}
    if values["LISTEN_PID"] is None or values["LISTEN_FDS"] is None:
        return {}
    try:
        if int(values["LISTEN_PID"]) != (os.getpid() if pid is None else pid):
            return {}
        count = int(values["LISTEN_FDS"])
    except ValueError:
        log.warning("ignoring malformed LISTEN_PID/LISTEN_FDS")
        return {}
    names = (values["LISTEN_FDNAMES"] or "").split(":")
    handed: dict[str, int] = {}
    for index in range(count):
        fd = LISTEN_FDS_START + index
        name = names[index] if index < len(names) and names[index] else f"unknown-{index}"
        try:
            os.set_inheritable(fd, False)
        except OSError:
            log.warning("descriptor %d (%s) was announced but is not open", fd, name)
            continue
        if name in handed:  # the store keeps duplicates apart; the newest wins
            os.close(handed[name])
        handed[name] = fd
    log.debug("handed over: %s", ", ".join(f"{name}={fd}" for name, fd in handed.items()) or "nothing")
    return handed


def is_fuse_device(fd: int) -> bool:
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and os.major(info.st_rdev) == 10 and os.minor(info.st_rdev) == 229


@dataclasses.dataclass
class Connection:
    """What a successor needs to serve a connection it did not see start."""

    subtype: str
    mountpoint: str
    device: str          # "0:NN" as mountinfo shows the mount; NN names it in fusectl
    minor: int           # negotiated protocol minor
    kernel_flags: int    # what the kernel offered in FUSE_INIT (flags2 as bits 32-63)


@dataclasses.dataclass
class HandoffState:
    version: int = STATE_VERSION
    generation: int = 0   # incremented by every instance; file handles carry it
    clean: bool = False   # the writer stopped between requests and exec'd its successor
    connections: dict[str, Connection] = dataclasses.field(default_factory=dict)
    views: dict = dataclasses.field(default_factory=dict)  # daemon/views.py export()

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> HandoffState:
        raw = json.loads(data.decode())
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"state version {raw.get('version')!r}, expected {STATE_VERSION}")
        connections = {name: Connection(**value) for name, value in raw.get("connections", {}).items()}
        return cls(version=STATE_VERSION, generation=int(raw.get("generation", 0)), clean=bool(raw.get("clean")),
                   connections=connections, views=raw.get("views") or {})


class StateFile:
    """The handoff state in a memfd: kept in the fd store beside the connections, so
    it survives exactly as long as they do.  Rewritten whole; it is small."""

    def __init__(self, fd: int | None = None):
        self.fd = fd if fd is not None else os.memfd_create("cgroupfs-state", os.MFD_CLOEXEC)

    def load(self) -> HandoffState | None:
        try:
            size = os.fstat(self.fd).st_size
            data = os.pread(self.fd, size, 0) if size else b""
            return HandoffState.from_json(data) if data else None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("the handed-over state is unusable (%s); mounting afresh", exc)
            return None

    def save(self, state: HandoffState) -> None:
        data = state.to_json()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


def mounted_device(mountpoint: str, subtype: str) -> str | None:
    """The device ("0:NN") of the top fuse.<subtype> mount at `mountpoint`, from
    mountinfo: never a system call through the mount, which nobody serves yet."""
    entries = read_mountinfo(mount_points=(os.path.abspath(mountpoint),))
    if not entries or entries[-1].fstype != f"fuse.{subtype}":
        return None
    return entries[-1].device


def _fusectl(device: str, name: str) -> str:
    """/sys/fs/fuse/connections/<NN>/<name>, mounting fusectl there first if needed."""
    if not os.path.isdir(os.path.join(FUSE_CONNECTIONS, device.split(":")[1])):
        err = mount_filesystem("fusectl", FUSE_CONNECTIONS, "fusectl")
        if err not in (0, errno.EBUSY):
            raise OSError(err, f"mounting fusectl at {FUSE_CONNECTIONS}: {os.strerror(err)}")
    return os.path.join(FUSE_CONNECTIONS, device.split(":")[1], name)


def waiting_requests(device: str) -> int:
    """Requests of the connection not answered yet (queued or taken by a server)."""
    with open(_fusectl(device, "waiting")) as f:
        return int(f.read().strip())


def abort_connection(device: str) -> None:
    """End the connection: every waiting and future request fails with ENOTCONN."""
    with open(_fusectl(device, "abort"), "w") as f:
        f.write("1")


def reexec(descriptors: dict[str, int], environ: dict[str, str]) -> None:
    """Replace this process by a fresh start of the same command, `descriptors` handed
    over as LISTEN_FDS (same pid, so LISTEN_PID is ours).  Does not return."""
    names = list(descriptors)
    # Moved above every target first, so that placing one cannot overwrite another.
    staged = [fcntl.fcntl(descriptors[name], fcntl.F_DUPFD_CLOEXEC, _STAGING_FD) for name in names]
    for index, fd in enumerate(staged):
        os.dup2(fd, LISTEN_FDS_START + index, inheritable=True)
        os.close(fd)
    env = dict(environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(names)), LISTEN_FDNAMES=":".join(names))
    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("re-executing %s with %d descriptors (%s)", " ".join(argv), len(names), ", ".join(names))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execve(sys.executable, argv, env)
