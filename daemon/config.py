"""Settings from /etc/default/cgroupfs: every option of the daemon, as a CGROUPFS_* variable.

The option `--docker-host` is `CGROUPFS_DOCKER_HOST`, `--no-docker` is
`CGROUPFS_NO_DOCKER=yes`: the options and their names are the table in
cgroupfs_daemon.options.  The values become the parser's defaults; precedence,
lowest first:

    built-in default < the file < the process environment < the command line

The file has systemd's EnvironmentFile= syntax, because the unit hands the same
file to systemd (so the variables are also in the daemon's environment there, and
ExecStopPost= can use them): `NAME=value` lines, `#` or `;` comments, optional
"double" or 'single' quotes, a trailing backslash continues a line.  A missing
file is no configuration.  Its path is $CGROUPFS_CONFIG, else
/etc/default/cgroupfs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cgroupfs_daemon.options import OPTIONS, PREFIX, Option
from cgroupfs_daemon.settings_file import (  # noqa: F401  (the settings file's names, used through config)
    CONFIG_PATH_ENVIRONMENT,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    config_path,
    parse_environment_file,
    read_config,
)

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


@dataclass(frozen=True)
class Setting:
    value: object   # converted as the flag would convert it
    source: str     # "environment variable NAME" or "PATH: NAME", for messages


def _convert(option: Option, raw: str, where: str) -> object:
    if option.switch:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{where}: expected yes or no, got {raw!r}")
        return word in _TRUE
    value: object = raw
    if option.type is not None:
        try:
            value = option.type(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{where}: invalid value {raw!r} ({exc})") from None
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(option.choices)}")
    return value


def read_settings(environ: Mapping[str, str] = os.environ, path: str | None = None) -> dict[str, Setting]:
    """Option dest -> its configured value, for the options set in the environment or the file.

    Raises ConfigError for an unreadable or malformed file, a bad value, two
    options that exclude each other, or an unknown CGROUPFS_ name in the file (a
    typo would otherwise be silently ignored).
    """
    path = config_path(environ, path)
    file_settings = read_config(path)
    settings: dict[str, Setting] = {}
    for option in OPTIONS:
        name = option.setting
        if name in environ:
            raw, where = environ[name], f"environment variable {name}"
        elif name in file_settings:
            raw, where = file_settings[name], f"{path}: {name}"
        else:
            continue
        settings[option.dest] = Setting(_convert(option, raw, where), where)
    # Environment-only variables (CGROUPFS_CONFIG, CGROUPFS_STATE_FILE, the test hook) are unknown here too.
    known = {option.setting for option in OPTIONS}
    unknown = sorted(n for n in file_settings if n.startswith(PREFIX) and n not in known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    for group in _exclusive_groups():
        configured = [o for o in group if o.dest in settings and settings[o.dest].value != o.default]
        if len(configured) > 1:
            raise ConfigError(" and ".join(settings[o.dest].source for o in configured) + " exclude each other")
    return settings


def _exclusive_groups() -> list[list[Option]]:
    groups: dict[str, list[Option]] = {}
    for option in OPTIONS:
        if option.exclusive:
            groups.setdefault(option.exclusive, []).append(option)
    return list(groups.values())


def settle_exclusive(args: argparse.Namespace, configured: Mapping[str, object]) -> None:
    """A flag given on the command line wins over a configured option it excludes.

    (`CGROUPFS_NO_DOCKER=yes` in the file and `--docker-host URL` on the command
    line mean Docker at URL.)  `configured` is what the parser took as defaults;
    argparse already refuses two of a group on the command line, so at most one
    differs from its default.
    """
    for group in _exclusive_groups():
        present = [o for o in group if hasattr(args, o.dest)]  # the chosen command's
        given = [o for o in present if getattr(args, o.dest) != configured.get(o.dest, o.default)]
        if len(given) == 1:
            for option in present:
                if option is not given[0]:
                    setattr(args, option.dest, option.default)
