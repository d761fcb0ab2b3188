"""The mount behaves like a read-only /proc: modes, errnos, offsets, directories."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys

import pytest

from cgroupfs.cgroups.files import parse_cpu_list
from cgroupfs.table import DIRECTORIES, FILES, HOST_DIRECTORY
from tests.conftest import require


def test_tree_modes_and_listing(mnt):
    for directory, children in DIRECTORIES.items():
        path = os.path.join(mnt, directory)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o555
        if directory == HOST_DIRECTORY:
            # ours, then the host's other entries (this reader has every online cpu)
            host = set(os.listdir("/sys/devices/system/cpu")) - set(children)
            online = parse_cpu_list(open("/sys/devices/system/cpu/online").read())
            host -= {f"cpu{n}" for n in range(4096) if n not in online}
            assert sorted(os.listdir(path)) == sorted([*children, *host])
        else:
            assert sorted(os.listdir(path)) == sorted(children)
    for relative in FILES:
        st = os.stat(os.path.join(mnt, relative))
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND])
@pytest.mark.parametrize("path", ["proc/meminfo", "sys/devices/system/cpu/uevent"])  # ours; the host's (rw there)
def test_write_opens_are_refused(mnt, flags, path):
    with pytest.raises(OSError) as info:
        os.open(os.path.join(mnt, path), flags)
    assert info.value.errno in (errno.EROFS, errno.EACCES)


@pytest.mark.parametrize("operation", [
    lambda m: os.truncate(f"{m}/proc/meminfo", 0),
    lambda m: os.open(f"{m}/proc/new", os.O_CREAT | os.O_WRONLY, 0o644),
    lambda m: os.unlink(f"{m}/proc/meminfo"),
    lambda m: os.mkdir(f"{m}/proc/dir"),
    lambda m: os.rmdir(f"{m}/sys/devices"),
    lambda m: os.chmod(f"{m}/proc/meminfo", 0o666),
    lambda m: os.chown(f"{m}/proc/meminfo", 1, 1),
    lambda m: os.rename(f"{m}/proc/meminfo", f"{m}/proc/other"),
    lambda m: os.symlink("x", f"{m}/proc/link"),
    lambda m: os.link(f"{m}/proc/meminfo", f"{m}/proc/hard"),
    lambda m: os.setxattr(f"{m}/proc/meminfo", "user.x", b"1"),
    lambda m: os.utime(f"{m}/proc/meminfo", (1, 1)),
], ids=["truncate", "create", "unlink", "mkdir", "rmdir", "chmod", "chown", "rename", "symlink", "link",
        "setxattr", "utime"])
def test_every_change_is_refused(mnt, operation):
    with pytest.raises(OSError) as info:
        operation(mnt)
    assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def test_missing_paths_and_odd_lookups(mnt):
    for path in ("proc/nope", "nope", "proc/meminfo/child", "sys/devices/system/cpu/nope",
                 "sys/devices/system/cpu/online/child"):
        with pytest.raises(OSError) as info:
            os.stat(os.path.join(mnt, path))
        assert info.value.errno in (errno.ENOENT, errno.ENOTDIR)
    # `..` resolves inside the mount; it cannot escape to another file of ours
    assert os.path.samefile(os.path.join(mnt, "proc/../proc/meminfo"), os.path.join(mnt, "proc/meminfo"))
    with pytest.raises(OSError) as info:
        os.listdir(os.path.join(mnt, "proc/meminfo"))
    assert info.value.errno == errno.ENOTDIR


def test_xattrs_are_not_supported(mnt):
    with pytest.raises(OSError) as info:
        os.getxattr(os.path.join(mnt, "proc/meminfo"), "user.x")
    assert info.value.errno in (errno.EOPNOTSUPP, errno.ENODATA)
    with pytest.raises(OSError) as info:
        os.listxattr(os.path.join(mnt, "proc/meminfo"))
    assert info.value.errno == errno.EOPNOTSUPP


def test_a_pass_is_one_text_at_any_offset_and_size(mnt):
    """A read at offset 0 starts a pass (fresh text, as seq_file); the reads at other
    offsets that follow serve that same text."""
    fd = os.open(os.path.join(mnt, "proc/meminfo"), os.O_RDONLY)
    try:
        whole = b""
        while chunk := os.read(fd, 7):
            whole += chunk
        assert whole.startswith(b"MemTotal:")
        assert os.pread(fd, 100, 3) == whole[3:103]
        assert os.pread(fd, 1, len(whole) - 1) == whole[-1:]
        assert os.pread(fd, 4096, len(whole)) == b""
        assert os.pread(fd, 10, len(whole) + 12345) == b""
        assert os.pread(fd, 0, 0) == b""
        again = os.pread(fd, 1 << 20, 0)  # a new pass: the host's meminfo of now
        assert again.startswith(b"MemTotal:")
        assert os.pread(fd, 100, 3) == again[3:103]
        assert os.pread(fd, 1 << 20, 50) == again[50:]
    finally:
        os.close(fd)


def test_cat_head_and_dd_agree(mnt):
    path = os.path.join(mnt, "proc/swaps")  # stable content between opens
    cat = subprocess.run(["cat", path], capture_output=True, check=True).stdout
    head = subprocess.run(["head", "-c", "100", path], capture_output=True, check=True).stdout
    dd = subprocess.run(["dd", f"if={path}", "bs=1", "status=none"], capture_output=True, check=True).stdout
    assert cat and head == cat[:100] and dd == cat


MAP_AND_TOUCH = """
import errno, mmap, sys
with open(sys.argv[1], "rb") as f:
    try:
        mapped = mmap.mmap(f.fileno(), 0, flags=getattr(mmap, sys.argv[2]), prot=mmap.PROT_READ)
    except OSError as exc:
        print(errno.errorcode[exc.errno])
        sys.exit(0)
    print(mapped[:9])  # the first access faults the page in through the page cache
