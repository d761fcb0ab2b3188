"""`cgroupfs setup docker|podman|containerd [--undo]`: register `cgroupfs-runtime` with an engine.

Each edit is idempotent and keeps every other setting and comment of the file:
- Docker, /etc/docker/daemon.json (JSON, which has no comments): the runtime
  "cgroupfs" in "runtimes", and with --default "default-runtime": "cgroupfs";
- podman, /etc/containers/containers.conf (TOML): [engine] runtime = "cgroupfs" and
  [engine.runtimes] cgroupfs = [PATH];
- containerd, /etc/containerd/config.toml (TOML): BinaryName = PATH in the CRI
  plugin's runc options, the runtime Kubernetes nodes use.

TOML is edited line by line (no dependency, comments stay): a key we set carries
the comment MARK; a value it replaced is kept on the line above as a comment
(WAS + the old line), which --undo puts back; a table we had to add is marked too
and removed by --undo when empty.  The result is parsed with tomllib before it is
written: an edit that would not read back as intended leaves the file untouched.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass

MARK = "# added by cgroupfs setup"
WAS = "# cgroupfs setup replaced: "
RUNTIME_NAME = "cgroupfs"
DEFAULT_FILES = {
    "docker": "/etc/docker/daemon.json",
    "podman": "/etc/containers/containers.conf",
    "containerd": "/etc/containerd/config.toml",
}
RESTART = {
    "docker": "systemctl restart docker",
    "podman": "nothing to restart: the next podman command reads it",
    "containerd": "systemctl restart containerd",
}
# The CRI plugin's runc options table, per containerd config version.
CONTAINERD_RUNC_OPTIONS = {
    1: ("plugins", "cri", "containerd", "runtimes", "runc", "options"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "runc", "options"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options"),
}


RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"


class SetupError(Exception):
    """The file cannot be edited safely; the message says why (it is left untouched)."""


def default_runtime_path() -> str:
    """`cgroupfs-runtime` beside the interpreter running us (the virtualenv's bin/)."""
    return os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "cgroupfs-runtime")


# -- Docker: JSON -------------------------------------------------------------------

def edit_docker(text: str, runtime_path: str, make_default: bool, undo: bool) -> str:
    config = json.loads(text) if text.strip() else {}
    if not isinstance(config, dict):
        raise SetupError("daemon.json is not a JSON object")
    runtimes = config.get("runtimes") or {}
    if undo:
        runtimes.pop(RUNTIME_NAME, None)
        if config.get("default-runtime") == RUNTIME_NAME:
            del config["default-runtime"]
    else:
        runtimes[RUNTIME_NAME] = {"path": runtime_path}
        if make_default:
            config["default-runtime"] = RUNTIME_NAME
    if runtimes:
        config["runtimes"] = runtimes
    else:
        config.pop("runtimes", None)
    return json.dumps(config, indent=4) + "\n"


# -- TOML, line by line -----------------------------------------------------------

def _header(line: str) -> str | None:
    """The table name of a `[table]` line (a comment may follow), spaces around dots removed; None otherwise."""
    stripped = line.strip()
    end = stripped.rfind("]")
    if stripped.startswith("[[") or not stripped.startswith("[") or end < 0:
        return None
    if stripped[end + 1:].strip()[:1] not in ("", "#"):
        return None
    return re.sub(r"\s*\.\s*", ".", stripped[1:end].strip())


def toml_table(path: tuple[str, ...]) -> str:
    """The TOML name of a table path: bare keys where allowed, "quoted" others."""
    return ".".join(f'"{part}"' if not re.fullmatch(r"[A-Za-z0-9_-]+", part) else part for part in path)


def _table_span(lines: list[str], table: str) -> tuple[int, int] | None:
    """(header index, end index) of `[table]`; None when the file has no such header."""
    for index, line in enumerate(lines):
        if _header(line) == table:
            end = index + 1
            while end < len(lines) and _header(lines[end]) is None and not lines[end].lstrip().startswith("[["):
                end += 1
            return index, end
    return None


def _key_pattern(key: str) -> re.Pattern:
    return re.compile(rf"\s*{re.escape(key)}\s*=")


def set_toml(text: str, table: str, key: str, value: str) -> str:
    """`key = value` (TOML text) in `[table]`, the old line kept as a WAS comment."""
    lines = text.splitlines()
    wanted = f"{key} = {value}  {MARK}"
    span = _table_span(lines, table)
    if span is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{table}]  {MARK}", wanted]
        return "\n".join(lines) + "\n"
    start, end = span
    pattern = _key_pattern(key)
    for index in range(start + 1, end):
        if pattern.match(lines[index]):
            indent = lines[index][:len(lines[index]) - len(lines[index].lstrip())]
            if lines[index].strip() == wanted:
                return text
            if MARK in lines[index]:
                lines[index] = indent + wanted
            else:
                lines[index:index + 1] = [indent + WAS + lines[index].strip(), indent + wanted]
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, wanted)
    return "\n".join(lines) + "\n"


