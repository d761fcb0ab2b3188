"""The settings file's syntax (systemd's EnvironmentFile=), without the options table.

Kept apart from config.py, and free of heavy imports (not even `re`), because
`cgroupfs-runtime` reads its settings from this file on every create
(daemon/runtime_wrapper.py).  Its sh front (daemon/cgroupfs-runtime) reads
CGROUPFS_RUNTIME by these same rules; tests/unit/test_runtime_front.py keeps the two
equal.  config.py turns these names and strings into
the options' values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_CONFIG_PATH = "/etc/default/cgroupfs"
CONFIG_PATH_ENVIRONMENT = "CGROUPFS_CONFIG"
# The daemon's state file (state.py): environment only, the unit's RuntimeDirectory= decides it.
DEFAULT_STATE_PATH = "/run/cgroupfs/state.json"
STATE_PATH_ENVIRONMENT = "CGROUPFS_STATE_FILE"
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file (or variable) and line."""


def _is_name(name: str) -> bool:
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def parse_environment_file(text: str, source: str = "config") -> dict[str, str]:
    """NAME -> value from EnvironmentFile= text; raises ConfigError naming `source`:line."""
    settings: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        index += 1
        while line.endswith("\\") and index < len(lines):  # continuation
            line = line[:-1] + lines[index]
            index += 1
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _is_name(name):
            raise ConfigError(f"{source}:{number}: expected NAME=value, got {line!r}")
        settings[name] = _unquote(value, f"{source}:{number}")
    return settings


def _unquote(value: str, where: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _unescape(value[1:-1])
    if value[:1] in ("'", '"'):
        raise ConfigError(f"{where}: unterminated quote in {value!r}")
    return value


def _unescape(text: str) -> str:
    """A backslash makes the next character literal (`\\"` is `"`)."""
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            index += 1
        out.append(text[index])
        index += 1
    return "".join(out)


def default_state_path(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(STATE_PATH_ENVIRONMENT) or DEFAULT_STATE_PATH


def default_sysinfo_socket(environ: Mapping[str, str] = os.environ) -> str:
    """Where the daemon takes containers' sysinfo listeners when --sysinfo-socket is unset:
    beside its state file (/run/cgroupfs/sysinfo.sock)."""
    return os.path.join(os.path.dirname(default_state_path(environ)), "sysinfo.sock")


def setting(name: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """One setting as a string: the environment's, else the settings file's; None when unset.

    For `cgroupfs-runtime`, which cannot afford the options table's imports on a
    create; the daemon and the other commands read settings through config.py."""
    value = environ.get(name)
    return value if value is not None else read_config(config_path(environ)).get(name)


def config_path(environ: Mapping[str, str] = os.environ, path: str | None = None) -> str:
    return path or environ.get(CONFIG_PATH_ENVIRONMENT) or DEFAULT_CONFIG_PATH


def read_config(path: str) -> dict[str, str]:
    """The file's settings; {} when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_environment_file(text, path)