"""


@pytest.mark.parametrize("flags,outcomes", [
    # direct_io files cannot be mapped shared (the kernel refuses, ENODEV); kernels that
    # negotiate FUSE_DIRECT_IO_ALLOW_MMAP map it, and the fill is then refused like below
    ("MAP_SHARED", {"ENODEV", "SIGBUS"}),
    # a private mapping is filled through the page cache, which we refuse (EIO): SIGBUS
    ("MAP_PRIVATE", {"SIGBUS"}),
])
def test_mmap_never_serves_content_through_the_page_cache(mnt, flags, outcomes):
    path = os.path.join(mnt, "proc/meminfo")
    result = subprocess.run([sys.executable, "-c", MAP_AND_TOUCH, path, flags], capture_output=True, timeout=30)
    outcome = "SIGBUS" if result.returncode == -signal.SIGBUS else result.stdout.decode().strip()
    assert outcome in outcomes, (result.returncode, result.stdout, result.stderr[-500:])
    with open(path, "rb") as f:
        assert f.read().startswith(b"MemTotal:")  # the daemon serves on, unharmed


def test_sendfile_readers_get_the_content_not_an_empty_file(mnt):
    """busybox cat and Python's shutil copy with sendfile(2), which goes through the page cache."""
    import shutil
    import tempfile

    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox (Debian: busybox-static) is not installed")
    path = os.path.join(mnt, "proc/meminfo")
    with open(path, "rb") as f:
        expected_start = f.read()[:9]
    assert expected_start == b"MemTotal:"
    out = subprocess.run([busybox, "cat", path], capture_output=True, check=True).stdout
    assert out.startswith(b"MemTotal:") and out.endswith(b"\n")
    with tempfile.NamedTemporaryFile() as copy:
        shutil.copyfile(os.path.join(mnt, "proc/swaps"), copy.name)
        with open(os.path.join(mnt, "proc/swaps"), "rb") as f:
            assert open(copy.name, "rb").read() == f.read()
    # sendfile itself: this open's own content (kernels that splice through read_iter,
    # e.g. 6.1) or a clean EIO (kernels that splice through the shared page cache,
    # e.g. 6.18, which we refuse) -- never another reader's cached page.
    with open(path, "rb") as src, tempfile.TemporaryFile() as dst:
        try:
            sent = os.sendfile(dst.fileno(), src.fileno(), 0, 1 << 20)
        except OSError as exc:
            assert exc.errno == errno.EIO
        else:
            dst.seek(0)
            assert sent == os.fstat(src.fileno()).st_size and dst.read().startswith(b"MemTotal:")


def test_size_aware_tools_read_to_the_end(mnt):
    path = os.path.join(mnt, "proc/cpuinfo")
    with open(path, "rb") as f:
        content = f.read()
        assert os.fstat(f.fileno()).st_size == len(content)  # this open's own length
    assert abs(os.stat(path).st_size - len(content)) < 64
    wc = subprocess.run(["wc", "-c", path], capture_output=True, check=True).stdout.split()[0]
    assert abs(int(wc) - len(content)) < 64  # (the MHz lines may change between two opens)
    tail = subprocess.run(["tail", "-n", "1", path], capture_output=True, check=True).stdout
    assert tail == content.splitlines(keepends=True)[-1]
