"""The FUSE kernel protocol, as far as a read-only filesystem needs it (pure, no I/O).

Message layouts and constants from the kernel's include/uapi/linux/fuse.h.  We speak
the protocol ourselves instead of going through libfuse because we need what its
high-level API hides: per-reply entry and attribute timeouts, the reply flags of
OPEN (FOPEN_*), the lock owner of READ, answering OPEN with ENOSYS on one
connection and not on another, and (for a restart nobody sees) a connection that
can be served by a new process without a second FUSE_INIT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Protocol version we speak; the kernel accepts an older minor and adapts to it.
KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 31  # Linux 5.10 and later speak at least this

# Opcodes (enum fuse_opcode).
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE = 8, 9, 10, 11, 12, 13, 14, 15, 16
STATFS, RELEASE, FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR = 17, 18, 20, 21, 22, 23, 24
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, FSYNCDIR = 25, 26, 27, 28, 29, 30
ACCESS, CREATE, INTERRUPT, DESTROY, BATCH_FORGET = 34, 35, 36, 38, 42
FALLOCATE, READDIRPLUS, RENAME2, LSEEK, COPY_FILE_RANGE, TMPFILE = 43, 44, 45, 46, 47, 51

# Every request that would change the tree: answered EROFS.
WRITE_OPCODES = frozenset({SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, WRITE,
                           SETXATTR, REMOVEXATTR, CREATE, FALLOCATE, RENAME2, COPY_FILE_RANGE, TMPFILE})
# Requests the kernel expects no reply to.
NO_REPLY_OPCODES = frozenset({FORGET, BATCH_FORGET, INTERRUPT})

# FUSE_INIT flags (ours are a subset of what the kernel offers).
ASYNC_READ = 1 << 0
AUTO_INVAL_DATA = 1 << 12
NO_OPEN_SUPPORT = 1 << 17  # offered by kernels that accept ENOSYS for OPEN (4.20+)
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
# In flags2 (sent when INIT_EXT is set), kept here as bit 32 + n of one 64-bit value.
HAS_RESEND = 1 << 39  # the kernel takes NOTIFY_RESEND (Linux 6.9+)

# OPEN reply flags.
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NOFLUSH = 1 << 5

# READ request flags.
READ_LOCKOWNER = 1 << 1
# GETATTR request flags.
GETATTR_FH = 1 << 0

# d_type values for READDIR.
DT_DIR, DT_REG, DT_LNK = 4, 8, 10

IN_HEADER = struct.Struct("=IIQQIIIHH")     # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("=IiQ")          # len error unique
INIT_IN = struct.Struct("=IIII")            # major minor max_readahead flags (flags2... follow)
INIT_IN_FLAGS2 = struct.Struct("=I")        # flags2, right after INIT_IN when flags has INIT_EXT
INIT_OUT = struct.Struct("=IIIIHHIIHHII24x")  # 64 bytes
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")   # fuse_attr, 88 bytes
ENTRY_OUT_HEAD = struct.Struct("=QQQQII")   # nodeid generation entry_valid attr_valid (+nsec x2)
ATTR_OUT_HEAD = struct.Struct("=QII")       # attr_valid attr_valid_nsec dummy
GETATTR_IN = struct.Struct("=IIQ")          # getattr_flags dummy fh
OPEN_IN = struct.Struct("=II")              # flags open_flags
OPEN_OUT = struct.Struct("=QII")            # fh open_flags padding
READ_IN = struct.Struct("=QQIIQII")         # fh offset size read_flags lock_owner flags padding
RELEASE_IN = struct.Struct("=QIIQ")         # fh flags release_flags lock_owner
ACCESS_IN = struct.Struct("=II")            # mask padding
FORGET_IN = struct.Struct("=Q")             # nlookup
BATCH_FORGET_IN = struct.Struct("=II")      # count dummy (then count x (nodeid, nlookup))
KSTATFS = struct.Struct("=QQQQQIIII24x")    # blocks bfree bavail files ffree bsize namelen frsize padding
DIRENT_HEAD = struct.Struct("=QQII")        # ino off namelen type

ROOT_ID = 1


@dataclass(frozen=True)
class Request:
    opcode: int
    unique: int
    node: int
    uid: int
    gid: int
    pid: int
    body: memoryview  # the bytes after the header


def parse_request(buffer: bytes | memoryview) -> Request:
    view = memoryview(buffer)
    length, opcode, unique, node, uid, gid, pid, _extlen, _pad = IN_HEADER.unpack_from(view)
    return Request(opcode, unique, node, uid, gid, pid, view[IN_HEADER.size:length])


def reply(unique: int, payload: bytes = b"", error: int = 0) -> bytes:
    """A reply message; `error` is a positive errno (sent negated)."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload


