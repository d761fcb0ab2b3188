"""podman and containerd started privately for tests, and `cgroupfs-runtime` as their runtime.

Each engine keeps everything (root, state, sockets, config) under one temporary
directory; the system's engines and their configuration are never used.
`cleanup()` removes the containers, ends what the engine started (by pid, found
by the directory in their command line) and lazily unmounts what is left.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from testbed.cgroups import remove_tree
from testbed.daemon_process import sysinfo_socket
from testbed.docker_engine import BUSYBOX, EngineUnavailable, busybox_rootfs_tar, unmount_under
from testbed.timing import scaled

IMAGE = "localhost/cgroupfs-test-busybox:latest"
CGROUP_ROOT = "/sys/fs/cgroup"


def write_runtime_script(directory: str, mountpoint: str, runtime: str = "runc", wrapper: str | None = None,
                         sysinfo_socket_path: str | None = None) -> str:
    """An executable that runs this checkout's `cgroupfs-runtime` with a test daemon's settings.

    The engines' runtime processes do not all inherit the test's environment, so the
    settings go in the script: the test daemon's mount point, state file and sysinfo
    socket (as testbed.daemon_process sets them), and no settings file.  `wrapper`:
    which cgroupfs-runtime (default: this virtualenv's); `sysinfo_socket_path`: the
    sysinfo socket the wrapper names instead of the daemon's."""
    path = os.path.join(directory, f"cgroupfs-runtime-{runtime}")
    # The virtualenv's (beside its python), else the one on PATH (the v2 lane's guest).
    wrapper = wrapper or shutil.which("cgroupfs-runtime", path=os.path.dirname(sys.executable)) or shutil.which(
        "cgroupfs-runtime")
    if wrapper is None:
        raise EngineUnavailable("cgroupfs-runtime is not installed (pip install -e .)")
    state_file = mountpoint.rstrip("/") + ".state.json"
    sysinfo = sysinfo_socket_path or sysinfo_socket(mountpoint)
    # The wait for the mount: these tests are about what the first instruction reads, not
    # about the bound (100 ms by default), which a loaded host (here, load 10 on 2 cpus:
    # 1 of 60 creates) and the emulated v2 lane can miss; a dead or absent mount still fails
    # at once.  The wrapper's lines also go to runtime_log(directory), for failure reports.
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"export CGROUPFS_CONFIG={mountpoint.rstrip('/')}.no-config CGROUPFS_MOUNTPOINT={mountpoint} "
                f"CGROUPFS_STATE_FILE={state_file} CGROUPFS_SYSINFO_SOCKET={sysinfo} "
                f"CGROUPFS_RUNTIME={runtime} "
                f"CGROUPFS_RUNTIME_WAIT_MS={scaled(2000):g}\n"
                f'exec {wrapper} "$@" 2>>{runtime_log(directory)}\n')
    os.chmod(path, 0o755)
    return path


def runtime_log(directory: str) -> str:
    """Where the scripts of write_runtime_script(directory, ...) append the wrapper's stderr."""
    return os.path.join(directory, "cgroupfs-runtime.log")


def docker_archive(name: str = IMAGE) -> bytes:
    """The busybox root filesystem as a `docker save` archive (what `ctr image import` reads)."""
    layer = busybox_rootfs_tar(BUSYBOX)
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member, data in (("layer.tar", layer), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Engine:
    prefix = "cgfs-engine-"

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix=self.prefix, dir="/tmp")

    def cleanup(self) -> None:
        kill_processes_naming(self.base)
        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


