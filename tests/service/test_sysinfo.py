"""sysinfo(2) answered for containers (issue 15), with real runc and the real kernel: the
container created by `cgroupfs-runtime`, its calls answered by the daemon, across a
SIGKILL with the fd store handed back (NotifyListener, systemd's stand-in), under a
neighbour calling sysinfo in a tight loop, and with no daemon at all.

Docker's `-m 64m --cpus 1` containers (busybox free and uptime, Python's sysconf, the
raw call) are in tests/docker/test_runtime_docker.py; podman and containerd in
tests/runtime/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from testbed.daemon_process import sysinfo_socket
from testbed.oci_bundle import make_bundle, seccomp_profile
from testbed.runtime_engines import runtime_log, write_runtime_script
from testbed.timing import scaled
from tests.service.harness import FREE_LOOP, ServiceDaemon, free_totals, lines_of, wait_lines

MIB = 1 << 20
LIMIT_KB = 64 * 1024
STORED = {"state", "fuse-cgroupfs", "fuse-cgroupfs-views", "sysinfo-socket"}


def whole_log(daemon: ServiceDaemon) -> str:
    with open(daemon.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def test_sysinfo_is_answered_across_sigkills_and_a_reload(runc_host, tmp_path, notify_socket, runc_containers):
    directory = str(tmp_path)
    mountpoint = os.path.join(directory, "mnt")
    env = {"CGROUPFS_SYSINFO_SOCKET": sysinfo_socket(mountpoint)}
    first = ServiceDaemon(directory, notify=notify_socket, env=env).start()
    daemons = [first]
    try:
        notify_socket.wait_for("READY=1", timeout=scaled(30))
        notify_socket.wait_stored(STORED, timeout=scaled(10))
        script = write_runtime_script(directory, mountpoint, "runc")
        bundle = make_bundle(os.path.join(directory, "bundle"), ["sh", "-c", FREE_LOOP], memory_limit=64 * MIB)
        log = os.path.join(directory, "free.log")
        container = runc_containers(script, bundle, log)
        profile = seccomp_profile(bundle)
        assert profile is not None and profile["listenerPath"] == env["CGROUPFS_SYSINFO_SOCKET"], profile
        assert free_totals(wait_lines(log, 3)) == {str(LIMIT_KB)}
        listeners = [name for name in notify_socket.wait_stored(STORED, timeout=1)
                     if name.startswith("sysinfo-listener-")]
        assert len(listeners) == 1 and listeners[0].endswith(container.replace("-", "_")), listeners

        for _ in range(2):
            victim = daemons[-1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            seen = len(lines_of(log))
            since = time.monotonic()
            successor = ServiceDaemon(directory, notify=notify_socket, env=env).start(handed=notify_socket.stored)
            daemons.append(successor)
            notify_socket.wait_for("READY=1", timeout=scaled(30), after=since)
            # The loop's calls wait for the successor, then go on with the container's numbers.
            lines = wait_lines(log, seen + 5)
            assert free_totals(lines[seen:]) == {str(LIMIT_KB)}, lines[seen:]
            assert "answering sysinfo(2) again for 1 listeners handed over" in successor.log(), successor.log()

        # An upgrade (SIGHUP: re-executed with every descriptor) keeps answering too.
        seen = len(lines_of(log))
        handed_over = "answering sysinfo(2) again for 1 listeners handed over"
        before = whole_log(daemons[-1]).count(handed_over)  # (one log for every instance)
        os.kill(daemons[-1].pid, signal.SIGHUP)
        deadline = time.monotonic() + scaled(30)
        while whole_log(daemons[-1]).count(handed_over) <= before:
            assert time.monotonic() < deadline and daemons[-1].process.poll() is None, daemons[-1].log()
            time.sleep(0.05)
        lines = wait_lines(log, seen + 5)
        assert free_totals(lines[seen:]) == {str(LIMIT_KB)}, lines[seen:]

        # A new limit shows within the cache interval (the struct is kept per container for it).
        seen = len(lines_of(log))
        updated = subprocess.run(["runc", "update", "--memory", str(96 * MIB), container], capture_output=True,
                                 text=True, timeout=scaled(30))
        assert updated.returncode == 0, updated.stderr
        deadline = time.monotonic() + scaled(10)
        while str(96 * 1024) not in free_totals(lines_of(log)[seen:]):
            assert time.monotonic() < deadline, lines_of(log)[seen:]
            time.sleep(0.05)

        # A process started after the restarts: runc sends its own listener to the successor.
        result = subprocess.run(["runc", "exec", container, "free"], capture_output=True, text=True,
                                timeout=scaled(30))
        assert result.returncode == 0 and result.stdout.split("\n")[1].split()[1] == str(96 * 1024), result

        # A clean stop: no socket left for new containers; the listeners stay in the store
        # (a `systemctl restart` hands them on).
        daemons[-1].terminate()
        assert not os.path.exists(env["CGROUPFS_SYSINFO_SOCKET"])
        assert "sysinfo-socket" not in notify_socket.stored
        assert any(name.startswith("sysinfo-listener-") for name in notify_socket.stored), notify_socket.stored
    finally:
        for daemon in daemons:
            daemon.cleanup()
    assert free_totals(lines_of(log)) == {str(LIMIT_KB), str(96 * 1024)}, "every call answered, none failed"


# Calls sysinfo(2) for SECONDS through the syscall number, checks each answer's totalram,
# prints the number of calls and of wrong answers.
TIGHT_LOOP = r"""
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
buffer = ctypes.create_string_buffer(112)
calls = wrong = 0
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    libc.sysinfo(buffer)
    calls += 1
    wrong += int.from_bytes(buffer.raw[32:40], "little") != int(sys.argv[2])
