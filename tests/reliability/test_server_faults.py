"""Faults under the content server, on copies of the fixture trees mutated between reads.

The kernel's own files cannot be made to return garbage, so these tests run a
ContentServer over a copy of a fixture tree (tests/unit/fixture_trees.py) in a
temporary directory and break it between reads: counter files vanish, hold
garbage, become unreadable; cgroups are removed between the resolution of the
reader's cgroup and the rendering, or in the middle of it.  The documented
answers (docs/formulas.md, "Who gets what"): the reader gets its own file or the
host's file byte for byte, the failure is counted every time and logged once.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgroupfs.cgroups.hierarchy import discover
from cgroupfs.host import HostReader
from cgroupfs.server import ContentServer
from cgroupfs.sources import Options
from cgroupfs.table import FILES
from tests.unit.fixture_trees import HYBRID, HYBRID_CHILD_PID, V2, V2_15M_PID, V2_POD_PID

pytestmark = pytest.mark.unit


class Observer:
    def __init__(self):
        self.fallbacks: list[tuple[str, str]] = []
        self.lookups = 0

    def cache_lookup(self, hit: bool) -> None:
        self.lookups += 1

    def fallback(self, path: str, reason: str) -> None:
        self.fallbacks.append((path, reason))

    def note_served(self, paths) -> None:
        pass


def copy_tree(source: str, destination) -> str:
    target = os.path.join(str(destination), os.path.basename(source))
    shutil.copytree(source, target, symlinks=True)
    return target


def make_server(tree: str, cache_ttl_s: float = 0.0, observer: Observer | None = None) -> ContentServer:
    proc = os.path.join(tree, "proc")
    return ContentServer(
        hierarchy=discover(proc_root=proc, root_prefix=tree, mountinfo_path=os.path.join(proc, "mountinfo")),
        host=HostReader(proc_root=proc, sys_root=os.path.join(tree, "sys")),
        options=Options(ticks_per_second=100, proc_root=proc),
        cache_ttl_s=cache_ttl_s,
        observer=observer,
    )


def host_bytes(tree: str, name: str) -> bytes:
    if name in ("online", "possible", "present"):
        path = os.path.join(tree, "sys/devices/system/cpu", name)
    else:
        path = os.path.join(tree, "proc", name)
    with open(path, "rb") as f:
        return f.read()


def host_text(tree: str, virtual) -> bytes:
    """What a reader the file cannot be tailored for gets (the host's file, or its stand-in)."""
    return virtual.host_substitute() if virtual.host_substitute else host_bytes(tree, virtual.host_name)


def well_formed(path: str, text: str, host_memtotal_kb: int) -> str | None:
    """Why a tailored rendering is malformed (None: it is well formed)."""
    if path == "proc/meminfo":
        values = {}
        for line in text.splitlines():
            match = re.fullmatch(r"(\S+):\s+(\d+)( kB)?", line)
            if not match:
                return f"line {line!r}"
            values[match.group(1)] = int(match.group(2))
        if not values["MemFree"] <= values["MemTotal"] <= host_memtotal_kb:
            return f"MemFree {values['MemFree']} MemTotal {values['MemTotal']} host {host_memtotal_kb}"
        if values["MemAvailable"] > values["MemTotal"] or values["SwapFree"] > values["SwapTotal"]:
            return "available/swap above total"
    elif path == "proc/stat":
        cpus = re.findall(r"^cpu(\d*) (.*)$", text, re.M)
        if not cpus or not all(v.isdigit() for _, fields in cpus for v in fields.split()):
            return "cpu lines"
        for key in ("procs_running", "procs_blocked"):
            if not re.search(rf"^{key} \d+$", text, re.M):
                return key
    elif path == "proc/loadavg":
        match = re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d (\d+)/(\d+) \d+\n", text)
        if not match or int(match.group(1)) > int(match.group(2)):
            return f"loadavg {text!r}"
    elif path == "proc/uptime":
        if not re.fullmatch(r"\d+\.\d\d \d+\.\d\d\n", text):
            return f"uptime {text!r}"
    elif path.startswith("sys/devices/system/cpu/"):
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*\n", text):
            return f"{path} {text!r}"
    elif path == "proc/cpuinfo":
        if not re.match(r"processor\t: \d+\n", text):
            return "cpuinfo does not start with a processor line"
    elif path.startswith("proc/pressure/"):
        line = r"(some|full) avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+"
        if not all(re.fullmatch(line, text_line) for text_line in text.splitlines()):
            return f"pressure {text!r}"
    elif path == "proc/vmstat":
        if not all(re.fullmatch(r"[a-z0-9_]+ -?\d+", line) for line in text.splitlines()):
            return "vmstat line"
    elif path == "proc/swaps":
        if not text.startswith("Filename"):
            return "swaps header"
    elif path == "proc/diskstats":
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 14 or not all(f.isdigit() for i, f in enumerate(fields) if i != 2):
                return f"diskstats line {line!r}"
    return None


def counter_files(tree: str, pid: int) -> list[str]:
    """Every file in the cgroup directories of `pid` and their ancestors (relative to the tree)."""
    with open(os.path.join(tree, "proc", str(pid), "cgroup")) as f:
        paths = {line.split(":", 2)[2].strip() for line in f if line.strip()}
    files: set[str] = set()
    root = os.path.join(tree, "sys/fs/cgroup")
    for top in os.listdir(root):
        base = os.path.join(root, top)
        if not os.path.isdir(base):
            continue
        for path in paths:
            chain = [base]
            for part in [p for p in path.split("/") if p]:
                chain.append(os.path.join(chain[-1], part))
            for directory in chain[-2:]:  # the cgroup and its parent
                if os.path.isdir(directory):
                    files.update(os.path.join(directory, n) for n in os.listdir(directory)
                                 if os.path.isfile(os.path.join(directory, n)))
    # the v2 tree: controllers live directly under sys/fs/cgroup
    for path in paths:
        directory = os.path.join(root, path.lstrip("/"))
        if os.path.isdir(directory) and directory != root:
            files.update(os.path.join(directory, n) for n in os.listdir(directory))
    return sorted(os.path.relpath(f, tree) for f in files if os.path.isfile(f))


MUTATIONS = {
    "missing": None,
    "garbage": b"x y z\nnot a number\n",
    "non-ascii": b"\xff\xfe\x00\x80 12\n",
    "empty": b"",
    "negative": b"-4096\n",
    "huge": b"9" * 100_000 + b"\n",
    "directory": "directory",  # the file replaced by a directory: EISDIR when read
}

CASES = [(HYBRID, HYBRID_CHILD_PID), (V2, V2_15M_PID), (V2, V2_POD_PID)]


@pytest.mark.parametrize("source,pid", CASES, ids=["hybrid", "v2-15m", "v2-pod"])
def test_every_broken_counter_file_gives_a_tailored_or_the_host_file(source, pid, tmp_path):
    tree = copy_tree(source, tmp_path)
    host_memtotal_kb = int(re.search(rb"^MemTotal:\s+(\d+)", host_bytes(tree, "meminfo"), re.M).group(1))
    files = counter_files(tree, pid)
    assert len(files) >= 10, files
    checked = 0
    problems = []
    for relative in files:
        path = os.path.join(tree, relative)
        with open(path, "rb") as f:
            original = f.read()
        for name, mutation in MUTATIONS.items():
            os.unlink(path)
            if mutation == "directory":
                os.mkdir(path)
            elif mutation is not None:
                with open(path, "wb") as f:
                    f.write(mutation)
            observer = Observer()
            server = make_server(tree, observer=observer)
            for virtual_path, virtual in FILES.items():
                try:
                    data = server.content(virtual_path, pid)
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    problems.append(f"{relative} {name}: {virtual_path} raised {type(exc).__name__}: {exc}")
                    continue
                checked += 1
                if data == host_text(tree, virtual):
                    continue
                why = well_formed(virtual_path, data.decode("ascii", "replace"), host_memtotal_kb)
                if why:
                    problems.append(f"{relative} {name}: {virtual_path}: {why}")
            if mutation == "directory":
                os.rmdir(path)
            else:
                os.unlink(path) if os.path.exists(path) else None
            with open(path, "wb") as f:
                f.write(original)
    assert not problems, "\n".join(problems[:40])
    assert checked == len(files) * len(MUTATIONS) * len(FILES)


def test_garbage_is_counted_every_time_logged_once_and_healed(tmp_path, caplog):
    tree = copy_tree(V2, tmp_path)
    stat_path = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope/memory.stat")
    with open(stat_path, "rb") as f:
        original = f.read()
    observer = Observer()
    server = make_server(tree, observer=observer)
    tailored = server.content("proc/meminfo", V2_15M_PID)
    assert re.search(rb"^MemTotal:\s+15360 kB$", tailored, re.M)
    with open(stat_path, "wb") as f:
        f.write(b"anon twelve\n")
    caplog.set_level(logging.INFO, logger="cgroupfs.server")
    for _ in range(25):
        assert server.content("proc/meminfo", V2_15M_PID) == host_bytes(tree, "meminfo")
    assert observer.fallbacks == [("proc/meminfo", "parse_error")] * 25
    logged = [r for r in caplog.records if "proc/meminfo" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    with open(stat_path, "wb") as f:
        f.write(original)
    assert server.content("proc/meminfo", V2_15M_PID) == tailored


def test_a_counter_file_that_vanishes_and_returns(tmp_path):
    tree = copy_tree(HYBRID, tmp_path)
    usage = os.path.join(tree, "sys/fs/cgroup/memory/fixture-parent/fixture-child/memory.usage_in_bytes")
    with open(usage, "rb") as f:
        original = f.read()
    observer = Observer()
    server = make_server(tree, observer=observer)
    tailored = server.content("proc/meminfo", HYBRID_CHILD_PID)
    os.unlink(usage)
    assert server.content("proc/meminfo", HYBRID_CHILD_PID) == host_bytes(tree, "meminfo")
    assert observer.fallbacks == [("proc/meminfo", "parse_error")]
    with open(usage, "wb") as f:
        f.write(original)
    assert server.content("proc/meminfo", HYBRID_CHILD_PID) == tailored


def test_an_unreadable_counter_file_falls_back_and_is_logged_once(tmp_path, caplog):
    # A kernel file that fails with an I/O error (here EISDIR) must not turn every
    # read into an EIO with a traceback in the log.
    tree = copy_tree(V2, tmp_path)
    current = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope/memory.current")
    os.unlink(current)
    os.mkdir(current)
    observer = Observer()
    server = make_server(tree, observer=observer)
    caplog.set_level(logging.INFO, logger="cgroupfs.server")
    for _ in range(10):
        assert server.content("proc/meminfo", V2_15M_PID) == host_bytes(tree, "meminfo")
    assert observer.fallbacks == [("proc/meminfo", "read_error")] * 10
    assert len([r for r in caplog.records if "proc/meminfo" in r.getMessage()]) == 1


def test_cgroup_removed_between_resolution_and_rendering(tmp_path):
    """The cached resolution names a removed cgroup: resolve again, render the new one."""
    tree = copy_tree(V2, tmp_path)
    observer = Observer()
    server = make_server(tree, cache_ttl_s=60, observer=observer)
    assert server.content("proc/cpuinfo", V2_15M_PID)  # the resolution is now cached for 60 s
    # The container stops; its pid now lives in another cgroup (noswap: 256 MiB).
    shutil.rmtree(os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope"))
    with open(os.path.join(tree, f"proc/{V2_15M_PID}/cgroup"), "w") as f:
        f.write("0::/noswap\n")
    meminfo = server.content("proc/meminfo", V2_15M_PID)
    assert re.search(rb"^MemTotal:\s+262144 kB$", meminfo, re.M), meminfo[:200]
    assert observer.fallbacks == []


def test_a_text_is_cached_only_under_the_cgroup_it_was_rendered_for(tmp_path):
    """Resolved to A, moved to B before rendering: B's text must not be cached under A's
    key, or every reader in A would read B's numbers for the next cache interval."""
    tree = copy_tree(V2, tmp_path)
    server = make_server(tree, cache_ttl_s=60)
    scope = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope")
    assert server.content("proc/cpuinfo", V2_15M_PID)  # the resolution (A) is now cached
    shutil.move(scope, scope + ".away")  # A vanishes and the process moves to B (noswap)
    with open(os.path.join(tree, f"proc/{V2_15M_PID}/cgroup"), "w") as f:
        f.write("0::/noswap\n")
    assert re.search(rb"^MemTotal:\s+262144 kB$", server.content("proc/meminfo", V2_15M_PID), re.M)
    # A is back (a container restarted under the same cgroup) and a reader is in it.
    shutil.move(scope + ".away", scope)
    with open(os.path.join(tree, f"proc/{V2_15M_PID}/cgroup"), "w") as f:
        f.write("0::/system.slice/docker-15m.scope\n")
    meminfo = server.content("proc/meminfo", V2_15M_PID)
    assert re.search(rb"^MemTotal:\s+15360 kB$", meminfo, re.M), meminfo[:120]


def test_a_cached_text_does_not_outlive_a_change_of_its_limits(tmp_path):
    """runc's init stats our files before runc writes the limits: the text rendered then
    (unlimited) must not be what the container's first instruction reads."""
    tree = copy_tree(V2, tmp_path)
    server = make_server(tree, cache_ttl_s=60)
    scope = os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope")
    with open(os.path.join(scope, "memory.max"), "w") as f:
        f.write("max\n")
    unlimited = server.content("proc/meminfo", V2_15M_PID)
    assert not re.search(rb"^MemTotal:\s+15360 kB$", unlimited, re.M)
    with open(os.path.join(scope, "memory.max"), "w") as f:
        f.write("15728640\n")  # the runtime writes the limit
    assert re.search(rb"^MemTotal:\s+15360 kB$", server.content("proc/meminfo", V2_15M_PID), re.M)
    with open(os.path.join(scope, "cpu.max"), "w") as f:
        f.write("max 100000\n")
    two_cpus = server.content("sys/devices/system/cpu/online", V2_15M_PID)
    with open(os.path.join(scope, "cpu.max"), "w") as f:
        f.write("50000 100000\n")
    assert server.content("sys/devices/system/cpu/online", V2_15M_PID) != two_cpus


def test_cgroup_removed_and_process_still_naming_it_gets_the_host_file(tmp_path, caplog):
    tree = copy_tree(V2, tmp_path)
    observer = Observer()
    server = make_server(tree, cache_ttl_s=60, observer=observer)
    assert server.content("proc/cpuinfo", V2_15M_PID)
    shutil.rmtree(os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope"))
    caplog.set_level(logging.INFO, logger="cgroupfs.server")
    for _ in range(3):
        assert server.content("proc/meminfo", V2_15M_PID) == host_bytes(tree, "meminfo")
    assert observer.fallbacks == [("proc/meminfo", "cgroup_gone")] * 3
    assert len([r for r in caplog.records if "cgroup_gone" in r.getMessage()]) == 1


def test_cgroup_removed_in_the_middle_of_rendering(tmp_path):
    """Removed after the memory counters were read and before the cpu ones: resolved
    again (the process moved to noswap) and rendered from scratch."""
    tree = copy_tree(V2, tmp_path)
    observer = Observer()
    server = make_server(tree, observer=observer)
    original_cpuset = server.cgroups.cpuset
    calls = []

    def cpuset_then_remove(paths):
        calls.append(paths.v2)
        if len(calls) == 1:
            shutil.rmtree(os.path.join(tree, "sys/fs/cgroup/system.slice/docker-15m.scope"))
            with open(os.path.join(tree, f"proc/{V2_15M_PID}/cgroup"), "w") as f:
                f.write("0::/noswap\n")
        return original_cpuset(paths)

    server.cgroups.cpuset = cpuset_then_remove
    stat = server.content("proc/stat", V2_15M_PID).decode()
    assert calls == ["/system.slice/docker-15m.scope", "/noswap"]
    assert re.findall(r"^cpu\d+ ", stat, re.M) == ["cpu3 "]  # noswap's cpuset is cpu 3 alone
    assert observer.fallbacks == []


def test_reader_that_exited_before_resolution_gets_the_host_file(tmp_path):
    tree = copy_tree(V2, tmp_path)
    observer = Observer()
    server = make_server(tree, observer=observer)
    shutil.rmtree(os.path.join(tree, f"proc/{V2_15M_PID}"))
    for path, virtual in FILES.items():
        assert server.content(path, V2_15M_PID) == host_text(tree, virtual)
    assert {reason for _, reason in observer.fallbacks} == {"unresolved"}


# Any content at all in any counter file (hypothesis picks the file and the bytes).
_V2_TREE: dict[str, str] = {}


def _v2_copy(tmp_path_factory) -> str:
    if "tree" not in _V2_TREE:
        _V2_TREE["tree"] = copy_tree(V2, tmp_path_factory.mktemp("v2-hypothesis"))
    return _V2_TREE["tree"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), content=st.one_of(st.binary(max_size=400), st.text(max_size=200).map(str.encode),
                                         st.lists(st.sampled_from([b"max", b"0", b"-1", b" ", b"\n", b"12345",
                                                                   b"anon", b"rbytes=", b"8:0", b"some"]),
                                                  max_size=30).map(b"".join)))
def test_any_bytes_in_any_counter_file(tmp_path_factory, data, content):
    tree = _v2_copy(tmp_path_factory)
    relative = data.draw(st.sampled_from(counter_files(tree, V2_15M_PID)))
    path = os.path.join(tree, relative)
    with open(path, "rb") as f:
        original = f.read()
    host_memtotal_kb = int(re.search(rb"^MemTotal:\s+(\d+)", host_bytes(tree, "meminfo"), re.M).group(1))
    try:
        with open(path, "wb") as f:
            f.write(content)
        server = make_server(tree)
        for virtual_path, virtual in FILES.items():
            data_out = server.content(virtual_path, V2_15M_PID)
            if data_out != host_text(tree, virtual):
                assert well_formed(virtual_path, data_out.decode("ascii", "replace"), host_memtotal_kb) is None
    finally:
        with open(path, "wb") as f:
            f.write(original)