class Podman(_Engine):
    """podman with its own storage, run directory and configuration; the VFS driver (no overlay mounts)."""

    prefix = "cgfs-pm-"

    def __init__(self) -> None:
        super().__init__()
        self.podman = shutil.which("podman")
        self.conf = os.path.join(self.base, "containers.conf")
        with open(self.conf, "w") as f:
            f.write('[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n')
        # podman raises a container's nofile and nproc limits to the maximum, which a host
        # without CAP_SYS_RESOURCE in its bounding set refuses: `podman run` gets what we have.

        self.run_args = [f"--ulimit={name}={hard}:{hard}" for name, hard in (
            ("nofile", 1024),
            ("nproc", 4096))]
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        CONTAINERS_STORAGE_CONF=os.path.join(self.base, "storage.conf"),
                        XDG_RUNTIME_DIR=os.path.join(self.base, "xdg"))
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\nrunroot = "{self.base}/runroot"\ngraphroot = "{self.base}/root"\n')

    def start(self) -> Podman:
        if self.podman is None:
            raise EngineUnavailable("podman not found (Debian package podman)")
        self.cli("import", "--change", "ENV PATH=/bin", "-", IMAGE, input=busybox_rootfs_tar())
        return self

    def cli(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        assert self.podman is not None
        raw = subprocess.run([self.podman, "--root", f"{self.base}/root", "--runroot", f"{self.base}/runroot",
                              "--tmpdir", f"{self.base}/tmp", *args],
                             env=self.env, capture_output=True, timeout=scaled(timeout), input=input)
        result = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                             raw.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def cleanup(self) -> None:
        try:
            if self.podman is not None and os.path.isdir(f"{self.base}/root"):
                self.cli("rm", "-af", "-t", "0", check=False)
        finally:
            super().cleanup()


class Containerd(_Engine):
    """containerd with its own root, state, socket and configuration; `ctr` to drive it."""

    prefix = "cgfs-ctd-"
    def __init__(self) -> None:
        super().__init__()
        # Its own: containerd makes a cgroup of this name in every hierarchy (the parent
        # of its containers'), removed by cleanup(); never one another run uses.
        self.namespace = f"cgfs-test-{os.path.basename(self.base)}"
        self.socket = os.path.join(self.base, "containerd.sock")
        self.config = os.path.join(self.base, "config.toml")
        self.log_path = os.path.join(self.base, "containerd.log")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Containerd:
        containerd = shutil.which("containerd")
        if containerd is None or shutil.which("ctr") is None:
            raise EngineUnavailable("containerd/ctr not found (Debian package containerd)")
        with open(self.config, "w") as f:
            # No CRI (nothing here is Kubernetes): it would want CNI and a sandbox image.
            f.write(f'version = 2\nroot = "{self.base}/root"\nstate = "{self.base}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.socket}"\n[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
                    f'[debug]\n  address = "{self.socket}.debug"\n')
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([containerd, "--config", self.config], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + scaled(timeout)
        while self.ctr("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise EngineUnavailable(f"containerd did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        self.ctr("image", "import", "-", input=docker_archive())
        return self

    def ctr(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        raw = subprocess.run(["ctr", "--address", self.socket, "--namespace", self.namespace, *args],
                             capture_output=True, timeout=scaled(timeout), input=input)
        result = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                             raw.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                for task in self.ctr("task", "ls", "-q", check=False).stdout.split():
                    self.ctr("task", "kill", "-s", "SIGKILL", task, check=False)
                    self.ctr("task", "delete", "-f", task, check=False)
                for container in self.ctr("container", "ls", "-q", check=False).stdout.split():
                    self.ctr("container", "delete", container, check=False)
                self.process.terminate()
                self.process.wait(timeout=30)
        finally:
            try:
                for hierarchy in os.listdir(CGROUP_ROOT):
                    remove_tree(os.path.join(CGROUP_ROOT, hierarchy, self.namespace))
                remove_tree(os.path.join(CGROUP_ROOT, self.namespace))  # a pure v2 host
            finally:
                super().cleanup()


def kill_processes_naming(base: str, proc_root: str = "/proc") -> None:
    """SIGKILL every process whose command line names `base` (an engine's shims, conmon), and their children."""
    import signal

    parents: dict[int, int] = {}
    named: list[int] = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"{proc_root}/{entry}/stat", "rb") as f:
                parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"{proc_root}/{entry}/cmdline", "rb") as f:
                if base.encode() in f.read():
                    named.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    for pid in named + [child for child, parent in parents.items() if parent in named]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
