"""Views on a real FUSE mount: the daemon's Views served by its own session, in a thread
of the test process (the readers are other processes and the test's main thread).

What is asserted: a view shows its container whoever reads it; reads are served by
the kernel's page cache (the daemon sees a few requests per refresh interval, not one
per read); values follow the container within two intervals; sendfile and mmap work;
two views never mix; a removed view or a vanished cgroup answers ENOENT; a reader
reading in small pieces never sees a malformed line.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from cgroupfs.server import ContentServer
from cgroupfs_daemon.fuse_session import Session, mount, unmount
from cgroupfs_daemon.main import VIEWS_FLAGS
from cgroupfs_daemon.mount import prepare_mountpoint
from cgroupfs_daemon.views import Views
from testbed.timing import scaled

MIB = 1 << 20
INTERVAL_S = 0.1


@pytest.fixture
def views(hierarchy, workdir):
    mountpoint = os.path.join(workdir, f"views-{time.monotonic_ns()}")
    prepare_mountpoint(mountpoint)
    served = Views(ContentServer(), mountpoint, interval_s=INTERVAL_S)
    session = Session(mount(mountpoint, "cgroupfs-views", "cgroupfs-views"), served, "test-views",
                      wanted_flags=VIEWS_FLAGS)
    served.attach(session)
    thread = threading.Thread(target=session.serve, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.stop()
        session.stop()
        unmount(mountpoint)
        thread.join(timeout=5)
        os.close(session.fd)
        os.rmdir(mountpoint)


@pytest.fixture
def container(views, make_cgroup):
    """container(view_id, limit, [command], **popen) -> (its process, its view's directory):
    a cgroup with that memory limit, the process in it, a view of it; killed afterwards."""
    processes: list[subprocess.Popen] = []

    def start(view_id: str, limit_bytes: int, command=("sleep", "600"), **popen):
        cgroup = make_cgroup()
        cgroup.set_memory_limit(limit_bytes)
        processes.append(cgroup.popen(list(command), **popen))
        return processes[-1], views.add(view_id, processes[-1].pid)

    yield start
    for process in processes:
        process.kill()
        process.wait()


def memtotal_kb(text: bytes | str) -> int:
    if isinstance(text, bytes):
        text = text.decode()
    return int(re.search(r"^MemTotal:\s+(\d+) kB$", text, re.M).group(1))


def test_a_view_shows_its_container_whoever_reads_it(container):
    _, directory = container("ctr-a", 15 * MIB)
    with open(f"{directory}/proc/meminfo", "rb") as f:  # the test process: the host's cgroup
        assert memtotal_kb(f.read()) == 15 * 1024
    with open("/proc/meminfo", "rb") as f:
        assert memtotal_kb(f.read()) > 15 * 1024
    # (diskstats is empty for a cgroup that has done no I/O)
    for relative in ("proc/cpuinfo", "proc/stat", "proc/uptime", "proc/loadavg",
                     "proc/swaps", "sys/devices/system/cpu/online"):
        with open(f"{directory}/{relative}", "rb") as f:
            assert f.read(), relative


def test_reads_are_served_by_the_page_cache(views, container):
    _, directory = container("ctr-b", 15 * MIB)
    path = f"{directory}/proc/meminfo"
    # os.open/os.read, as C readers do: Python's open() also asks isatty(), an
    # ioctl the kernel forwards to the daemon (one request per open).
    reader = ("import os, sys, time\n"
              "deadline = time.monotonic() + 1.0; n = 0\n"
              "while time.monotonic() < deadline:\n"
              "    fd = os.open(sys.argv[1], os.O_RDONLY)\n"
              "    assert os.read(fd, 65536).startswith(b'MemTotal:'); os.close(fd)\n"
              "    n += 1\n"
              "print(n)\n")
    before, renders_before = views.session.requests_served, views.renders
    reads = int(subprocess.run([sys.executable, "-c", reader, path], capture_output=True, check=True,
                               timeout=60).stdout)
    requests = views.session.requests_served - before
    renders = views.renders - renders_before
    assert reads > 200  # ~5,000 here; the emulated v2 lane is ~10x slower
    # One second of reads: about one GETATTR (and one READ when the text changed)
    # per 0.1 s interval; the bound leaves room for a slow host, far below one per read.
    assert requests <= 40, (requests, reads)
    assert renders <= 15, (renders, reads)


def test_values_follow_the_container_within_two_intervals(container):
    hog, directory = container("ctr-c", 64 * MIB, [
        sys.executable, "-c", "import sys, time\n"
        "sys.stdin.readline(); block = bytearray(16 << 20); block[::4096] = b'x' * 4096\n"
        "print('done', flush=True); time.sleep(600)\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    path = f"{directory}/proc/meminfo"

    def memfree_kb() -> int:
        with open(path) as f:
            return int(re.search(r"^MemFree:\s+(\d+) kB$", f.read(), re.M).group(1))

    time.sleep(2 * INTERVAL_S)
    before = memfree_kb()
    hog.stdin.write(b"go\n")
    hog.stdin.flush()
    assert hog.stdout.readline() == b"done\n"
    allocated_at = time.monotonic()
    while memfree_kb() > before - 12 * 1024:
        assert time.monotonic() - allocated_at < scaled(2 * INTERVAL_S + 0.5), "MemFree did not follow"
        time.sleep(0.005)


def test_a_kept_open_view_read_again_at_offset_0_follows_the_container(views, container):
    """procps keeps /proc/meminfo open and rewinds it: the kernel asks GETATTR once the
    attributes are an interval old, and drops the pages of the old text."""
    view_id = "ctr-k"
    reader, _ = container(view_id, 64 * MIB, [
        sys.executable, os.path.join(os.path.dirname(__file__), "rewinding_reader.py"),
        f"{views.directory(view_id)}/proc/meminfo", str(scaled(20)), "wait"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = reader.communicate(b"go\n", timeout=scaled(60))
    assert reader.returncode == 0, err.decode()
    before, after, _passes = map(int, out.split())
    assert before - after >= 12 * 1024, (before, after)  # 16 MiB touched on the same descriptor


def test_sendfile_and_mmap_read_the_view(container, tmp_path):
    _, directory = container("ctr-d", 15 * MIB)
    path = f"{directory}/proc/meminfo"
    copy = tmp_path / "copy"
    with open(path, "rb") as source, open(copy, "wb") as target:
        size = os.fstat(source.fileno()).st_size
        sent = os.sendfile(target.fileno(), source.fileno(), 0, 1 << 20)
        assert sent == size
        mapped = mmap.mmap(source.fileno(), size, prot=mmap.PROT_READ, flags=mmap.MAP_PRIVATE)
        assert memtotal_kb(mapped[:size]) == 15 * 1024
        mapped.close()
    assert memtotal_kb(copy.read_bytes()) == 15 * 1024
    busybox = subprocess.run(["busybox", "cat", path], capture_output=True, check=True)
    assert memtotal_kb(busybox.stdout) == 15 * 1024


def test_two_views_never_mix_under_concurrent_readers(container):
    limits = {"ctr-e": 15 * MIB, "ctr-f": 40 * MIB}
    paths = {view_id: f"{container(view_id, limit)[1]}/proc/meminfo" for view_id, limit in limits.items()}
    reader = ("import mmap, os, re, sys, time\n"
              "path, want = sys.argv[1], int(sys.argv[2]); wrong = 0\n"
              "deadline = time.monotonic() + 1.5\n"
              "while time.monotonic() < deadline:\n"
              "    fd = os.open(path, os.O_RDONLY); size = os.fstat(fd).st_size\n"
              "    r, w = os.pipe(); os.sendfile(w, fd, 0, size); via_sendfile = os.read(r, 65536)\n"
              "    os.close(r); os.close(w)\n"
              "    m = mmap.mmap(fd, size, prot=mmap.PROT_READ); via_mmap = m[:]; m.close()\n"
              "    via_read = os.pread(fd, 65536, 0); os.close(fd)\n"
              "    for text in (via_sendfile, via_mmap, via_read):\n"
              "        if int(re.search(rb'^MemTotal:\\s+(\\d+) kB$', text, re.M).group(1)) != want: wrong += 1\n"
              "print(wrong)\n")
    readers = [subprocess.Popen([sys.executable, "-c", reader, paths[view_id], str(limit // 1024)],
                                stdout=subprocess.PIPE)
               for view_id, limit in limits.items() for _ in range(2)]
    outputs = [r.communicate(timeout=60)[0] for r in readers]
    assert [int(out) for out in outputs] == [0, 0, 0, 0]


def test_a_removed_view_and_a_vanished_cgroup_answer_enoent(views, make_cgroup):
    cgroup = make_cgroup()
    cgroup.set_memory_limit(15 * MIB)
    sleeper = cgroup.popen(["sleep", "600"])
    directory = views.add("ctr-g", sleeper.pid)
    assert os.path.exists(f"{directory}/proc/meminfo")
    views.remove("ctr-g")
    with pytest.raises(FileNotFoundError):
        open(f"{directory}/proc/meminfo").close()

    directory = views.add("ctr-h", sleeper.pid)
    with open(f"{directory}/proc/meminfo", "rb") as f:
        assert memtotal_kb(f.read()) == 15 * 1024
    sleeper.kill()
    sleeper.wait()
    cgroup.remove()
    time.sleep(2 * INTERVAL_S)
    with pytest.raises(OSError) as raised:
        with open(f"{directory}/proc/meminfo", "rb") as f:
            f.read()
    assert raised.value.errno == errno.ENOENT
    assert len(views) == 0  # the daemon forgot it


def test_small_piece_readers_never_see_a_malformed_line(views, container):
    """Many refreshes (10 ms interval), readers of 200-byte pieces, every line parsed."""
    views.interval_s = 0.01
    _, directory = container("ctr-i", 64 * MIB, [
        sys.executable, "-c", "import time\nblocks = []\nwhile True:\n"
        "    blocks.append(bytearray(1 << 20)); blocks = blocks[-20:]; time.sleep(0.001)\n"])
    path = f"{directory}/proc/meminfo"
    reader = ("import os, re, sys, time\n"
              "line = re.compile(rb'[A-Za-z0-9_()]+:\\s+\\d+( kB)?')\n"
              "bad = reads = 0; deadline = time.monotonic() + float(sys.argv[2])\n"
              "while time.monotonic() < deadline:\n"
              "    fd = os.open(sys.argv[1], os.O_RDONLY); pieces = []\n"
              "    while piece := os.read(fd, 200): pieces.append(piece)\n"
              "    os.close(fd); reads += 1\n"
              "    bad += sum(1 for l in b''.join(pieces).splitlines() if not line.fullmatch(l))\n"
              "print(reads, bad)\n")
    readers = [subprocess.Popen([sys.executable, "-c", reader, path, str(scaled(2.0))], stdout=subprocess.PIPE)
               for _ in range(2)]
    results = [tuple(map(int, r.communicate(timeout=scaled(60))[0].split())) for r in readers]
    # many refreshes: ~1,000 reads here, a few dozen under emulation, every one across
    # several 10 ms intervals
    assert all(reads > 20 for reads, _ in results), results
    assert all(bad == 0 for _, bad in results), results


def test_sendfile_readers_through_a_bind_mount_follow_the_container(container, tmp_path):
    """Inside a container a view file is a bind mount's root, which the kernel never looks
    up again, and busybox `cat` copies with sendfile, which never asks GETATTR: only the
    daemon's refresh of the pages read lately keeps such a reader current."""
    hog, directory = container("ctr-j", 128 * MIB, [
        sys.executable, "-c", "import sys\nblocks = []\nwhile sys.stdin.readline():\n"
        "    blocks.append(bytearray(8 << 20)); blocks[-1][::4096] = b'x' * 2048; print('ok', flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    target = tmp_path / "meminfo"
    target.touch()
    subprocess.run(["mount", "--bind", f"{directory}/proc/meminfo", str(target)], check=True)
    try:
        def used_kb() -> int:
            text = subprocess.run(["busybox", "cat", str(target)], capture_output=True, check=True).stdout
            return memtotal_kb(text) - int(re.search(rb"^MemFree:\s+(\d+) kB$", text, re.M).group(1))

        before = used_kb()
        for step in range(1, 4):
            hog.stdin.write(b"grow\n")
            hog.stdin.flush()
            assert hog.stdout.readline() == b"ok\n"
            deadline = time.monotonic() + scaled(2 * INTERVAL_S + 1)
            while used_kb() < before + step * 7 * 1024:
                assert time.monotonic() < deadline, f"step {step}: busybox cat still shows {used_kb()} kB used"
                time.sleep(0.02)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
