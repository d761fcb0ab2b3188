"""Security: what one container can learn or do through cgroupfs.

- A reader in cgroup (container) A learns nothing specific to B: none of B's limits,
  usage, pids or names appear in A's files, and B's activity does not move A's numbers.
- The files are read-only for everyone, root in a container included; a container
  cannot unmount its injected files or write through them, even with CAP_SYS_ADMIN.
- The metrics endpoint listens on loopback by default and exports no environment
  variables or command lines.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from cgroupfs.layout import CONTAINER_TARGETS, docker_volume_flags, flag_targets
from cgroupfs.table import FILES
from testbed.daemon_process import REPO
from tests.reliability.support import MIB, free_port, memtotal_kb, wait_for

# meminfo keys computed from the reader's cgroup (docs/formulas.md); the other lines are the host's.
CGROUP_MEMINFO_KEYS = {
    "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive",
    "Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)", "Unevictable", "Mlocked",
    "SwapTotal", "SwapFree", "Dirty", "Writeback", "AnonPages", "Mapped", "Shmem", "KReclaimable", "Slab",
    "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "SecPageTables", "Percpu", "AnonHugePages",
    "ShmemHugePages", "FileHugePages", "Zswap", "Zswapped",
}
HOST_STAT_LINES = ("intr", "ctxt", "btime", "processes", "softirq")


def derived_lines(path: str, text: str) -> list[str]:
    """The lines of a file computed from the reader's cgroup, not copied from the host."""
    lines = text.splitlines()
    if path.endswith("meminfo"):
        return [line for line in lines if line.split(":")[0] in CGROUP_MEMINFO_KEYS]
    if path.endswith("/stat"):
        return [line for line in lines if not line.startswith(HOST_STAT_LINES)]
    if path.endswith("cpuinfo"):
        return [line for line in lines if line.startswith("processor")]
    return lines


def numbers(lines: list[str]) -> set[int]:
    return {int(n) for line in lines for n in re.findall(r"\d+", line)}


READ_ALL = "for f in {files}; do echo \"=== $f\"; head -n 100000 $f; done"


def split_files(output: str) -> dict[str, str]:
    parts = re.split(r"^=== (\S+)\n", output, flags=re.M)[1:]
    return {path: text for path, text in zip(parts[::2], parts[1::2])}


