"""What `cgroupfs-runtime create` does to a bundle before the real runtime sees it.

It adds to config.json one read-only bind mount per file of the path table
(cgroupfs.layout, kept equal to cgroupfs.table by tests/unit/test_renderers.py),
sourced from the daemon's per-reader mount, unless:
- the container opted out: annotation `cgroupfs.inject=false`, or on Docker the
  label (Docker 20.10 puts neither labels nor annotations into config.json, and
  its API cannot be asked from here: dockerd waits on this very call; so the
  label is read from the container's config.v2.json, found beside the
  /etc/hostname file Docker bind-mounts into every container);
- the container already mounts that destination (LXCFS, the user's own -v): that
  path is left alone;
- the daemon's mount does not answer within CGROUPFS_RUNTIME_WAIT_MS: nothing is added
  (the bind sources would not exist, and runc would fail the container).

Why the per-reader files and not a view: a view is keyed by a container the
daemon knows, and this container has no process yet; the per-reader files need no
registration, and each read compares the cgroup's limit files with those its
cached text was rendered under, so the first instruction reads the limits runc
wrote after its init touched the bind sources (cgroupfs/server.py).

The facts config.json gives (names, image, Kubernetes annotations) are recorded
for the daemon's metrics and status (runtime_records.py), with whether the files
were bound: the daemon puts them into a container that was created while it did
not answer (runtime_containers.py).
"""

from __future__ import annotations

import json
import os
import threading

from cgroupfs.layout import DEFAULT_MOUNTPOINT, flag_targets
from cgroupfs_daemon import runtime_records
from cgroupfs_daemon.settings_file import default_state_path, default_sysinfo_socket, setting

OPT_OUT = "cgroupfs.inject"
# The options table's MOUNTPOINT row (options.py), spelt out as in runtime_wrapper.py.
MOUNTPOINT_SETTING = "CGROUPFS_MOUNTPOINT"
# How long the daemon's mount may take to answer before the container starts without
# it: the options table's RUNTIME_WAIT_MS row, spelt out as in runtime_wrapper.py.
WAIT_SETTING = "CGROUPFS_RUNTIME_WAIT_MS"
DEFAULT_WAIT_MS = 100.0
# The SYSINFO_SOCKET and NO_SYSINFO rows, spelt out likewise.
SYSINFO_SETTING = "CGROUPFS_SYSINFO_SOCKET"
NO_SYSINFO_SETTING = "CGROUPFS_NO_SYSINFO"
# Flags of `create`/`run` (runc and crun) that take a value.
CREATE_VALUE_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds", "config", "f"})
# A Docker container's config.v2.json is a few KiB; never read a huge one.
MAX_DOCKER_CONFIG_BYTES = 1 << 20
BIND_OPTIONS = ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]


class NotPrepared(Exception):
    """The bundle is left as it is; the message says why (logged by the wrapper)."""


def parse_create(argv: list[str]) -> tuple[dict[str, str], str]:
    """(flags with values, container id) of the arguments after `create` or `run`."""
    flags: dict[str, str] = {}
    container_id = ""
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg.startswith("-") and arg != "-":
            name, has_value, value = arg.lstrip("-").partition("=")
            if name in CREATE_VALUE_FLAGS:
                if not has_value:
                    value = argv[index] if index < len(argv) else ""
                    index += 1
                flags[name] = value
        elif not container_id:
            container_id = arg
    return flags, container_id


def opted_out(labels: dict | None) -> bool:
    value = (labels or {}).get(OPT_OUT)
    return isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off")


def docker_config(spec: dict) -> dict:
    """Docker's own record of the container (config.v2.json), {} when this is not a Docker container.

    Docker bind-mounts <data-root>/containers/<id>/hostname at /etc/hostname."""
    for mount in spec.get("mounts") or []:
        source = mount.get("source") or ""
        if mount.get("destination") == "/etc/hostname" and source.endswith("/hostname"):
            path = os.path.join(os.path.dirname(source), "config.v2.json")
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_DOCKER_CONFIG_BYTES + 1)
            except OSError:
                return {}
            if len(data) > MAX_DOCKER_CONFIG_BYTES:
                return {}
            config = json.loads(data)
            return config if isinstance(config, dict) else {}
    return {}


def mount_answers(mountpoint: str, timeout_s: float) -> bool:
    """Whether a file of the daemon's mount can be read within `timeout_s`.

    In a thread: a wedged FUSE mount can block a read for long; the exec that follows
    ends the blocked thread (a FUSE wait is killable).  A missing or dead mount
    fails at once, without waiting."""
    done = threading.Event()
    answered: list[bool] = []

    def read() -> None:
        try:
            with open(os.path.join(mountpoint, "sys/devices/system/cpu/online"), "rb") as f:
                if f.read(64):
                    answered.append(True)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=read, daemon=True).start()
    return done.wait(timeout_s) and bool(answered)