@dataclass(frozen=True)
class Attributes:
    ino: int
    mode: int
    size: int = 0
    nlink: int = 1
    mtime_ns: int = 0

    def pack(self) -> bytes:
        seconds, nanoseconds = divmod(self.mtime_ns, 1_000_000_000)
        blocks = (self.size + 511) // 512
        return ATTR.pack(self.ino, self.size, blocks, seconds, seconds, seconds,
                         nanoseconds, nanoseconds, nanoseconds, self.mode, self.nlink,
                         0, 0, 0, 4096, 0)


def _split_seconds(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * 1_000_000_000)


def entry_out(attributes: Attributes, entry_timeout_s: float, attr_timeout_s: float) -> bytes:
    entry_s, entry_ns = _split_seconds(entry_timeout_s)
    attr_s, attr_ns = _split_seconds(attr_timeout_s)
    return ENTRY_OUT_HEAD.pack(attributes.ino, 0, entry_s, attr_s, entry_ns, attr_ns) + attributes.pack()


def attr_out(attributes: Attributes, attr_timeout_s: float) -> bytes:
    attr_s, attr_ns = _split_seconds(attr_timeout_s)
    return ATTR_OUT_HEAD.pack(attr_s, attr_ns, 0) + attributes.pack()


def init_out(kernel_major: int, kernel_minor: int, kernel_flags: int, wanted_flags: int,
             max_write: int = 128 * 1024, max_pages: int = 32) -> tuple[bytes, int]:
    """The INIT reply and the minor version agreed on."""
    minor = min(kernel_minor, KERNEL_MINOR_VERSION)
    flags = kernel_flags & wanted_flags
    return INIT_OUT.pack(KERNEL_VERSION, minor, 128 * 1024, flags, 16, 12, max_write, 1,
                         max_pages, 0, 0, 0), minor


NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY, NOTIFY_STORE, NOTIFY_RESEND = 2, 3, 4, 7
NOTIFY_INVAL_INODE_OUT = struct.Struct("=Qqq")  # ino offset length
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("=QII")  # parent namelen flags
NOTIFY_STORE_OUT = struct.Struct("=QQII")       # nodeid offset size padding


def _notification(code: int, payload: bytes) -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), code, 0) + payload


def notify_inval_inode(node: int) -> bytes:
    """Make the kernel drop a file's cached attributes and every cached page."""
    return _notification(NOTIFY_INVAL_INODE, NOTIFY_INVAL_INODE_OUT.pack(node, 0, 0))


def notify_store(node: int, data: bytes) -> bytes:
    """Put `data` into a file's page cache at offset 0 (the kernel grows i_size to fit)."""
    return _notification(NOTIFY_STORE, NOTIFY_STORE_OUT.pack(node, 0, len(data), 0) + data)


def notify_resend() -> bytes:
    """Make the kernel queue again every request a server read and never answered
    (a server that died holding them; fs/fuse/dev.c fuse_resend())."""
    return _notification(NOTIFY_RESEND, b"")


def init_flags(body: bytes | memoryview) -> tuple[int, int, int]:
    """(major, minor, flags) of an INIT request, flags2 folded in as bits 32-63."""
    major, minor, _readahead, flags = INIT_IN.unpack_from(body)
    if flags & INIT_EXT and len(body) >= INIT_IN.size + INIT_IN_FLAGS2.size:
        flags |= INIT_IN_FLAGS2.unpack_from(body, INIT_IN.size)[0] << 32
    return major, minor, flags


def notify_inval_entry(parent: int, name: bytes) -> bytes:
    """A notification (unique 0) that makes the kernel forget the name `name` in `parent`."""
    return _notification(NOTIFY_INVAL_ENTRY, NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0) + name + b"\0")


def dirent(ino: int, offset: int, name: bytes, kind: int) -> bytes:
    """One READDIR record, padded to 8 bytes; `offset` is where the next one starts."""
    record = DIRENT_HEAD.pack(ino, offset, len(name), kind) + name
    return record + b"\0" * (-len(record) % 8)


def statfs_out(name_max: int = 255) -> bytes:
    return KSTATFS.pack(0, 0, 0, 0, 0, 4096, name_max, 4096, 0)
