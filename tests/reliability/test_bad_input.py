"""Bad input: FUSE edge cases beyond tests/integration/test_fuse_semantics.py, and the CLI.

Every case pins the exact answer (errno, signal, exit status and one sentence),
never only "it did not crash".
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from cgroupfs.table import DIRECTORIES, FILES, HOST_DIRECTORY
from cgroupfs_daemon.mount import mounts_at
from testbed.daemon_process import REPO
from tests.reliability.support import MIB, memtotal_kb


@pytest.fixture(scope="module")
def mnt(hierarchy, tmp_path_factory):
    from testbed.daemon_process import DaemonProcess

    base = tmp_path_factory.mktemp("bad-input")
    daemon = DaemonProcess(str(base / "mnt"), log_path=str(base / "daemon.log"),
                           env={"CGROUPFS_STATE_FILE": str(base / "state.json"),
                                "CGROUPFS_CONFIG": str(base / "no-such-config")})
    try:
        daemon.start()
        yield daemon.mountpoint
    finally:
        daemon.stop()


def errno_of(call) -> int:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno is not None
    return info.value.errno


# --- FUSE ------------------------------------------------------------------------------

def test_open_flags_and_directory_mixups(mnt):
    path = f"{mnt}/proc/meminfo"
    assert errno_of(lambda: os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL)) == errno.EEXIST
    assert errno_of(lambda: os.open(path, os.O_RDONLY | os.O_DIRECTORY)) == errno.ENOTDIR
    assert errno_of(lambda: os.open(path + "/", os.O_RDONLY)) == errno.ENOTDIR
    assert errno_of(lambda: os.open(f"{mnt}/proc", os.O_WRONLY)) == errno.EISDIR
    fd = os.open(f"{mnt}/proc", os.O_RDONLY)
    try:
        assert errno_of(lambda: os.read(fd, 10)) == errno.EISDIR
    finally:
        os.close(fd)
    # O_CREAT on an existing file and O_DIRECT open for reading, as on /proc
    for flags in (os.O_RDONLY | os.O_CREAT, os.O_RDONLY | os.O_DIRECT, os.O_RDONLY | os.O_NOATIME):
        fd = os.open(path, flags)
        try:
            assert memtotal_kb(os.read(fd, 1 << 16)) > 0
        finally:
            os.close(fd)
    fd = os.open(path, os.O_PATH)
    os.close(fd)


def test_operations_on_a_read_only_descriptor(mnt):
    fd = os.open(f"{mnt}/proc/meminfo", os.O_RDONLY)
    try:
        assert errno_of(lambda: os.write(fd, b"x")) == errno.EBADF
        assert errno_of(lambda: os.ftruncate(fd, 0)) == errno.EINVAL
        assert errno_of(lambda: os.posix_fallocate(fd, 0, 10)) == errno.EBADF
        assert errno_of(lambda: os.pread(fd, 10, -1)) == errno.EINVAL
        assert errno_of(lambda: os.listdir(fd)) == errno.ENOTDIR
        assert os.lseek(fd, 0, os.SEEK_END) == len(os.pread(fd, 1 << 16, 0))  # st_size: this open's length
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locks are local to the kernel
        os.fsync(fd)  # nothing to flush
        assert os.pread(fd, 10, 1 << 62) == b""
        assert len(os.pread(fd, 64 << 20, 0)) == len(os.pread(fd, 1 << 16, 0)) > 0  # huge size: the content
    finally:
        os.close(fd)


def test_access_readlink_and_names(mnt):
    path = f"{mnt}/proc/meminfo"
    assert os.access(path, os.R_OK) and not os.access(path, os.W_OK) and not os.access(path, os.X_OK)
    assert os.access(f"{mnt}/proc", os.R_OK | os.X_OK) and not os.access(f"{mnt}/proc", os.W_OK)
    os.chdir(f"{mnt}/sys/devices")  # traversal (X on directories) is allowed
    os.chdir("/")
    assert errno_of(lambda: os.readlink(path)) == errno.EINVAL
    assert errno_of(lambda: os.stat(f"{mnt}/proc/" + "a" * 300)) == errno.ENOENT
    assert errno_of(lambda: os.stat(f"{mnt}/proc/" + "a" * 5000)) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.stat(f"{mnt}/proc/MEMINFO")) == errno.ENOENT
    assert errno_of(lambda: os.stat(f"{mnt}/proc/meminfo\u00e9")) == errno.ENOENT
    assert os.stat(f"{mnt}/proc/./meminfo").st_ino == os.stat(path).st_ino
    assert os.stat(f"{mnt}/sys/devices/../../proc/meminfo").st_ino == os.stat(path).st_ino
    assert errno_of(lambda: os.mknod(f"{mnt}/proc/fifo", 0o600 | 0o010000)) == errno.EROFS
    assert errno_of(lambda: os.removexattr(path, "user.x")) == errno.EROFS
    assert errno_of(lambda: os.rename(f"{mnt}/proc", f"{mnt}/proc2")) == errno.EROFS


def test_every_directory_lists_exactly_its_children_by_fd_too(mnt):
    for directory, children in DIRECTORIES.items():
        fd = os.open(os.path.join(mnt, directory), os.O_RDONLY | os.O_DIRECTORY)
        try:
            listed = sorted(os.listdir(fd))
        finally:
            os.close(fd)
        if directory == HOST_DIRECTORY:  # ours, and the host's other entries passed through
            assert set(children) <= set(listed) and set(listed) - set(children) <= set(os.listdir(f"/{directory}"))
        else:
            assert listed == sorted(children)
    # every file of ours is found by a walk, which does not stray into the host's tree
    ours = {os.path.relpath(os.path.join(top, name), mnt) for top, _, files in os.walk(mnt) for name in files}
    assert set(FILES) <= ours
    assert all(path in FILES or path.startswith(HOST_DIRECTORY + "/") for path in ours)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
MAP_FAILED = ctypes.c_void_p(-1).value


def test_mmap_shared_is_enodev_private_maps_but_faults(mnt):
    """A direct_io file of size 0: MAP_SHARED is refused (ENODEV), MAP_PRIVATE maps and the
    first access is SIGBUS.  (/proc itself refuses both with EIO.)  Documented in
    docs/reliability.md; no agent maps these files."""
    fd = os.open(f"{mnt}/proc/meminfo", os.O_RDONLY)
    try:
        assert _libc.mmap(None, 4096, 1, 1, fd, 0) == MAP_FAILED and ctypes.get_errno() == errno.ENODEV
        address = _libc.mmap(None, 4096, 1, 2, fd, 0)
        assert address != MAP_FAILED
        child = os.fork()
        if child == 0:
            ctypes.string_at(address, 8)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS
    finally:
        os.close(fd)
    with open(f"{mnt}/proc/meminfo") as f:  # the daemon is unaffected
        assert f.read().startswith("MemTotal:")


def test_one_descriptor_read_by_many_threads_sees_one_content(mnt):
    fd = os.open(f"{mnt}/proc/stat", os.O_RDONLY)
    try:
        whole = os.pread(fd, 1 << 20, 0)
        seen: list[bytes] = []

        def read_all() -> None:
            for offset in range(0, len(whole), 37):
                seen.append(os.pread(fd, 37, offset))

        threads = [threading.Thread(target=read_all) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = [whole[o:o + 37] for o in range(0, len(whole), 37)]
        assert sorted(seen) == sorted(expected * 8)
    finally:
        os.close(fd)


def test_thousands_of_open_descriptors_are_each_served_and_released(mnt, make_cgroup):
    """One process holds 4,000 opens at once (each an entry in the daemon's handle table)."""
    cgroup = make_cgroup()
    cgroup.set_memory_limit(44 * MIB)
    script = (
        "import os, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))\n"
        f"fds = [os.open('{mnt}/proc/meminfo', os.O_RDONLY) for _ in range(4000)]\n"
        "contents = {os.pread(fd, 1 << 16, 0).split(b'\\n')[0] for fd in fds}\n"
        "[os.close(fd) for fd in fds]\n"
        "print(len(fds), contents.pop().decode())\n"
    )
    result = cgroup.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    count, _, total = result.stdout.decode().strip().partition(" ")
    assert count == "4000" and memtotal_kb(total) == 44 * 1024


# --- the command line ------------------------------------------------------------------

def run_cli(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=REPO, CGROUPFS_CONFIG="/nonexistent/cgroupfs-rel-config",
                       CGROUPFS_STATE_FILE="/nonexistent/cgroupfs-rel-state.json")
    environment.pop("DOCKER_HOST", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=environment)


def assert_one_sentence(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cgroupfs:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def daemon_args(tmp_path):
    def args(*extra: str, mountpoint: str | None = None) -> list[str]:
        return ["daemon", "--mountpoint", mountpoint or str(tmp_path / "mnt"), *extra]
    return args


def never_mounted(path) -> bool:
    return not any(t.startswith("fuse") for t in mounts_at(str(path))) if os.path.exists(path) else True


@pytest.mark.unit
@pytest.mark.parametrize("argv,fragment", [
    (["daemon", "--bogus"], "unrecognized arguments: --bogus"),
    (["daemon", "--log-level", "loud"], "invalid choice: 'loud'"),
    (["daemon", "--cache-ttl-ms", "soon"], "invalid float value: 'soon'"),
    (["daemon", "--no-docker", "--docker-host", "unix:///x"], "not allowed with argument"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["show", "nosuchfile"], "unknown file 'nosuchfile'"),
    ([], "the following arguments are required"),
])
def test_unknown_or_malformed_arguments(argv, fragment):
    assert_one_sentence(run_cli(*argv), fragment)


def test_a_mountpoint_on_a_read_only_filesystem(hierarchy, tmp_path, daemon_args):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    subprocess.run(["mount", "--bind", str(read_only), str(read_only)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
        result = run_cli(*daemon_args("--no-docker", "--no-metrics", mountpoint=str(read_only / "mnt")))
        assert_one_sentence(result, f"cannot create mount point {read_only}/mnt", "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)


def test_a_mountpoint_that_is_a_file_or_not_empty_or_under_proc(hierarchy, tmp_path, daemon_args):
    regular = tmp_path / "file"
    regular.write_text("x")
    assert_one_sentence(run_cli(*daemon_args("--no-docker", "--no-metrics", mountpoint=str(regular))),
                        f"mount point {regular} is not a directory")
    assert never_mounted(tmp_path / "file-views")  # the views were mounted first: not left behind
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious").write_text("keep me")
    assert_one_sentence(run_cli(*daemon_args("--no-docker", "--no-metrics", mountpoint=str(busy))),
                        f"mount point {busy} is not empty")
    assert (busy / "precious").read_text() == "keep me" and never_mounted(busy)
    assert never_mounted(tmp_path / "busy-views")
    under_proc = f"/proc/cgroupfs-rel-{os.getpid()}"
    assert_one_sentence(run_cli(*daemon_args("--no-docker", "--no-metrics", mountpoint=under_proc)),
                        f"cannot create mount point {under_proc}")


def test_a_metrics_port_in_use_and_malformed_addresses(hierarchy, tmp_path, daemon_args):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*daemon_args("--no-docker", "--metrics-address", f"127.0.0.1:{port}"))
        assert_one_sentence(result, f"127.0.0.1:{port} is already in use")
    assert never_mounted(tmp_path / "mnt")
    for address, fragment in (("nonsense", "expected HOST:PORT"), ("127.0.0.1:99999", "0 to 65535"),
                              ("[::1", "expected [IPV6]:PORT"), ("::1:80", "in brackets")):
        assert_one_sentence(run_cli(*daemon_args("--no-docker", "--metrics-address", address)), fragment)


@pytest.mark.parametrize("url,fragment", [
    ("bogus://x", "Invalid bind address protocol"),
    ("tcp://", "Invalid bind address format"),
    ("tcp://127.0.0.1:notaport", "Port could not be cast"),
    ("localhost:2375", "Invalid bind address protocol"),
])
@pytest.mark.parametrize("how", ["environment", "flag"])
def test_a_malformed_docker_host(hierarchy, tmp_path, daemon_args, url, fragment, how):
    # Before: the daemon started and its watcher logged a traceback every few seconds, forever.
    if how == "flag":
        result = run_cli(*daemon_args("--no-metrics", "--docker-host", url))
    else:
        result = run_cli(*daemon_args("--no-metrics"), env={"DOCKER_HOST": url})
    assert_one_sentence(result, f"Docker address {url!r} is not usable", fragment, "--no-docker")
    assert never_mounted(tmp_path / "mnt")


@pytest.mark.unit
def test_a_malformed_config_file(tmp_path, daemon_args):
    config = tmp_path / "cgroupfs.conf"
    config.write_text("CGROUPFS_LOG_LEVEL=loud\n")
    assert_one_sentence(run_cli(*daemon_args(), env={"CGROUPFS_CONFIG": str(config)}),
                        f"{config}: CGROUPFS_LOG_LEVEL", "'loud'")
    config.write_text("this is not a setting\n")
    assert_one_sentence(run_cli(*daemon_args(), env={"CGROUPFS_CONFIG": str(config)}), f"{config}:1")


# The checkout (and the virtualenv in it) may lie where uid 65534 cannot read, such as
# a 0700 temporary directory: the code is imported while still root, then the process
# gives up root for good (groups, gid, uid) before the command line runs.
AS_NOBODY = """
import os, sys
import cgroupfs_daemon.cli, cgroupfs_daemon.config, cgroupfs_daemon.journal, cgroupfs_daemon.main
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert (os.getresuid(), os.getresgid()) == ((65534,) * 3, (65534,) * 3)
sys.exit(cgroupfs_daemon.cli.main(sys.argv[1:]))
"""


def test_not_root(hierarchy, tmp_path, daemon_args):
    result = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, *daemon_args("--no-docker", "--no-metrics")],
        capture_output=True, text=True, timeout=30, cwd="/",
        env=dict(os.environ, PYTHONPATH=REPO, CGROUPFS_CONFIG="/nonexistent/cgroupfs-rel-config"))
    assert_one_sentence(result, "must run as root")