def unset_toml(text: str, table: str, key: str) -> str:
    """Undo set_toml(): our line removed, a replaced one restored, a table we added and left empty removed."""
    lines = text.splitlines()
    span = _table_span(lines, table)
    if span is None:
        return text
    start, end = span
    pattern = _key_pattern(key)
    for index in range(start + 1, end):
        if pattern.match(lines[index]) and MARK in lines[index]:
            previous = lines[index - 1] if index - 1 > start else ""
            indent = previous[:len(previous) - len(previous.lstrip())]
            replaced = previous.lstrip()[len(WAS):]
            if previous.lstrip().startswith(WAS) and pattern.match(replaced):
                lines[index - 1:index + 1] = [indent + replaced]
            else:
                del lines[index]
            break
    else:
        return text
    span = _table_span(lines, table)
    if span is not None and MARK in lines[span[0]] and not any(line.strip() for line in lines[span[0] + 1:span[1]]):
        start, end = span
        del lines[start:end]
        while lines and not lines[-1].strip():
            lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def _lookup(data: dict, path: tuple[str, ...]) -> object:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _parse_toml(text: str, name: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SetupError(f"{name} is not valid TOML ({exc})") from None


def edit_podman(text: str, runtime_path: str, undo: bool) -> str:
    _parse_toml(text, "containers.conf")
    if undo:
        edited = unset_toml(unset_toml(text, "engine", "runtime"), "engine.runtimes", RUNTIME_NAME)
        expected: tuple[object, object] = (None, None)
    else:
        edited = set_toml(set_toml(text, "engine", "runtime", json.dumps(RUNTIME_NAME)),
                          "engine.runtimes", RUNTIME_NAME, json.dumps([runtime_path]))
        expected = (RUNTIME_NAME, [runtime_path])
    data = _parse_toml(edited, "the edited containers.conf")
    found = (_lookup(data, ("engine", "runtime")), _lookup(data, ("engine", "runtimes", RUNTIME_NAME)))
    if undo:
        found = (None if found[0] != RUNTIME_NAME else found[0], found[1])
    if found != expected:
        raise SetupError(f"the edit would not read back as intended (got {found}); edit containers.conf by hand")
    return edited


def edit_containerd(text: str, runtime_path: str, undo: bool) -> str:
    version = _parse_toml(text, "config.toml").get("version", 2 if not text.strip() else 1)
    if version not in CONTAINERD_RUNC_OPTIONS:
        raise SetupError(f"unknown containerd config version {version!r}")
    path = CONTAINERD_RUNC_OPTIONS[version]
    prefix = "version = 2\n\n" if not text.strip() else ""
    table = toml_table(path)
    runc_table = toml_table(path[:-1])
    if undo:
        edited = unset_toml(unset_toml(text, table, "BinaryName"), runc_table, "runtime_type")
    else:
        edited = set_toml(prefix + text, table, "BinaryName", json.dumps(runtime_path))
        # A runc table of our own replaces containerd's default one as a whole: it must
        # say its type, or containerd loads runc with none.
        if _lookup(_parse_toml(edited, "the edited config.toml"), path[:-1] + ("runtime_type",)) is None:
            edited = set_toml(edited, runc_table, "runtime_type", json.dumps(RUNC_RUNTIME_TYPE))
    found = _lookup(_parse_toml(edited, "the edited config.toml"), path + ("BinaryName",))
    if (found == runtime_path) == undo:
        raise SetupError(f"the edit would not read back as intended (BinaryName {found!r}); edit config.toml "
                         "by hand")
    return edited


# -- the command ----------------------------------------------------------------------

@dataclass
class SetupResult:
    path: str
    changed: bool


def setup(engine: str, path: str | None = None, runtime_path: str | None = None, make_default: bool = False,
          undo: bool = False) -> SetupResult:
    path = path or DEFAULT_FILES[engine]
    runtime_path = runtime_path or default_runtime_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if engine == "docker":
            edited = edit_docker(text, runtime_path, make_default, undo)
            if text.strip() and json.loads(text) == json.loads(edited):
                edited = text  # unchanged: keep the file's own layout
        elif engine == "podman":
            edited = edit_podman(text, runtime_path, undo)
        else:
            edited = edit_containerd(text, runtime_path, undo)
    except ValueError as exc:
        raise SetupError(f"{path}: {exc}") from None
    if edited == text or (undo and not text):
        return SetupResult(path, False)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.cgroupfs-setup.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(edited)
    if os.path.exists(path):
        os.chmod(temporary, os.stat(path).st_mode & 0o7777)
    os.replace(temporary, path)
    return SetupResult(path, True)


def run_setup(engine: str, path: str | None, runtime_path: str | None, make_default: bool, undo: bool) -> int:
    try:
        result = setup(engine, path, runtime_path, make_default, undo)
    except SetupError as exc:
        print(f"cgroupfs: {exc}", file=sys.stderr)
        return 1
    what = "removed cgroupfs-runtime from" if undo else f"registered {runtime_path or default_runtime_path()} in"
    if not result.changed:
        print(f"{result.path}: already {'without' if undo else 'with'} cgroupfs-runtime; nothing changed")
        return 0
    print(f"{what} {result.path}")
    print(f"to apply: {RESTART[engine]}")
    return 0
