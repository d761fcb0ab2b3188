"""A private Docker engine for tests and benchmarks, and a busybox image to run in it.

Everything lives under one temporary directory (data-root, exec-root, socket,
pidfile, config, log); the system's /var/run/docker.sock is never used.  `stop()`
removes the containers, ends dockerd (and the containerd it started) by pid and
lazily unmounts whatever is left under that directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time

from cgroupfs.mountinfo import read_mountinfo
from cgroupfs_daemon.syscalls import detach
from testbed.cgroups import remove_tree
from testbed.timing import scaled

IMAGE = "cgroupfs-test-busybox:latest"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static
# The host's programs and libraries (python3, glibc's getconf, util-linux), for a
# container to run them, read-only (merged /usr or not).
HOST_TOOL_DIRECTORIES = tuple(path for path in ("/usr", "/lib", "/lib64") if os.path.isdir(path))
HOST_TOOLS = [flag for path in HOST_TOOL_DIRECTORIES for flag in ("-v", f"{os.path.realpath(path)}:{path}:ro")]


class EngineUnavailable(Exception):
    """dockerd is missing or did not come up; the message says why."""


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP header (runs in an empty image)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only, as on this host
            return False
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def shared_libraries(binary: str) -> list[str]:
    """The libraries `ldd` lists for `binary`, at the paths the loader looks them up."""
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in listing.splitlines():
        target = line.split("=>")[-1].split("(")[0].strip()
        if target.startswith("/"):
            paths.append(target)
    return paths


def busybox_rootfs_tar(busybox: str = BUSYBOX, host_files: tuple[str, ...] = ()) -> bytes:
    """A root filesystem holding busybox and one symlink per applet, as a tar stream;
    plus `host_files` (at their host paths) and, for the executables among them, the
    libraries ldd lists."""
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = sorted({path for host_file in host_files
                    for path in (host_file, *(shared_libraries(host_file) if os.access(host_file, os.X_OK) else ()))})
    directories = {"bin", "dev", "etc", "proc", "sys", "tmp"}
    for path in files:
        parent = os.path.dirname(path).strip("/")
        while parent:
            directories.add(parent)
            parent = os.path.dirname(parent)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path in files:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":  # a self-link would replace the binary
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buffer.getvalue()


class DockerEngine:
    def __init__(self, base_dir: str | None = None, extra_args: tuple[str, ...] = ()):
        self.base = base_dir or tempfile.mkdtemp(prefix="cgfs-dk-", dir="/tmp")  # short: socket paths
        # More dockerd arguments (e.g. `--add-runtime cgroupfs=PATH --default-runtime cgroupfs`).
        self.extra_args = tuple(extra_args)
        self.socket = os.path.join(self.base, "docker.sock")
        self.host = f"unix://{self.socket}"
        self.pidfile = os.path.join(self.base, "docker.pid")
        self.log_path = os.path.join(self.base, "dockerd.log")
        self.exec_root = os.path.join(self.base, "exec")
        self.process: subprocess.Popen | None = None
        self.docker_cli = shutil.which("docker")
        self.env = dict(os.environ, DOCKER_HOST=self.host)
        self.env.pop("DOCKER_CONTEXT", None)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 60) -> DockerEngine:
        timeout = scaled(timeout)
        dockerd = shutil.which("dockerd")
        if dockerd is None or self.docker_cli is None:
            raise EngineUnavailable("dockerd/docker not found (Debian package docker.io)")
        config = os.path.join(self.base, "daemon.json")
        with open(config, "w") as f:
            json.dump({}, f)  # never pick up the host's /etc/docker/daemon.json
        argv = [dockerd, "--config-file", config,
                "--data-root", os.path.join(self.base, "data"), "--exec-root", self.exec_root,
                "-H", self.host, "--pidfile", self.pidfile,
                "--bridge=none", "--iptables=false", "--ip-masq=false", *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.socket) and self.cli("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """End dockerd (containers die with it) and its containerd, by pid."""
        if self.process is None:
            return
        containerd_pid = self._containerd_pid()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if containerd_pid and _alive(containerd_pid):
            os.kill(containerd_pid, signal.SIGTERM)
            _wait_gone(containerd_pid, 10)
        self.process = None

    def cleanup(self) -> None:
        """Remove every container, stop the engine, unmount and delete the directory.

        Each step runs even when the one before failed (a slow or wedged engine).
        """
        try:
            if self.process is not None and self.process.poll() is None:
                ids = self.cli("ps", "-aq", check=False).stdout.split()
                if ids:
                    self.cli("rm", "-f", *ids, check=False, timeout=300)
        finally:
            try:
                self.stop()
            finally:
                # A dockerd killed while a container was being created leaves that
                # container's shim (and its `runc init`) running on their own.
                kill_engine_leftovers(self.base)
                unmount_under(self.base)
                shutil.rmtree(self.base, ignore_errors=True)
                # dockerd leaves its (by now empty) "docker" parent cgroups behind.  rmdir
                # only removes empty cgroups, so a real engine's busy ones are safe.
                remove_empty_cgroups("docker")

    def _containerd_pid(self) -> int | None:
        try:
            with open(os.path.join(self.exec_root, "containerd", "containerd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- using it -------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 60, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        """Run the docker CLI against this engine; text output."""
        assert self.docker_cli is not None, "the docker CLI is not installed"
        raw = subprocess.run([self.docker_cli, *args], env=self.env, capture_output=True, timeout=scaled(timeout),
                             input=input)
        result = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                             raw.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def build_image(self, name: str = IMAGE, host_files: tuple[str, ...] = ()) -> str:
        """busybox, plus `host_files` (e.g. procps's /usr/bin/top) and their libraries."""
        if not is_static_elf(BUSYBOX):
            raise EngineUnavailable(f"{BUSYBOX} is not a static binary (Debian package busybox-static)")
        self.cli("import", "--change", "ENV PATH=/usr/bin:/bin", "-", name,
                 input=busybox_rootfs_tar(host_files=host_files))
        return name

    def inspect(self, container: str) -> dict:
        return json.loads(self.cli("inspect", container).stdout)[0]

    def init_pid(self, container: str) -> int:
        return int(self.inspect(container)["State"]["Pid"])


def kill_engine_leftovers(base: str, proc_root: str = "/proc") -> None:
    """SIGKILL the containerd shims started for the engine under `base`, and their children.

    Only processes whose command line names `base` (our engine's directories), and the
    processes they started, are touched.
    """
    parents: dict[int, int] = {}
    shims: list[int] = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"{proc_root}/{pid}/stat", "rb") as f:
                parents[pid] = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if b"containerd-shim" in cmdline and base.encode() in cmdline:
            shims.append(pid)
    for shim in shims:
        for pid in [child for child, parent in parents.items() if parent == shim] + [shim]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(shim, 10)


def remove_empty_cgroups(name: str, root: str = "/sys/fs/cgroup") -> None:
    """rmdir the cgroup `name` and its children in every hierarchy where they are empty."""
    entries = os.listdir(root) if os.path.isdir(root) else []
    # v1/hybrid: <root>/<controller>/<name>; pure v2: <root>/<name>
    for directory in [os.path.join(root, entry, name) for entry in entries] + [os.path.join(root, name)]:
        if os.path.isdir(directory):
            remove_tree(directory, attempts=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def unmount_under(directory: str) -> None:
    """Lazily unmount every mount at or below `directory`, deepest first."""
    prefix = os.path.realpath(directory).rstrip("/")
    points = {entry.mount_point for entry in read_mountinfo()}
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True):
        detach(os.fsencode(point))