print(calls, wrong, flush=True)
"""


def test_a_container_calling_sysinfo_in_a_tight_loop_does_not_starve_another(runc_host, daemons, tmp_path,
                                                                              runc_containers):
    # Where write_runtime_script's wrapper looks for the socket of the daemon at d/mnt.
    daemon = daemons("d", env={"CGROUPFS_SYSINFO_SOCKET": sysinfo_socket(str(tmp_path / "d" / "mnt"))})
    daemon.wait_serving()
    directory = daemon.directory
    script = write_runtime_script(directory, daemon.mountpoint, "runc")
    seconds = scaled(4.0)
    busy = make_bundle(os.path.join(directory, "busy"), ["python3", "-c", TIGHT_LOOP, str(seconds),
                                                         str(128 * MIB)], memory_limit=128 * MIB, host_tools=True)
    quiet = make_bundle(os.path.join(directory, "quiet"), ["sh", "-c", FREE_LOOP + "; head -1 /proc/meminfo"],
                        memory_limit=64 * MIB)
    quiet_log = os.path.join(directory, "quiet.log")
    runc_containers(script, quiet, quiet_log)
    wait_lines(quiet_log, 2)
    busy_log = os.path.join(directory, "busy.log")
    started = time.monotonic()
    runc_containers(script, busy, busy_log)
    before = len(lines_of(quiet_log))
    deadline = started + seconds + scaled(30)
    while not lines_of(busy_log):
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    during = lines_of(quiet_log)[before:]
    calls, wrong = (int(value) for value in lines_of(busy_log)[0].split())
    print(f"\ntight loop: {calls} calls in {seconds:.1f} s, {wrong} wrong; the other container meanwhile: "
          f"{len(during)} answers")
    assert wrong == 0 and calls > 1000, (calls, wrong)
    # Served in turn: the quiet container's calls (every 0.1 s) kept being answered, with its own value.
    assert len(during) >= 5 and free_totals(during) == {str(LIMIT_KB)}, during


def test_no_daemon_at_create_the_container_starts_and_the_kernel_answers(runc_host, tmp_path, runc_containers):
    directory = str(tmp_path)
    mountpoint = os.path.join(directory, "mnt")  # nobody mounts or listens here
    script = write_runtime_script(directory, mountpoint, "runc")
    bundle = make_bundle(os.path.join(directory, "bundle"), ["sh", "-c", FREE_LOOP], memory_limit=64 * MIB)
    log = os.path.join(directory, "free.log")
    runc_containers(script, bundle, log)
    assert seccomp_profile(bundle) is None  # runc's own spec has no profile; none was added
    with open("/proc/meminfo", encoding="ascii") as f:
        host_total_kb = f.readline().split()[1]
    assert free_totals(wait_lines(log, 2)) == {host_total_kb}
    with open(runtime_log(directory), encoding="utf-8") as f:
        assert "does not answer" in f.read()


def test_a_call_in_hand_at_a_sigkill_is_answered_by_the_successor(runc_host, tmp_path, notify_socket,
                                                                   runc_containers):
    """A daemon killed between taking a call and answering it: the kernel never offers
    that call again, so the successor answers it from the record the dead instance kept
    in the fd store (without it the caller would wait forever).  A tight loop keeps the
    daemon in the middle of an answer nearly all the time."""
    directory = str(tmp_path)
    mountpoint = os.path.join(directory, "mnt")
    env = {"CGROUPFS_SYSINFO_SOCKET": sysinfo_socket(mountpoint)}
    daemons = [ServiceDaemon(directory, notify=notify_socket, env=env).start()]
    try:
        notify_socket.wait_for("READY=1", timeout=scaled(30))
        notify_socket.wait_stored(STORED, timeout=scaled(10))
        script = write_runtime_script(directory, mountpoint, "runc")
        seconds = scaled(6.0)
        bundle = make_bundle(os.path.join(directory, "busy"), ["python3", "-c", TIGHT_LOOP, str(seconds),
                                                               str(64 * MIB)], memory_limit=64 * MIB, host_tools=True)
        log = os.path.join(directory, "busy.log")
        started = time.monotonic()
        runc_containers(script, bundle, log)
        for _ in range(3):
            time.sleep(seconds / 6)
            victim = daemons[-1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            since = time.monotonic()
            daemons.append(ServiceDaemon(directory, notify=notify_socket, env=env).start(
                handed=notify_socket.stored))
            notify_socket.wait_for("READY=1", timeout=scaled(30), after=since)
        # The loop ends on its own (it stops calling after `seconds`) only if no call hangs.
        deadline = started + seconds + scaled(30)
        while not lines_of(log):
            assert time.monotonic() < deadline, f"the looping container hangs: {whole_log(daemons[-1])[-3000:]}"
            time.sleep(0.1)
        calls, wrong = (int(value) for value in lines_of(log)[0].split())
        answered_in_hand = whole_log(daemons[-1]).count("the previous instance had in hand")
        print(f"\ntight loop across 3 SIGKILLs: {calls} calls, {wrong} wrong; calls in hand at a kill, "
              f"answered by the successor: {answered_in_hand}")
        assert wrong == 0 and calls > 1000, (calls, wrong)
    finally:
        for daemon in daemons:
            daemon.cleanup()
