#!/usr/bin/env python3
"""Run one command as root inside the pure cgroup v2 test VM, and return its exit code.

    python3 tests/vm/run.py [options] -- COMMAND [ARG...]

The VM (built and cached by build.py) boots Debian's 6.1 kernel with cgroup_no_v1=all under
QEMU's software emulation (TCG: the /dev/kvm of these hosts is not usable by QEMU), on a
throw-away copy of the root image (snapshot=on), with no network device.  The checkout is
shared over 9p (read-only unless --rw), shown at /mnt/src and the command's working directory;
the project's Python dependencies are at /mnt/pylib, on every guest python3's path.
pid 1 is guest_init.sh, which runs the command itself; with --init systemd it hands pid 1 to
Debian's systemd, which runs the command as a unit once the machine is up (guest_systemd.sh),
and the command's environment has CGROUPFS_VM_INIT=systemd.
The guest sees the checkout writable, but its writes (__pycache__, .pytest_cache) land in an
overlay on the throw-away root disk, never in the host's tree, unless --rw.

The command's stdout and stderr stream to this process's stdout and stderr.  Exit codes:
the command's own, or
    100  VM infrastructure failure: QEMU or the guest failed before the command could run
         or report its exit code (the boot log's tail is printed)
    124  the command did not finish within --timeout (QEMU is killed)
    130  interrupted (SIGINT/SIGTERM/SIGHUP; QEMU is killed)
QEMU is the only process this starts; it is killed by pid on every way out, and the run's
temporary directory is removed (if this runner is SIGKILLed, QEMU dies with it and the next
run removes the directory).  Nothing is mounted on the host.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (tests/vm/build.py, next to this file)

EXIT_INFRA = 100
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

HERE = Path(__file__).resolve().parent
GUEST_INIT = HERE / "guest_init.sh"
# On the control share with --init systemd: sourced by guest_init.sh, run by the lane's unit.
SYSTEMD_FILES = (HERE / "guest_systemd.sh", HERE / "guest_lane.sh")
QEMU = "qemu-system-x86_64"
RUN_DIR_PREFIX = "cgroupfs-vm-run."


class InfraFailure(Exception):
    """The VM, not the command, failed."""


class Interrupted(Exception):
    pass


def note(message: str) -> None:
    say(f"[vm] {message}")


def say(message: str) -> None:
    """To stderr; a closed stderr (| head) must not turn an exit code into a traceback."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


def host_tsc_khz() -> int | None:
    """The host's TSC rate. Under TCG the guest's TSC ticks at the host's rate; telling the
    guest kernel (tsc_early_khz) skips the calibration that now and then hangs under emulation."""
    try:
        kernel_log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        kernel_log = ""
    for pattern in (r"Refined TSC clocksource calibration: ([0-9.]+) MHz",
                    r"tsc: Detected ([0-9.]+) MHz"):
        match = re.search(pattern, kernel_log)
        if match:
            return round(float(match.group(1)) * 1000)
    try:
        match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        match = None
    return round(float(match.group(1)) * 1000) if match else None


def kernel_command_line(tsc_khz: int | None, extra: str = "", init: str = "script") -> str:
    args = [
        "console=ttyS0", "loglevel=4", "panic=-1", "reboot=t",
        "cgroup_no_v1=all",  # pure v2: no v1 controller can be mounted
        "mitigations=off",   # no speculative-execution workarounds to emulate
        "random.trust_cpu=on", "nokaslr",
        # TCG's TSC is the host's (constant, nonstop); the guest's sync check sees warps
        # between vCPU threads and would fall back to jiffies (4 ms clock resolution).
        "tsc=reliable",
    ]
    if tsc_khz:
        args.append(f"tsc_early_khz={tsc_khz}")
    if init == "systemd":
        # cgroup2 only (systemd 252's default, said anyway); the console shows failed units only.
        args += ["systemd.unified_cgroup_hierarchy=1", "systemd.show_status=error"]
    return " ".join(args + extra.split())


