"""Settings from /etc/default/cgroupfs: every command-line option, as a CGROUPFS_* variable.

The option `--docker-host` is `CGROUPFS_DOCKER_HOST`, `--no-docker` is
`CGROUPFS_NO_DOCKER=yes`: the name is the option's argparse destination,
upper-cased, after `CGROUPFS_`, so a new flag is configurable without touching
this module.  The values become the parser's defaults; precedence, lowest first:

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
import re

DEFAULT_CONFIG_PATH = "/etc/default/cgroupfs"
CONFIG_PATH_ENVIRONMENT = "CGROUPFS_CONFIG"
PREFIX = "CGROUPFS_"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file (or variable) and line."""


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
        if not sep or not _NAME.match(name):
            raise ConfigError(f"{source}:{number}: expected NAME=value, got {line!r}")
        settings[name] = _unquote(value, f"{source}:{number}")
    return settings


def _unquote(value: str, where: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if value[:1] in ("'", '"'):
        raise ConfigError(f"{where}: unterminated quote in {value!r}")
    return value


def config_path(environ=os.environ, path: str | None = None) -> str:
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


def setting_name(action: argparse.Action) -> str:
    return PREFIX + action.dest.upper()


def _parsers(parser: argparse.ArgumentParser):
    """The parser and every sub-command parser under it."""
    yield parser
    for action in parser._actions:  # argparse has no public way to walk sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases repeat a parser
                yield from _parsers(child)


def _configurable(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.dest not in (argparse.SUPPRESS, "help") and isinstance(
        action, (argparse._StoreAction, argparse._StoreTrueAction, argparse._StoreFalseAction))


def _convert(action: argparse.Action, raw: str, where: str):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{where}: expected yes or no, got {raw!r}")
        enabled = word in _TRUE
        return enabled if isinstance(action, argparse._StoreTrueAction) else not enabled
    value = raw
    if action.type is not None:
        try:
            value = action.type(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{where}: invalid value {raw!r} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def apply_config_defaults(parser: argparse.ArgumentParser, environ=os.environ,
                          path: str | None = None) -> dict[str, str]:
    """Set the defaults of `parser` (and its sub-commands) from the file and the environment.

    Returns NAME -> where it came from, for the settings applied.  Raises ConfigError
    for an unreadable or malformed file, a bad value, or an unknown CGROUPFS_ name
    in the file (a typo would otherwise be silently ignored).
    """
    path = config_path(environ, path)
    file_settings = read_config(path)
    applied: dict[str, str] = {}
    known: set[str] = set()
    for each in _parsers(parser):
        for action in each._actions:
            if not _configurable(action):
                continue
            name = setting_name(action)
            known.add(name)
            if name in environ:
                raw, where = environ[name], f"environment variable {name}"
            elif name in file_settings:
                raw, where = file_settings[name], f"{path}: {name}"
            else:
                continue
            if not hasattr(action, "_cgroupfs_builtin_default"):
                action._cgroupfs_builtin_default = action.default
            action.default = _convert(action, raw, where)
            applied[name] = where
    # Environment-only variables (CGROUPFS_CONFIG, CGROUPFS_STATE_FILE, the test hook) are unknown here too.
    unknown = sorted(n for n in file_settings if n.startswith(PREFIX) and n not in known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    for each in _parsers(parser):
        for group in each._mutually_exclusive_groups:
            configured = [a for a in group._group_actions if setting_name(a) in applied
                          and a.default != getattr(a, "_cgroupfs_builtin_default", a.default)]
            if len(configured) > 1:
                raise ConfigError(" and ".join(applied[setting_name(a)] for a in configured) + " exclude each other")
    return applied


def _settle_exclusive_groups(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A flag given on the command line wins over a configured member of its exclusive group.

    (`CGROUPFS_NO_DOCKER=yes` in the file and `--docker-host URL` on the command
    line mean Docker at URL.)  argparse already refuses two members on the command
    line, so at most one member differs from its (configured) default.
    """
    for group in parser._mutually_exclusive_groups:
        given = [a for a in group._group_actions if getattr(args, a.dest, a.default) != a.default]
        if len(given) != 1:
            continue
        for action in group._group_actions:
            if action is not given[0] and hasattr(action, "_cgroupfs_builtin_default"):
                setattr(args, action.dest, action._cgroupfs_builtin_default)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and action.dest != argparse.SUPPRESS:
            chosen = action.choices.get(getattr(args, action.dest, None))
            if chosen is not None:
                _settle_exclusive_groups(chosen, args)


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None,
                           environ=os.environ, path: str | None = None) -> argparse.Namespace:
    """parser.parse_args(argv) with defaults from the configuration; errors exit via parser.error."""
    try:
        apply_config_defaults(parser, environ, path)
    except ConfigError as exc:
        parser.error(str(exc))
    args = parser.parse_args(argv)
    _settle_exclusive_groups(parser, args)
    return args
