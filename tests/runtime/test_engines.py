"""`cgroupfs-runtime` under podman and containerd, and the heal of every engine's containers.

Each engine is started privately (testbed/runtime_engines.py, through conftest.py's
fixtures) and removed afterwards.  Host-only: the v2 lane's VM has Docker but neither
podman nor a second containerd set-up (see the README's test section).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from cgroupfs_daemon.engine_setup import setup as engine_setup
from testbed.docker_engine import IMAGE as DOCKER_IMAGE
from testbed.runtime_engines import IMAGE, write_runtime_script
from testbed.timing import scaled, wait_for
from tests.conftest import require
from tests.docker.engine import running_engine

MEMTOTAL = ["awk", "/^MemTotal:/{print $2}", "/proc/meminfo"]
LIMIT = str(15 * 1024 * 1024)


def test_podman_first_instruction(base, daemon, podman):
    runtime = write_runtime_script(base, daemon.mountpoint)
    shown = podman.cli("run", "--rm", "--network", "none", "--runtime", runtime, *podman.run_args, "-m", "15m",
                       IMAGE, *MEMTOTAL)
    assert shown.stdout.strip() == "15360"


def test_containerd_first_instruction(base, daemon, containerd):
    runtime = write_runtime_script(base, daemon.mountpoint)
    shown = containerd.ctr("run", "--rm", "--runc-binary", runtime, "--memory-limit", LIMIT, IMAGE,
                           f"cgfs-first-{os.getpid()}", *MEMTOTAL)
    assert shown.stdout.strip() == "15360"


def test_containerd_loads_what_setup_wrote(base):
    require(shutil.which("containerd") is not None, "containerd is not installed (Debian package containerd)")
    config = os.path.join(base, "setup-config.toml")
    with open(config, "w") as f:
        f.write("# the operator's comment\nversion = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n"
                "    sandbox_image = \"registry.k8s.io/pause:3.6\"  # kept\n")
    engine_setup("containerd", config, "/opt/cgroupfs/bin/cgroupfs-runtime")
    dump = subprocess.run(["containerd", "--config", config, "config", "dump"], capture_output=True, text=True,
                          timeout=scaled(60), check=True).stdout
    section = dump[dump.index('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]'):]
    assert 'BinaryName = "/opt/cgroupfs/bin/cgroupfs-runtime"' in section.split("\n\n")[0]
    assert 'sandbox_image = "registry.k8s.io/pause:3.6"' in dump
    # The runc runtime keeps its type: the edit adds to containerd's defaults, it does not replace them.
    runc = dump[dump.index('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'):]
    assert 'runtime_type = "io.containerd.runc.v2"' in runc.split("\n\n")[0]


def test_a_container_created_while_the_daemon_is_away_gets_its_files_later(base, daemon, podman):
    runtime = write_runtime_script(base, daemon.mountpoint)
    name = f"cgfs-late-{os.getpid()}"
    daemon.stop()
    try:
        podman.cli("run", "-d", "--name", name, "--network", "none", "--runtime", runtime, *podman.run_args,
                   "-m", "15m", IMAGE, "sleep", "600")
        assert podman.cli("exec", name, *MEMTOTAL).stdout.strip() != "15360"  # started, with the host's file
        daemon.start()
        wait_for(lambda: podman.cli("exec", name, *MEMTOTAL, check=False).stdout.strip() == "15360", scaled(20),
                 what="the files injected once the daemon answers")
    finally:
        podman.cli("rm", "-f", "-t", "0", name, check=False)
        if not daemon.is_serving():
            daemon.start()


@pytest.mark.docker
def test_heal_after_sigkill_in_every_engine_without_engine_apis(base, daemon, podman, containerd):
    """A Docker, a podman and a containerd container, each with the files from the wrapper;
    the daemon (which watches no engine) is killed and started again: all three heal."""
    runtime = write_runtime_script(base, daemon.mountpoint)
    docker_dir = os.path.join(base, "docker")
    os.makedirs(docker_dir, exist_ok=True)
    name = f"cgfs-heal-{os.getpid()}"
    with running_engine(("--add-runtime", f"cgroupfs={runtime}", "--default-runtime", "cgroupfs"),
                        base_dir=docker_dir) as docker:
        docker.cli("run", "-d", "--name", name, "--network", "none", "-m", "15m", DOCKER_IMAGE, "sleep", "600")
        podman.cli("run", "-d", "--name", name, "--network", "none", "--runtime", runtime, *podman.run_args,
                   "-m", "15m", IMAGE, "sleep", "600")
        containerd.ctr("run", "-d", "--runc-binary", runtime, "--memory-limit", LIMIT, IMAGE, name, "sleep", "600")
        readers = {
            "docker": lambda: docker.cli("exec", name, *MEMTOTAL, check=False),
            "podman": lambda: podman.cli("exec", name, *MEMTOTAL, check=False),
            "containerd": lambda: containerd.ctr("task", "exec", "--exec-id", f"r{os.urandom(4).hex()}", name,
                                                 *MEMTOTAL, check=False),
        }
        try:
            for engine, read in readers.items():
                assert read().stdout.strip() == "15360", engine
            daemon.kill()
            for engine, read in readers.items():
                dead = read()
                assert dead.returncode != 0 and "15360" not in dead.stdout, engine  # "not connected"
            daemon.start()
            for engine, read in readers.items():
                wait_for(lambda read=read: read().stdout.strip() == "15360", scaled(20),
                         what=f"the {engine} container's files healed")
            assert "healed stale files in 3 mount namespaces" in daemon.log()
        finally:
            podman.cli("rm", "-f", "-t", "0", name, check=False)
            containerd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