def qemu_argv(artefacts: build.Artefacts, run_dir: Path, src: Path, args, fds: dict[str, int]) -> list[str]:
    fsdevs = [("ctl", run_dir / "ctl", False), ("src", src, not args.rw)]
    argv = [
        QEMU, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(args.cpus), "-m", f"{args.memory}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{run_dir / 'console.log'}",
        "-kernel", str(artefacts.vmlinux), "-initrd", str(artefacts.initramfs),
        "-append", kernel_command_line(host_tsc_khz(), args.kernel_args, args.init),
        # The guest finds its disks by serial (/sys/block/vdX/serial), not by probe order.
        "-drive", f"id=root,file={artefacts.rootfs},format=raw,if=none,snapshot=on,cache=unsafe",
        "-device", "virtio-blk-device,drive=root,serial=root",
        "-drive", f"id=pylib,file={artefacts.pylib},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=pylib,serial=pylib",
    ]
    for tag, path, readonly in fsdevs:
        argv += ["-fsdev", f"local,id={tag},path={path},security_model=none"
                 + (",readonly=on" if readonly else ""),
                 "-device", f"virtio-9p-device,fsdev={tag},mount_tag={tag}"]
    argv += ["-device", "virtio-serial-device,max_ports=4"]
    for name, fd in fds.items():
        argv += ["-chardev", f"file,id=port-{name},path=/dev/fd/{fd}",
                 "-device", f"virtserialport,chardev=port-{name},name={name}"]
    return argv


def write_control_files(ctl: Path, command: list[str], env: dict[str, str], args) -> None:
    ctl.mkdir()
    shutil.copy2(GUEST_INIT, ctl / "guest-init.sh")
    (ctl / "guest-init.sh").chmod(0o755)
    if args.init == "systemd":
        for path in SYSTEMD_FILES:
            shutil.copy2(path, ctl / path.name)
    (ctl / "command.sh").write_text(shlex.join(command) + "\n")
    (ctl / "env.sh").write_text("".join(f"export {key}={shlex.quote(value)}\n"
                                        for key, value in env.items()))
    (ctl / "settings.sh").write_text(f"VM_SWAP_MIB={args.swap}\nVM_SRC_RW={int(args.rw)}\nVM_INIT={args.init}\n")


def pump(source: int, sink) -> None:
    """Copy a pipe to our stdout/stderr as it arrives."""
    with os.fdopen(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            try:
                sink.write(chunk)
                sink.flush()
            except OSError:
                pass  # our reader went away: keep draining, or QEMU would block on the port


def read_control(source: int, lines: queue.Queue) -> None:
    with os.fdopen(source, "rb", buffering=0) as pipe:
        buffer = b""
        while chunk := pipe.read(4096):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines.put(line.decode(errors="replace").strip())
    lines.put(None)  # QEMU closed the port: it has exited


def tail(path: Path, count: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-count:])
    except OSError:
        return "(none)"


def boot_and_run(artefacts, command, env, args, run_dir: Path) -> int | None:
    src = Path(args.src).resolve()
    write_control_files(run_dir / "ctl", command, env, args)
    pipes = {name: os.pipe() for name in ("out", "err", "ctl")}
    # QEMU opens /dev/fd/N of each pipe's write end, inherited under the same number.
    guest_fds = {name: write_end for name, (_, write_end) in pipes.items()}

    qemu_log = open(run_dir / "qemu.log", "wb")
    argv = qemu_argv(artefacts, run_dir, src, args, guest_fds)
    started = time.monotonic()
    try:
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log,
                                pass_fds=tuple(guest_fds.values()), preexec_fn=die_with_parent,
                                start_new_session=True)
    except OSError as error:
        raise InfraFailure(f"cannot start {QEMU}: {error}") from None
    finally:
        qemu_log.close()
        for _, write_end in pipes.values():
            os.close(write_end)
    note(f"qemu pid {qemu.pid}: {args.cpus} vCPUs (TCG), {args.memory} MiB, kernel "
         f"{artefacts.kernel_release}, cgroup_no_v1=all, init: {args.init}, /mnt/src = {src}"
         f"{' (read-write)' if args.rw else ' (guest writes to an overlay)'}")
    control: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=pump, args=(pipes["out"][0], sys.stdout.buffer), daemon=True),
               threading.Thread(target=pump, args=(pipes["err"][0], sys.stderr.buffer), daemon=True),
               threading.Thread(target=read_control, args=(pipes["ctl"][0], control), daemon=True)]
    for thread in threads:
        thread.start()

    def infra(reason: str) -> InfraFailure:
        return InfraFailure(f"{reason}\n--- qemu ---\n{tail(run_dir / 'qemu.log')}\n"
                            f"--- guest console (last lines) ---\n{tail(run_dir / 'console.log')}")

    try:
        deadline = started + args.boot_timeout
        phase = "boot"
        status = None
        while True:
            try:
                line = control.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if phase == "boot":
                    raise infra(f"the guest did not come up within {args.boot_timeout:.0f}s") from None
                if phase == "run":
                    note(f"the command did not finish within {args.timeout:.0f}s: killing qemu pid {qemu.pid}")
                    return EXIT_TIMEOUT
                break  # "exit": the guest did not power off in time; killed below
            if line is None:
                if phase == "boot":
                    raise infra("qemu exited before the guest was ready")
                if phase == "run":
                    raise infra("qemu exited before the command reported its exit code")
                break
            if line.startswith("INFRA "):
                raise infra(f"guest set-up failed: {line[6:]}")
            if line.startswith("READY") and phase == "boot":
                guest_uptime = line.split()[1] if len(line.split()) > 1 else "?"
                note(f"booted in {time.monotonic() - started:.1f}s (guest uptime {guest_uptime}s); "
                     f"running: {shlex.join(args.command)}")
                phase, deadline = "run", time.monotonic() + args.timeout
                run_started = time.monotonic()
            elif line.startswith("EXIT ") and phase == "run":
                status = int(line.split()[1])
                note(f"command exited with {status} after {time.monotonic() - run_started:.1f}s")
                phase, deadline = "exit", time.monotonic() + 30
            elif line == "DONE":
                deadline = min(deadline, time.monotonic() + 10)
        try:
            qemu.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        for thread in threads[:2]:
            thread.join(timeout=5)  # the last of the output, after the guest powered off
        note(f"VM total {time.monotonic() - started:.1f}s")
        return status
    finally:
        stop(qemu)