def add_mounts(spec: dict, mountpoint: str) -> list[str]:
    """Append a read-only bind of each file whose destination the container does not mount yet;
    the targets added.  Only those runc accepts at create (flag_targets): it refuses the
    others inside /proc, which would fail the container; the watcher injects those."""
    mounts = spec.setdefault("mounts", [])
    taken = {os.path.normpath(m.get("destination") or "/") for m in mounts if isinstance(m, dict)}
    added = []
    # Only what runc accepts at create time (layout.flag_targets(): its validProcMounts);
    # /proc/vmstat and /proc/pressure/* reach Docker's containers by the watcher.
    for relative, target in flag_targets().items():
        if target in taken:
            continue
        mounts.append({"destination": target, "type": "bind", "source": os.path.join(mountpoint, relative),
                       "options": list(BIND_OPTIONS)})
        added.append(target)
    return added


def write_atomically(path: str, spec: dict) -> None:
    temporary = f"{path}.cgroupfs.{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def intercept_sysinfo(spec: dict, runtime: str, global_flags: dict[str, str], environ=os.environ) -> dict:
    """`spec` with sysinfo(2) sent to the daemon (runtime_seccomp.py), or `spec` itself,
    with one log line saying why, when the daemon's socket does not answer or the
    profile or the runtime cannot (silently when the settings turn sysinfo off)."""
    from cgroupfs_daemon.runtime_seccomp import NotIntercepted, intercepted, runtime_notifies, socket_answers
    from cgroupfs_daemon.runtime_wrapper import log_line

    if (setting(NO_SYSINFO_SETTING, environ) or "").strip().lower() in ("yes", "true", "1", "on"):
        return spec
    socket_path = os.path.abspath(setting(SYSINFO_SETTING, environ) or default_sysinfo_socket(environ))
    state_directory = os.path.dirname(default_state_path(environ))
    try:
        if not socket_answers(socket_path):
            raise NotIntercepted(f"the daemon's socket {socket_path} does not answer (--no-sysinfo? then set "
                                 f"{NO_SYSINFO_SETTING}=yes for the wrapper too)")
        if not runtime_notifies(runtime, os.path.join(state_directory, "runtime-features.json")):
            raise NotIntercepted(f"the runtime {runtime} cannot send a seccomp listener (runc >= 1.1 or crun can)")
        return intercepted(spec, socket_path)
    except NotIntercepted as exc:
        log_line(global_flags, f"sysinfo(2) left to the kernel in this container: {exc}")
        return spec


def prepare(argv: list[str], global_flags: dict[str, str], environ=os.environ, runtime: str = "runc") -> list[str]:
    """Edit the bundle's config.json for `create`/`run` arguments `argv`; the targets added.

    Raises NotPrepared (or anything else) with the bundle untouched."""
    flags, container_id = parse_create(argv)
    bundle = flags.get("bundle") or flags.get("b") or os.getcwd()
    config_path = os.path.join(bundle, flags.get("config") or flags.get("f") or "config.json")
    with open(config_path, encoding="utf-8") as f:
        spec = json.load(f)
    if not isinstance(spec, dict):
        raise NotPrepared(f"{config_path} is not a JSON object")
    docker = docker_config(spec)
    docker_labels = (docker.get("Config") or {}).get("Labels") or {}
    pid_file = flags.get("pid-file")
    files = runtime_records.FILES_MISSING  # what the record says unless the binds are added

    try:
        if opted_out(spec.get("annotations")) or opted_out(docker_labels):
            files = runtime_records.FILES_OPTED_OUT
            return []
        mountpoint = os.path.abspath(setting(MOUNTPOINT_SETTING, environ) or DEFAULT_MOUNTPOINT)
        wait_ms = float(setting(WAIT_SETTING, environ) or DEFAULT_WAIT_MS)
        if not mount_answers(mountpoint, wait_ms / 1000):
            raise NotPrepared(f"the cgroupfs mount {mountpoint} does not answer within {wait_ms:.0f} ms "
                              f"(is the daemon running?)")
        added = add_mounts(spec, mountpoint)
        files = runtime_records.FILES_BOUND
        with_sysinfo = intercept_sysinfo(spec, runtime, global_flags, environ)
        if added or with_sysinfo is not spec:
            write_atomically(config_path, with_sysinfo)
        return added
    finally:
        runtime_records.record(container_id, spec, docker, os.path.abspath(pid_file) if pid_file else "", bundle,
                               environ, files=files)
