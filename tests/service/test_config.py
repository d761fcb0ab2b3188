"""/etc/default/cgroupfs: systemd's syntax, and precedence built-in < file < environment < flags."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from cgroupfs_daemon.cli import parse_args
from cgroupfs_daemon.config import ConfigError, parse_environment_file, read_settings
from cgroupfs_daemon.options import OPTIONS, Option
from tests.service.harness import REPO, is_fuse_mounted


def write(tmp_path, text: str) -> str:
    path = tmp_path / "cgroupfs"
    path.write_text(text)
    return str(path)


def parse(tmp_path, text: str, argv: list[str], environ: dict | None = None):
    return parse_args(argv, environ=environ or {}, config_path=write(tmp_path, text))


@pytest.mark.unit
def test_environment_file_syntax():
    text = (
        "# comment\n"
        "; also a comment\n"
        "\n"
        "PLAIN=/var/lib/cgroupfs\n"
        "  SPACED = value with spaces  \n"
        "DOUBLE=\"a \\\"quoted\\\" # not a comment\"\n"
        "SINGLE='$HOME stays'\n"
        "LONG=one \\\n"
        "two\n"
        "EMPTY=\n"
        "PLAIN=later wins\n"
    )
    assert parse_environment_file(text) == {
        "PLAIN": "later wins", "SPACED": "value with spaces", "DOUBLE": 'a "quoted" # not a comment',
        "SINGLE": "$HOME stays", "LONG": "one two", "EMPTY": "",
    }
    with pytest.raises(ConfigError, match=r"^here:2: expected NAME=value, got 'export A=1'$"):
        parse_environment_file("A=1\nexport A=1\n", "here")
    with pytest.raises(ConfigError, match="here:1: unterminated quote"):
        parse_environment_file("A=\"open\n", "here")


@pytest.mark.unit
def test_the_file_sets_defaults_and_flags_win(tmp_path):
    text = ("CGROUPFS_MOUNTPOINT=/srv/cgroupfs\nCGROUPFS_LOG_LEVEL=DEBUG\nCGROUPFS_CACHE_TTL_MS=250\n"
            "CGROUPFS_NO_METRICS=yes\nCGROUPFS_NO_CPU_QUOTA_CAP=true\nDOCKER_HOST=tcp://ignored:2375\n")
    args = parse(tmp_path, text, ["daemon"])
    assert (args.mountpoint, args.log_level, args.cache_ttl_ms, args.no_metrics, args.no_cpu_quota_cap) == (
        "/srv/cgroupfs", "debug", 250.0, True, True)
    assert (args.docker_host, args.no_docker) == (None, False)  # DOCKER_HOST is not ours to read

    args = parse(tmp_path, text, ["daemon", "--mountpoint", "/mnt/x", "--log-level", "warning",
                                  "--cache-ttl-ms", "0", "--metrics-address", "127.0.0.1:9999"])
    assert (args.mountpoint, args.log_level, args.cache_ttl_ms) == ("/mnt/x", "warning", 0.0)
    # --metrics-address on the command line beats CGROUPFS_NO_METRICS=yes in the file.
    assert (args.metrics_address, args.no_metrics) == ("127.0.0.1:9999", False)

    # Every sub-command with the option reads the same setting.
    assert parse(tmp_path, text, ["flags"]).mountpoint == "/srv/cgroupfs"
    assert parse(tmp_path, text, ["status"]).mountpoint == "/srv/cgroupfs"


@pytest.mark.unit
def test_environment_beats_the_file(tmp_path):
    text = "CGROUPFS_MOUNTPOINT=/from/file\nCGROUPFS_LOG_LEVEL=debug\n"
    args = parse(tmp_path, text, ["daemon"], environ={"CGROUPFS_MOUNTPOINT": "/from/env"})
    assert (args.mountpoint, args.log_level) == ("/from/env", "debug")
    args = parse(tmp_path, text, ["daemon", "--mountpoint", "/from/flag"], environ={"CGROUPFS_MOUNTPOINT": "/env"})
    assert args.mountpoint == "/from/flag"


@pytest.mark.unit
def test_exclusive_options(tmp_path):
    args = parse(tmp_path, "CGROUPFS_NO_DOCKER=yes\n", ["daemon", "--docker-host", "unix:///tmp/d.sock"])
    assert (args.docker_host, args.no_docker) == ("unix:///tmp/d.sock", False)
    args = parse(tmp_path, "CGROUPFS_DOCKER_HOST=unix:///tmp/d.sock\n", ["daemon", "--no-docker"])
    assert (args.docker_host, args.no_docker) == (None, True)
    args = parse(tmp_path, "CGROUPFS_DOCKER_HOST=unix:///tmp/d.sock\nCGROUPFS_NO_DOCKER=no\n", ["daemon"])
    assert (args.docker_host, args.no_docker) == ("unix:///tmp/d.sock", False)
    with pytest.raises(ConfigError, match="CGROUPFS_DOCKER_HOST and .*CGROUPFS_NO_DOCKER exclude each other"):
        read_settings({}, write(tmp_path, "CGROUPFS_DOCKER_HOST=x\nCGROUPFS_NO_DOCKER=1\n"))


@pytest.mark.unit
@pytest.mark.parametrize("text, message", [
    ("CGROUPFS_CACHE_TTL_MS=fast\n", r"CGROUPFS_CACHE_TTL_MS: invalid value 'fast'"),
    ("CGROUPFS_LOG_LEVEL=loud\n", r"CGROUPFS_LOG_LEVEL: 'loud' is not one of debug, info, warning, error"),
    ("CGROUPFS_NO_DOCKER=maybe\n", r"CGROUPFS_NO_DOCKER: expected yes or no, got 'maybe'"),
    ("CGROUPFS_MOUNT_POINT=/x\n", r"unknown setting CGROUPFS_MOUNT_POINT"),
])
def test_bad_settings_are_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        read_settings({}, path)
    assert path in str(error.value)


@pytest.mark.unit
def test_a_missing_file_is_no_configuration(tmp_path):
    assert read_settings({}, str(tmp_path / "absent")) == {}


def run_cli(tmp_path, *argv: str, config_text: str | None = None, env: dict | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CGROUPFS_")}
    environ["CGROUPFS_CONFIG"] = write(tmp_path, config_text) if config_text is not None else str(tmp_path / "none")
    environ["PYTHONPATH"] = REPO
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "cgroupfs_daemon.cli", *argv], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=60)


@pytest.mark.unit
def test_the_command_reads_the_file(tmp_path):
    """End to end through `cgroupfs flags`: file, then environment, then flag."""
    text = "CGROUPFS_MOUNTPOINT=/srv/from-file\n"
    assert "-v /srv/from-file/proc/meminfo:/proc/meminfo:ro" in run_cli(tmp_path, "flags", config_text=text).stdout
    result = run_cli(tmp_path, "flags", config_text=text, env={"CGROUPFS_MOUNTPOINT": "/srv/from-env"})
    assert "-v /srv/from-env/proc/meminfo:/proc/meminfo:ro" in result.stdout
    result = run_cli(tmp_path, "flags", "--mountpoint", "/srv/from-flag", config_text=text)
    assert "-v /srv/from-flag/proc/meminfo:/proc/meminfo:ro" in result.stdout

    broken = run_cli(tmp_path, "flags", config_text="CGROUPFS_CACHE_TTL_MS=soon\n")
    assert broken.returncode == 2 and broken.stdout == ""
    assert broken.stderr.count("\n") == 1 and "CGROUPFS_CACHE_TTL_MS: invalid value 'soon'" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_the_daemon_mounts_where_the_file_says_unless_told_otherwise(daemons, notify_socket, tmp_path):
    configured = tmp_path / "configured-mnt"
    config = tmp_path / "cgroupfs.conf"
    config.write_text(f"CGROUPFS_MOUNTPOINT={configured}\nCGROUPFS_LOG_LEVEL=debug\n")
    daemon = daemons("from-file", notify=notify_socket, mountpoint_flag=False,
                     env={"CGROUPFS_CONFIG": str(config)}, extra_mountpoints=(str(configured),))
    daemon.wait_serving(str(configured))
    assert not is_fuse_mounted(daemon.mountpoint)
    assert daemon.terminate() == 0

    flagged = daemons("from-flag", env={"CGROUPFS_CONFIG": str(config)}, extra_mountpoints=(str(configured),))
    flagged.wait_serving()  # --mountpoint <dir>/mnt, not the configured one
    assert not is_fuse_mounted(str(configured))
    assert "DEBUG" in flagged.log()  # the file's other settings still apply


@pytest.mark.unit
def test_environment_only_variables_are_not_settings(tmp_path):
    # The state file's place belongs to the unit (RuntimeDirectory=), not to the settings.
    with pytest.raises(ConfigError, match="unknown setting CGROUPFS_STATE_FILE"):
        read_settings({}, write(tmp_path, "CGROUPFS_STATE_FILE=/tmp/x\n"))
    # In the environment they are simply not options.
    assert read_settings({"CGROUPFS_STATE_FILE": "/tmp/x"}, str(tmp_path / "absent")) == {}


# -- the documentation follows the table of options -------------------------------------

def documented_flag(option: Option) -> str:
    return option.flag + (f" {option.metavar}" if option.metavar else "")


def test_the_example_settings_file_lists_every_option_as_the_table_says(tmp_path):
    """After its header paragraph: each option's help, then its setting commented out, at its default."""
    with open(os.path.join(REPO, "systemd/cgroupfs.default"), encoding="utf-8") as f:
        _header, _, listed = f.read().partition("\n\n")
    expected = "\n".join(
        textwrap.fill(option.help, width=88, initial_indent="# ", subsequent_indent="# ")
        + f"\n#{option.setting}={option.documented_default}\n" for option in OPTIONS)
    assert listed == expected, f"systemd/cgroupfs.default should list, after its header:\n\n{expected}"
    # What it shows is what a setting of that value means.
    assert read_settings({}, os.path.join(REPO, "systemd/cgroupfs.default")) == {}
    uncommented = "".join(line[1:] + "\n" for line in listed.splitlines() if line.startswith("#CGROUPFS_"))
    configured = {dest: s.value for dest, s in read_settings({}, write(tmp_path, uncommented)).items()}
    for option in OPTIONS:
        if option.shown_default is None:
            assert configured[option.dest] == option.default, option.setting


def test_the_readme_lists_every_option_as_the_table_says():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = "\n".join(["| Setting | Flag | Default | Meaning |", "| --- | --- | --- | --- |"] + [
        f"| `{option.setting}` | `{documented_flag(option)}` | `{option.documented_default}` | {option.help} |"
        for option in OPTIONS]) + "\n"
    assert table in readme, f"README.md's list of settings should read:\n\n{table}"
    synopsis = readme[readme.index("    cgroupfs daemon "):readme.index("    cgroupfs show ")]
    positions = [synopsis.find(documented_flag(option)) for option in OPTIONS]
    assert -1 not in positions and positions == sorted(positions), synopsis
