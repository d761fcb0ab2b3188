"""`cgroupfs-runtime`: an OCI runtime that puts the cgroupfs files into a container, then is runc.

Engines call their runtime several times per container (Docker: create, start,
state, kill, delete); every call is `RUNTIME [GLOBAL FLAGS] COMMAND [FLAGS] ID`.
Every call goes to the real runtime (setting CGROUPFS_RUNTIME: runc, crun, or a
path) by exec, with the same arguments.  On `create` and `run` only, before the
exec, this module adds read-only bind mounts of the files to the bundle's
config.json (runtime_bundle.py), so the container's first instruction reads its
own values.

Cheap: `cgroupfs-runtime` itself is a POSIX sh front (daemon/cgroupfs-runtime) that
execs the real runtime for every other call; it runs this module, installed as
`cgroupfs-runtime-create`, for `create` and `run` and whenever something is wrong
(a bad settings file, a runtime it cannot run), so the lines and decisions stay
here.  Never the reason a container fails to start: whatever goes wrong while
preparing the bundle is one log line and the bundle untouched."""

from __future__ import annotations

import os
import sys

# The options table's RUNTIME row (options.py), spelt out: importing the table costs more
# than the exec it precedes (a unit test keeps the two equal).
RUNTIME_SETTING = "CGROUPFS_RUNTIME"
DEFAULT_RUNTIME = "runc"
# Global flags that take a value, of runc and crun (`--root DIR` or `--root=DIR`).
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "log-level", "criu", "rootless", "cgroup-manager"})
CREATE_COMMANDS = ("create", "run")
# The sh front and this program, under their installed names: neither is a real runtime.
OUR_NAMES = ("cgroupfs-runtime", "cgroupfs-runtime-create")


def split_command(argv: list[str]) -> tuple[dict[str, str], int]:
    """(global flags with values, index of the command in argv); index len(argv) when there is none."""
    flags: dict[str, str] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("-") or arg == "-":
            return flags, index
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in GLOBAL_VALUE_FLAGS:
            if not has_value:
                index += 1
                value = argv[index] if index < len(argv) else ""
            flags[name] = value
        index += 1
    return flags, index


def real_runtime(environ=os.environ) -> str:
    """The runtime to exec: CGROUPFS_RUNTIME from the environment, else from the settings file."""
    from cgroupfs_daemon.settings_file import ConfigError, setting

    try:
        return setting(RUNTIME_SETTING, environ) or DEFAULT_RUNTIME
    except ConfigError as exc:
        log_line({}, f"{exc}; running {DEFAULT_RUNTIME}")
        return DEFAULT_RUNTIME


def log_line(global_flags: dict[str, str], message: str) -> None:
    """One line to stderr and, when the engine gave one, to the runtime's --log file (which it shows)."""
    text = f"cgroupfs-runtime: {message}"
    print(text, file=sys.stderr, flush=True)
    path = global_flags.get("log")
    if not path:
        return
    if global_flags.get("log-format") == "json":
        import json
        import time

        line = json.dumps({"level": "warning", "msg": text, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime())})
    else:
        line = f"level=warning msg={text!r}"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    global_flags, index = split_command(argv)
    command = argv[index] if index < len(argv) else ""
    runtime = real_runtime()
    if command in CREATE_COMMANDS:
        try:
            from cgroupfs_daemon.runtime_bundle import prepare

            prepare(argv[index + 1:], global_flags, runtime=runtime)
        except Exception as exc:  # anything: the container starts without our files
            log_line(global_flags, f"container not prepared ({type(exc).__name__}: {exc}); starting it "
                                   "without the cgroupfs files")
    if os.path.basename(runtime) in OUR_NAMES:  # would exec itself forever
        log_line(global_flags, f"{RUNTIME_SETTING} names {os.path.basename(runtime)} itself; set it to runc or crun")
        return 127
    try:
        os.execvp(runtime, [runtime, *argv])
    except OSError as exc:
        log_line(global_flags, f"cannot run the runtime {runtime!r} ({exc.strerror}); set {RUNTIME_SETTING}")
    return 127


if __name__ == "__main__":
    sys.exit(main())