def read_all_in_cgroup(cgroup, mountpoint: str) -> dict[str, str]:
    files = " ".join(f"{mountpoint}/{f}" for f in FILES)
    result = cgroup.run(["sh", "-c", READ_ALL.format(files=files)], timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return {os.path.relpath(p, mountpoint): t for p, t in split_files(result.stdout.decode()).items()}


def stat_ticks(stat: str) -> int:
    """user + system over the per-cpu lines."""
    return sum(int(f[0]) + int(f[2]) for f in (line.split()[1:] for line in stat.splitlines()
                                               if re.match(r"cpu\d+ ", line)))


def meminfo_kb(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+):\s+(\d+)", text, re.M)}


def test_cgroup_a_learns_nothing_about_cgroup_b(start_daemon, make_cgroup):
    daemon = start_daemon()
    mnt = daemon.mountpoint
    b = make_cgroup()
    b.set_memory_limit(72 * MIB)
    b_processes = [b.popen([sys.executable, "-c", "x = bytearray(23 << 20); import time; time.sleep(600)"])]
    b_processes += [b.popen(["sleep", "600"]) for _ in range(5)]
    a = make_cgroup()
    a.set_memory_limit(40 * MIB)
    online = sorted(os.sched_getaffinity(0))
    if len(online) > 1:
        a.set_cpus(str(online[0]))
    a_sleeper = a.popen(["sleep", "600"])
    try:
        time.sleep(0.5)  # B's allocation is resident
        b_view = read_all_in_cgroup(b, mnt)
        first = read_all_in_cgroup(a, mnt)
        b_mem = meminfo_kb(b_view["proc/meminfo"])
        assert b_mem["MemTotal"] == 72 * 1024 and memtotal_kb(first["proc/meminfo"]) == 40 * 1024
        b_usage_kb = b_mem["MemTotal"] - b_mem["MemFree"]
        assert b_usage_kb > 23 * 1024
        b_pids = set(b.pids())
        # 1. No value specific to B in A's cgroup-derived lines; no name of B anywhere.
        secrets = {72 * 1024, 72 * MIB, b_mem["MemFree"], b_mem["MemAvailable"], b_usage_kb}
        for path, text in first.items():
            leaked = numbers(derived_lines(path, text)) & secrets
            assert not leaked, (path, leaked)
            assert b.relative not in text
        loadavg = first["proc/loadavg"].split()
        running, total = map(int, loadavg[3].split("/"))
        assert int(loadavg[4]) not in b_pids and total <= 4  # A: its sleeper, sh, head
        # 2. B's activity does not move A's numbers.
        b_processes.append(b.popen([sys.executable, "-c", "x = bytearray(16 << 20); import time; time.sleep(600)"]))
        b_processes += [b.popen(["sleep", "600"]) for _ in range(20)]
        burners = [b.popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
                   for _ in online]
        for burner in burners:
            burner.wait(timeout=30)
        b.set_memory_limit(96 * MIB)
        second = read_all_in_cgroup(a, mnt)
        m1, m2 = meminfo_kb(first["proc/meminfo"]), meminfo_kb(second["proc/meminfo"])
        assert (m1["MemTotal"], m1["SwapTotal"]) == (m2["MemTotal"], m2["SwapTotal"])
        assert abs(m1["MemFree"] - m2["MemFree"]) < 1024, (m1["MemFree"], m2["MemFree"])  # B grew by 16 MiB
        assert stat_ticks(second["proc/stat"]) - stat_ticks(first["proc/stat"]) < 30  # B burned >= 150
        assert second["proc/loadavg"].split()[3].split("/")[1] == str(total)
        for path in ("proc/cpuinfo", "sys/devices/system/cpu/online", "proc/swaps"):
            assert derived_lines(path, second[path]) == derived_lines(path, first[path]), path
    finally:
        for process in [*b_processes, a_sleeper]:
            process.kill()
            process.wait()


def test_a_cgroup_name_cannot_forge_a_line_of_proc_pid_cgroup(hierarchy):
    """The daemon trusts /proc/<tid>/cgroup line by line: the kernel refuses cgroup names
    with a newline, so no container with a delegated subtree can forge another's path."""
    controller = "pids" if hierarchy.version_of("pids") == 1 else "memory"
    mount = hierarchy.v1[controller].directory if hierarchy.version_of(controller) == 1 else hierarchy.v2.directory
    path = os.path.join(mount, f"cgroupfs-rel-{os.getpid()}-x\n0::")
    with pytest.raises(OSError) as info:
        os.mkdir(path)
    assert info.value.errno == errno.EINVAL
    assert not os.path.exists(path)


# --- containers ------------------------------------------------------------------------

@pytest.fixture
def docker_daemon(docker_engine, start_daemon):
    return start_daemon("--docker-host", docker_engine.host)


def exec_in(engine, name: str, *argv: str) -> subprocess.CompletedProcess:
    return engine.cli("exec", name, *argv, check=False)


def read_all_in_container(engine, name: str) -> dict[str, str]:
    """Every file of ours, where the container has it (each target is "/" + its path)."""
    files = " ".join("/" + relative for relative in FILES)
    result = exec_in(engine, name, "sh", "-c", READ_ALL.format(files=files))
    assert result.returncode == 0, result.stderr
    by_target = split_files(result.stdout)
    return {relative: by_target["/" + relative] for relative in FILES}


def host_pids_of(engine, name: str) -> set[int]:
    init = engine.init_pid(name)
    with open(f"/proc/{init}/cgroup") as f:
        memory = next(line.split(":", 2)[2].strip() for line in f if ":memory:" in line or line.startswith("0::"))
    pids = {init}
    for root in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        procs = os.path.join(root, memory.lstrip("/"), "cgroup.procs")
        if os.path.exists(procs):
            with open(procs) as f:
                pids |= {int(p) for p in f.read().split()}
            break
    return pids


def test_container_a_learns_nothing_about_container_b(docker_engine, docker_daemon, run_container):
    from testbed.docker_engine import IMAGE

    flags = docker_volume_flags(docker_daemon.mountpoint)
    b = run_container("-m", "72m", *flags, IMAGE, "sh", "-c",
                      "for i in 1 2 3 4 5; do sleep 600 & done; exec sleep 600")
    time.sleep(3)  # B is older than A: their uptimes differ by 3 s
    a = run_container("-m", "40m", "--cpuset-cpus", "0", *flags, IMAGE, "sleep", "600")
    for name in (a, b):  # the files runc cannot bind (vmstat, pressure) come from the watcher
        wait_injected_files(docker_engine, name, docker_daemon.mountpoint)
    b_view = read_all_in_container(docker_engine, b)
    a_view = read_all_in_container(docker_engine, a)
    assert memtotal_kb(a_view["proc/meminfo"]) == 40 * 1024 and memtotal_kb(b_view["proc/meminfo"]) == 72 * 1024
    b_mem = meminfo_kb(b_view["proc/meminfo"])
    b_info = docker_engine.inspect(b)
    b_pids = host_pids_of(docker_engine, b)
    assert len(b_pids) >= 6
    secrets = {72 * 1024, 72 * MIB, b_mem["MemFree"], b_mem["MemAvailable"], *b_pids}
    for path, text in a_view.items():
        leaked = numbers(derived_lines(path, text)) & secrets
        assert not leaked, (path, leaked)
        assert b_info["Id"][:12] not in text and b not in text
    a_uptime, b_uptime = float(a_view["proc/uptime"].split()[0]), float(b_view["proc/uptime"].split()[0])
    assert a_uptime < 60 and b_uptime - a_uptime >= 2, (a_uptime, b_uptime)
    assert a_view["sys/devices/system/cpu/online"].strip() == "0"
    running, total = map(int, a_view["proc/loadavg"].split()[3].split("/"))
    assert total <= 3  # A's sleep, sh and head; B has 7


def wait_injected_files(engine, name: str, mountpoint: str) -> None:
    from testbed.docker_checks import wait_injected

    wait_injected(engine, name, mountpoint, timeout=10)


@pytest.mark.parametrize("how", ["injected", "flags"])
def test_root_in_a_container_cannot_write_or_unmount_the_files(docker_engine, docker_daemon, run_container, how):
    from testbed.docker_engine import IMAGE

    extra = [] if how == "injected" else docker_volume_flags(docker_daemon.mountpoint)
    name = run_container("-m", "64m", *extra, IMAGE, "sleep", "600")
    if how == "injected":
        wait_injected_files(docker_engine, name, docker_daemon.mountpoint)
    for target in (CONTAINER_TARGETS if how == "injected" else flag_targets()).values():
        file = f"{target}/online" if target == "/sys/devices/system/cpu" else target  # the directory: a file in it
        for command in (f"echo x > {file}", f"echo x >> {file}", f": > {file}"):
            result = exec_in(docker_engine, name, "sh", "-c", command)
            assert result.returncode != 0 and "Read-only file system" in result.stderr, (command, result.stderr)
        # EPERM, which busybox words "Operation not permitted" (umount) or "permission denied" (mount)
        for argv in (["umount", target], ["umount", "-l", target], ["mount", "-o", "remount,rw,bind", target]):
            result = exec_in(docker_engine, name, *argv)
            assert result.returncode != 0 and re.search(r"Operation not permitted|permission denied",
                                                        result.stderr), (argv, result.stderr)
    assert memtotal_kb(exec_in(docker_engine, name, "head", "-n", "1", "/proc/meminfo").stdout) == 64 * 1024


def test_cap_sys_admin_in_a_container_still_cannot_write_through(docker_engine, docker_daemon, run_container):
    """With CAP_SYS_ADMIN a container can remount its bind read-write, or remount the
    FUSE superblock itself: writes still fail, because the daemon mounts read-only and
    answers every writing open with EROFS."""
    from testbed.docker_engine import IMAGE

    name = run_container("-m", "64m", "--cap-add", "SYS_ADMIN", "--security-opt", "apparmor=unconfined",
                         IMAGE, "sleep", "600")
    wait_injected_files(docker_engine, name, docker_daemon.mountpoint)
    for remount in ("remount,rw,bind", "remount,rw"):
        exec_in(docker_engine, name, "mount", "-o", remount, "/proc/meminfo")  # may or may not be allowed
        result = exec_in(docker_engine, name, "sh", "-c", "echo x > /proc/meminfo")
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (remount, result.stderr)
    assert memtotal_kb(exec_in(docker_engine, name, "head", "-n", "1", "/proc/meminfo").stdout) == 64 * 1024
    assert docker_daemon.process.poll() is None


# --- the metrics endpoint ---------------------------------------------------------------

def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the network namespace of `pid`."""
    found = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/{pid}/net/{name}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state != "0A":
                    continue
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                if width == 8:
                    text = ".".join(str(b) for b in raw[::-1])
                else:
                    words = [raw[i:i + 4][::-1].hex() for i in range(0, 16, 4)]
                    text = ":".join(w[j:j + 4] for w in words for j in (0, 4))
                found.add((text, int(port, 16)))
    return found


def test_the_metrics_endpoint_listens_on_loopback_by_default(hierarchy, tmp_path):
    """Started without --metrics-address, in a network namespace of its own (so that the
    default port is free whatever runs on this host)."""
    mountpoint = tmp_path / "mnt"
    env = dict(os.environ, PYTHONPATH=REPO, CGROUPFS_STATE_FILE=str(tmp_path / "state.json"),
               CGROUPFS_CONFIG=str(tmp_path / "no-such-config"))
    log = open(tmp_path / "daemon.log", "wb")
    process = subprocess.Popen(
        ["unshare", "--net", "sh", "-c",
         f"ip link set lo up && exec {sys.executable} -m cgroupfs_daemon.cli daemon --mountpoint {mountpoint} --no-docker"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.exists(mountpoint / "proc/meminfo"), 20, "the mount")
        daemon_pid = wait_for(lambda: _daemon_child(process.pid), 10, "the daemon process")
        sockets = wait_for(lambda: listening_sockets(daemon_pid), 10, "a listening socket")
        assert sockets == {("127.0.0.1", 9477)}
    finally:
        process.terminate()
        process.wait(timeout=20)
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        log.close()


def _daemon_child(pid: int) -> int | None:
    # `sh -c 'exec python ...'`: the same pid once exec'd.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"cgroupfs_daemon.cli" in f.read() else None
    except OSError:
        return None


def test_metrics_expose_no_environment_or_command_line(start_daemon, make_cgroup, docker_engine, run_container):
    from testbed.docker_engine import IMAGE

    port = free_port()
    daemon = start_daemon("--metrics-address", f"127.0.0.1:{port}", "--docker-host", docker_engine.host)
    marker = f"cgroupfs-rel-secret-{os.getpid()}"
    cgroup = make_cgroup()
    env = dict(os.environ, CGROUPFS_REL_TOKEN=f"{marker}-env")
    sleeper = cgroup.popen(["sh", "-c", f"cat {daemon.mountpoint}/proc/meminfo >/dev/null; exec sleep 600 "
                                        f"# {marker}-argv"], env=env)
    name = run_container("-m", "48m", "-e", f"CGROUPFS_REL_TOKEN={marker}-docker-env", IMAGE,
                         "sh", "-c", f"exec sleep 600 # {marker}-docker-argv")
    try:
        wait_for(lambda: name in _scrape(port), 20, "the container in the metrics")
        text = _scrape(port)
        assert marker not in text
        assert "CGROUPFS_REL_TOKEN" not in text
        assert docker_engine.socket not in text  # the engine's socket is not advertised either
        assert re.search(rf'name="{name}"', text)  # the container is there, by name only
    finally:
        sleeper.kill()
        sleeper.wait()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()