def remove_orphaned_run_dirs() -> None:
    """Run directories of runners that were SIGKILLed (their QEMU died with them)."""
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        pid = path.name.removeprefix(RUN_DIR_PREFIX).split(".")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def die_with_parent() -> None:
    """In QEMU before exec: SIGKILL it if this runner dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def stop(qemu: subprocess.Popen) -> None:
    if qemu.poll() is not None:
        return
    try:
        os.kill(qemu.pid, signal.SIGKILL)  # by pid: nothing in the guest needs saving
    except ProcessLookupError:
        pass
    qemu.wait()


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] -- COMMAND [ARG...]")
    parser.add_argument("--timeout", type=float, default=3000, help="seconds for the command (default 3000)")
    # ~10 s on a quiet host, 60-80 s measured on one loaded by other emulators and benchmarks.
    parser.add_argument("--boot-timeout", type=float, default=300, help="seconds to boot (default 300)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=3072, help="MiB (default 3072)")
    parser.add_argument("--swap", type=int, default=512, help="MiB of swap in the guest, 0 for none (default 512)")
    parser.add_argument("--src", default=str(build.REPO), help="directory shared at /mnt/src (default: this checkout)")
    parser.add_argument("--rw", action="store_true",
                        help="let the guest write into the checkout (default: its writes go to a "
                             "throw-away overlay)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the command (repeatable)")
    parser.add_argument("--init", choices=("script", "systemd"), default="script",
                        help="pid 1: guest_init.sh running the command (default), or systemd "
                             "running it as a unit once the machine is up")
    parser.add_argument("--kernel-args", default="", help="more kernel command line (e.g. loglevel=7)")
    parser.add_argument("--console-log", metavar="FILE", help="keep the guest's kernel console here")
    parser.add_argument("--packages", default="", help="extra Debian packages for the guest image")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given")
    return args


def guest_environment(args) -> dict[str, str]:
    env = {"CGROUPFS_IN_VM": "1", "PYTHONUNBUFFERED": "1"}
    if args.init == "systemd":
        env["CGROUPFS_VM_INIT"] = "systemd"  # selects tests/vm/test_systemd_*.py
    for item in args.env:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise SystemExit(f"--env wants NAME=VALUE, got {item!r}")
        env[key] = value
    return env


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("tests/vm/run.py must run as root", file=sys.stderr)
        return 2

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    run_dir = None
    try:
        if shutil.which(QEMU) is None:
            raise InfraFailure(f"{QEMU} is not installed (Debian package qemu-system-x86)")
        try:
            artefacts = build.ensure(args.packages)
        except build.BuildError as error:
            raise InfraFailure(f"cannot build the VM: {error}") from None
        remove_orphaned_run_dirs()
        run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}."))
        status = boot_and_run(artefacts, args.command, guest_environment(args), args, run_dir)
        return EXIT_TIMEOUT if status is None else status
    except InfraFailure as error:
        say(f"VM infrastructure failure: {error}")
        return EXIT_INFRA
    except Interrupted as signame:
        note(f"interrupted by {signame}: qemu killed")
        return EXIT_INTERRUPTED
    finally:
        if run_dir is not None:
            if args.console_log and (run_dir / "console.log").exists():
                shutil.copy(run_dir / "console.log", args.console_log)
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
