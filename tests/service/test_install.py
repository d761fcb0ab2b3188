"""`make install` into a temporary prefix serves files from its own virtualenv; `make uninstall` leaves nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from tests.service.conftest import require
from tests.service.harness import REPO, ServiceDaemon, is_fuse_mounted


def tree(root) -> set[str]:
    found = set()
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


@pytest.fixture
def host(tmp_path, fuse_host):
    """A fake root: the directories a Debian host already has, nothing of ours."""
    require(shutil.which("make") is not None, "needs make")
    require(shutil.which("systemd-analyze") is not None, "needs systemd-analyze (Debian package systemd)")
    root = tmp_path / "root"
    for directory in ("opt", "etc/systemd/system", "etc/default", "run", "var/lib", "usr/local/bin"):
        (root / directory).mkdir(parents=True)
    return root


def make(root, target: str) -> subprocess.CompletedProcess:
    variables = {
        "PREFIX": root / "opt/cgroupfs", "SYSTEMD_DIR": root / "etc/systemd/system",
        "CONFIG_FILE": root / "etc/default/cgroupfs", "RUN_DIR": root / "run/cgroupfs",
        "MOUNTPOINT": root / "var/lib/cgroupfs", "BIN_DIR": root / "usr/local/bin",
    }
    result = subprocess.run(["make", "--no-print-directory", "-C", REPO, target,
                             *(f"{name}={value}" for name, value in variables.items())],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_install_serve_uninstall(host, tmp_path):
    before = tree(host)
    prefix = host / "opt/cgroupfs"
    unit = host / "etc/systemd/system/cgroupfs.service"
    config = host / "etc/default/cgroupfs"
    mountpoint = host / "var/lib/cgroupfs"

    result = make(host, "install")
    assert result.stdout.rstrip().endswith("Enable and start it with:  systemctl enable --now cgroupfs")
    # A copy, not an editable install: the checkout is not on the installed path.
    probe = subprocess.run([prefix / "bin/python", "-c", "import cgroupfs_daemon, cgroupfs; print(cgroupfs_daemon.__file__)"],
                           capture_output=True, text=True, cwd="/", check=True)
    assert probe.stdout.startswith(str(prefix / "lib")), probe.stdout
    assert os.readlink(host / "usr/local/bin/cgroupfs") == str(prefix / "bin/cgroupfs")
    assert f"ExecStart={prefix}/bin/cgroupfs daemon\n" in unit.read_text()
    assert f"EnvironmentFile=-{config}\n" in unit.read_text()
    assert config.read_text() == open(os.path.join(REPO, "systemd/cgroupfs.default")).read()
    verify = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr

    # The operator's settings survive a second install, which otherwise just reinstalls.
    config.write_text(config.read_text() + f"CGROUPFS_MOUNTPOINT={mountpoint}\n")
    edited = config.read_text()
    result = make(host, "install")
    assert f"kept {config}" in result.stdout and config.read_text() == edited

    # The installed command, from outside the checkout, reading the installed settings.
    daemon = ServiceDaemon(str(tmp_path / "run-installed"), command=(str(prefix / "bin/cgroupfs"), "daemon"),
                           mountpoint_flag=False, env={"CGROUPFS_CONFIG": str(config)}, cwd="/")
    os.makedirs(daemon.directory)
    daemon.env.pop("PYTHONPATH")
    try:
        daemon.start()
        daemon.wait_serving(str(mountpoint))
        with open(mountpoint / "proc/meminfo") as f:
            assert f.read().startswith("MemTotal:")
        status = subprocess.run([host / "usr/local/bin/cgroupfs", "status"], capture_output=True, text=True, cwd="/",
                                env={"PATH": os.environ["PATH"], "CGROUPFS_CONFIG": str(config),
                                     "CGROUPFS_STATE_FILE": daemon.state_file})
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"{mountpoint}: mounted (fuse.cgroupfs), answering" in status.stdout
        # A crash leaves the mount behind; uninstall must take it away too.
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
        assert is_fuse_mounted(str(mountpoint))
        config.write_text(open(os.path.join(REPO, "systemd/cgroupfs.default")).read()
                          + f"CGROUPFS_MOUNTPOINT={mountpoint}\n")
        result = make(host, "uninstall")
        # The edited settings are kept (like a package's conffile); everything else is gone.
        assert f"kept {config}: it has your changes" in result.stdout
        assert not is_fuse_mounted(str(mountpoint))
        assert tree(host) == before | {"etc/default/cgroupfs"}
        config.unlink()
        assert tree(host) == before
        make(host, "uninstall")  # twice is fine too
    finally:
        daemon.cleanup((str(mountpoint),))
