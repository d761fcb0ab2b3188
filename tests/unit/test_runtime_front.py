"""`cgroupfs-runtime`'s sh front agrees with the Python wrapper it stands in front of.

The front (daemon/cgroupfs-runtime) repeats two things of Python's in sh: the command
after runc's global flags (runtime_wrapper.split_command) and CGROUPFS_RUNTIME's value
in the settings file (settings_file.py).  Each table below runs the real front, next to
a fake `cgroupfs-runtime-create` and fake runtimes that print their name and argv, and
compares where the call went with what Python says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cgroupfs_daemon.runtime_wrapper import CREATE_COMMANDS, GLOBAL_VALUE_FLAGS, split_command
from cgroupfs_daemon.settings_file import ConfigError, setting

FRONT = Path(__file__).resolve().parents[2] / "daemon" / "cgroupfs-runtime"
# A fake program: its name, then one argument a line.
PRINT_ARGV = "#!/bin/sh\nprintf '%s\\n' \"${0##*/}\" \"$@\"\n"
RUNTIMES = ("runc", "fake-a", "fake b", 'fake"c', "fake-d")


@pytest.fixture
def front(tmp_path):
    """Run the front from tmp/bin, beside a fake cgroupfs-runtime-create, with fake runtimes on PATH."""
    bin_dir, runtimes = tmp_path / "bin", tmp_path / "runtimes"
    bin_dir.mkdir()
    runtimes.mkdir()
    shutil.copy(FRONT, bin_dir / "cgroupfs-runtime")
    for path in [bin_dir / "cgroupfs-runtime-create", *(runtimes / name for name in RUNTIMES)]:
        path.write_text(PRINT_ARGV)
        path.chmod(0o755)

    def run(argv: list[str], **environ: str) -> list[str]:
        env = {"PATH": f"{runtimes}:/usr/bin:/bin", "CGROUPFS_CONFIG": str(tmp_path / "none"), **environ}
        done = subprocess.run([str(bin_dir / "cgroupfs-runtime"), *argv], env=env, capture_output=True, text=True,
                              check=True)
        return done.stdout.splitlines()

    return run


ARGVS = [
    ["create", "--bundle", "/b", "id"],
    ["run", "id"],
    ["start", "id"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/p", "id"],
    ["--root=/r", "--log-format=json", "run", "-d", "id"],
    ["--root", "create", "start", "id"],  # "create" is --root's value
    ["--root=create", "delete", "--force", "id"],
    ["--systemd-cgroup", "create", "id"],  # a switch takes no value
    ["--systemd-cgroup", "kill", "id", "KILL"],
    ["---log", "/l", "run", "id"],
    ["-", "create"],
    ["--", "create", "id"],
    ["--criu", "/c", "--rootless=true", "--cgroup-manager", "systemd", "--log-level", "debug", "state", "run"],
    ["--rootless", "run", "create"],
    ["", "create"],
    ["state", "create"],
    ["--version"],
    ["--root"],
    [],
    ["--debug", "--log", "/a b/log", "create", "--bundle", "/with space", "id with * and $HOME"],
]
# Every flag with a value, in both forms, where mistaking the value for the command (or
# the command for a value) changes where the call goes.
for flag in sorted(GLOBAL_VALUE_FLAGS):
    ARGVS += [[f"--{flag}", "create", "start", "id"], [f"--{flag}", "v", "run", "id"], [f"--{flag}=run", "kill", "id"],
              [f"--{flag}=v", "create", "id"]]


@pytest.mark.parametrize("argv", ARGVS, ids=[" ".join(argv) or "(none)" for argv in ARGVS])
def test_the_front_finds_the_command_as_split_command_does(front, argv):
    _, index = split_command(argv)
    goes_to_python = index < len(argv) and argv[index] in CREATE_COMMANDS
    assert front(argv) == ["cgroupfs-runtime-create" if goes_to_python else "runc", *argv]


SETTINGS = [
    "CGROUPFS_RUNTIME=fake-a\n",
    "  CGROUPFS_RUNTIME =\tfake-a  \n",
    "CGROUPFS_RUNTIME='fake b'\n",
    'CGROUPFS_RUNTIME="fake\\"c"\n',
    'CGROUPFS_RUNTIME="fa\\ke-d"\n',
    "# CGROUPFS_RUNTIME=fake-x\n; CGROUPFS_RUNTIME=fake-x\nCGROUPFS_RUNTIME=fake-a\n\nCGROUPFS_RUNTIME=fake-d",
    "CGROUPFS_RUNTIME=fake-\\\na\n",
    "CGROUPFS_MOUNTPOINT=/srv/cgroupfs\n",
    "CGROUPFS_RUNTIME=\n",
    "CGROUPFS_RUNTIME=''\n",
    "",
    "CGROUPFS_RUNTIME=fake-a\ngarbage\n",
    "1CGROUPFS=x\nCGROUPFS_RUNTIME=fake-a\n",
    "CGROUPFS_RUNTIME='fake-a\n",
    'CGROUPFS_OTHER="x\nCGROUPFS_RUNTIME=fake-a\n',
    "CGROUPFS-RUNTIME=fake-a\n",
    "=fake-a\n",
    "CGROUPFS_RUNTIME=fake-a # not a comment\n",
    "CGROUPFS_RUNTIME=fake-a\\",
]


@pytest.mark.parametrize("text", SETTINGS)
def test_the_front_reads_the_runtime_setting_as_python_does(front, tmp_path, text):
    config = tmp_path / "cgroupfs.conf"
    config.write_text(text)
    try:
        expected = setting("CGROUPFS_RUNTIME", {"CGROUPFS_CONFIG": str(config)}) or "runc"
    except ConfigError:
        expected = "cgroupfs-runtime-create"  # Python logs the error and runs runc
    if expected not in (*RUNTIMES, "cgroupfs-runtime-create"):
        expected = "cgroupfs-runtime-create"  # a runtime that cannot be run: Python says so
    assert front(["state", "id"], CGROUPFS_CONFIG=str(config)) == [expected, "state", "id"]


def test_the_environment_wins_over_the_file_even_empty(front, tmp_path):
    config = tmp_path / "cgroupfs.conf"
    config.write_text("CGROUPFS_RUNTIME=fake-a\n")
    assert front(["state", "id"], CGROUPFS_CONFIG=str(config), CGROUPFS_RUNTIME="fake-d")[0] == "fake-d"
    assert front(["state", "id"], CGROUPFS_CONFIG=str(config), CGROUPFS_RUNTIME="")[0] == "runc"
    assert front(["state", "id"], CGROUPFS_CONFIG=str(tmp_path))[0] == "cgroupfs-runtime-create"  # a directory


def test_the_front_through_a_link_finds_python_beside_its_target(front, tmp_path):
    link = tmp_path / "elsewhere" / "cgroupfs-runtime"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "bin" / "cgroupfs-runtime")
    done = subprocess.run([str(link), "create", "id"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["cgroupfs-runtime-create", "create", "id"]


def installed_front() -> str:
    """This virtualenv's cgroupfs-runtime, the front beside the real cgroupfs-runtime-create."""
    path = os.path.join(os.path.dirname(sys.executable), "cgroupfs-runtime")
    assert Path(path).read_bytes() == FRONT.read_bytes(), "the virtualenv's front is stale: pip install -e ."
    return path


@pytest.mark.parametrize("runtime", ["/opt/cgroupfs/bin/cgroupfs-runtime", "cgroupfs-runtime-create"])
def test_the_installed_front_refuses_to_run_itself(tmp_path, runtime):
    done = subprocess.run([installed_front(), "state", "id"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "CGROUPFS_RUNTIME": runtime,
                               "CGROUPFS_CONFIG": str(tmp_path / "none")})
    assert done.returncode == 127
    assert f"names {os.path.basename(runtime)} itself" in done.stderr


def test_the_installed_front_names_a_runtime_it_cannot_run(tmp_path):
    done = subprocess.run([installed_front(), "state", "id"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "CGROUPFS_RUNTIME": str(tmp_path / "no-runc"),
                               "CGROUPFS_CONFIG": str(tmp_path / "none")})
    assert done.returncode == 127
    assert "cannot run the runtime" in done.stderr and "CGROUPFS_RUNTIME" in done.stderr
