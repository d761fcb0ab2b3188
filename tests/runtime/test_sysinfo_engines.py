"""sysinfo(2) answered by the daemon in podman and containerd containers (issue #15).

busybox `free` and `uptime` ask sysinfo(2), never /proc: what they print is the
container's only when `cgroupfs-runtime` trapped the call (daemon/runtime_seccomp.py).
podman puts its default seccomp profile in config.json, sysinfo in its allow rule:
the wrapper must move it out.  `ctr run` has no profile unless --seccomp: the
wrapper's minimal one.
"""

from __future__ import annotations

import os
import re
import shlex
import time

import pytest

from testbed.runtime_engines import IMAGE, runtime_log, write_runtime_script

LIMIT_BYTES = 64 * 1024 * 1024
MEMTOTAL = ["awk", "/^MemTotal:/{print $2}", "/proc/meminfo"]
# busybox uptime: `up [D day(s), ](H:MM|M min),`.
UPTIME = re.compile(r"\bup\s+(?:(?P<days>\d+) days?,\s*)?(?:(?P<hours>\d+):(?P<minutes>\d+)|(?P<only>\d+) min),")
LOADS = re.compile(r"load average: (\d+\.\d+), (\d+\.\d+), (\d+\.\d+)\s*$", re.MULTILINE)


def free_total_kib(output: str) -> int:
    """The total of busybox free's `Mem:` line (KiB)."""
    for line in output.splitlines():
        fields = line.split()
        if fields[:1] == ["Mem:"]:
            return int(fields[1])
    raise AssertionError(f"no Mem: line in {output!r}")


def uptime_minutes(output: str) -> int:
    """The time busybox uptime says the system is up, in whole minutes."""
    match = UPTIME.search(output)
    assert match is not None, f"no uptime in {output!r}"
    if match["only"] is not None:
        minutes = int(match["only"])
    else:
        minutes = int(match["hours"]) * 60 + int(match["minutes"])
    return int(match["days"] or 0) * 24 * 60 + minutes


def host_uptime_minutes() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0])) // 60


def host_memtotal_kib() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))


def test_podman_free_and_uptime_are_the_containers(base, daemon, podman):
    runtime = write_runtime_script(base, daemon.mountpoint)
    started = time.monotonic()
    shown = podman.cli("run", "--rm", "--network", "none", "--runtime", runtime, *podman.run_args, "-m", "64m",
                       IMAGE, "sh", "-c", "free && uptime")
    age_minutes = int(time.monotonic() - started) // 60  # the container is younger than the `podman run`
    assert free_total_kib(shown.stdout) == LIMIT_BYTES // 1024, shown.stdout
    assert uptime_minutes(shown.stdout) <= age_minutes < host_uptime_minutes(), shown.stdout
    assert LOADS.search(shown.stdout), shown.stdout  # the loads, after the uptime, still parse


@pytest.mark.parametrize("profile", [[], ["--seccomp"]], ids=["no-profile", "default-profile"])
def test_containerd_free_is_the_containers(base, daemon, containerd, profile):
    runtime = write_runtime_script(base, daemon.mountpoint)
    name = f"cgfs-sysinfo-{len(profile)}-{os.getpid()}"
    shown = containerd.ctr("run", "--rm", "--runc-binary", runtime, *profile, "--memory-limit", str(LIMIT_BYTES),
                           IMAGE, name, "free")
    assert free_total_kib(shown.stdout) == LIMIT_BYTES // 1024, shown.stdout


def test_podman_without_the_sysinfo_socket_gets_the_kernels_answer(base, daemon, podman):
    """The wrapper names a socket nobody listens on: the container starts, with its files
    (MemTotal the limit) but sysinfo(2) left to the kernel (the host's total)."""
    directory = os.path.join(base, "no-sysinfo")
    os.makedirs(directory, exist_ok=True)
    runtime = write_runtime_script(directory, daemon.mountpoint,
                                   sysinfo_socket_path=os.path.join(directory, "nobody.sock"))
    shown = podman.cli("run", "--rm", "--network", "none", "--runtime", runtime, *podman.run_args, "-m", "64m",
                       IMAGE, "sh", "-c", f"free && {shlex.join(MEMTOTAL)}")
    host = host_memtotal_kib()
    # sysinfo's totalram is the kernel's MemTotal; the margin covers a balloon between the two reads.
    assert abs(free_total_kib(shown.stdout) - host) <= host // 1000, shown.stdout
    assert shown.stdout.split()[-1] == str(LIMIT_BYTES // 1024)
    with open(runtime_log(directory), encoding="utf-8") as f:
        assert "sysinfo(2) left to the kernel in this container: the daemon's socket" in f.read()
