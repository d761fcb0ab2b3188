"""What `cgroupfs-runtime create` does to a container's seccomp profile: trap sysinfo(2).

The daemon answers a container's sysinfo(2) with its own numbers
(daemon/sysinfo_responder.py) when the container's seccomp filter sends the call
to it: a rule with action SCMP_ACT_NOTIFY for `sysinfo`, and `listenerPath`, the
daemon's socket, to which the runtime (runc >= 1.1, crun) sends the filter's
listener.  Done only when all of this holds, else the profile is left as it was:

- the daemon's socket accepts a connection now: the runtime fails the container
  when it cannot hand the listener over (runc: "failed to connect with seccomp
  agent"), and a filter without listener fails every sysinfo(2) with ENOSYS;
- the real runtime can do it (`runc features` lists SCMP_ACT_NOTIFY; crun has had
  listenerPath since 0.19), asked once per runtime binary and remembered;
- the profile lets sysinfo run (SCMP_ACT_ALLOW or SCMP_ACT_LOG): a profile that
  denies it keeps denying it;
- no other agent listens already (one filter has one listenerPath).

A rule that names sysinfo among others loses that name (libseccomp refuses two
actions for one call); a container without a profile (unconfined, --privileged)
gets a minimal one that allows everything else.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess

SYSCALL = "sysinfo"
NOTIFY = "SCMP_ACT_NOTIFY"
RUNNING_ACTIONS = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})
FEATURES_TIMEOUT_S = 2.0
# crun has no `features` command before 1.9; it took listenerPath in 0.19.
CRUN_VERSION = re.compile(r"crun version (\d+)\.(\d+)")
CRUN_NOTIFY_SINCE = (0, 19)


class NotIntercepted(Exception):
    """The profile is left as it was; the message says why (one log line)."""


def socket_answers(path: str) -> bool:
    """Whether the daemon accepts connections at `path` now (a unix socket: at once or never)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def intercepted(spec: dict, listener_path: str) -> dict:
    """A copy of `spec` whose seccomp filter sends sysinfo to `listener_path`.

    Raises NotIntercepted when the profile must stay as it is."""
    linux = spec.get("linux")
    if linux is not None and not isinstance(linux, dict):
        raise NotIntercepted("config.json's linux section is not an object")
    seccomp = (linux or {}).get("seccomp")
    if seccomp is None:
        profile: dict = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    elif isinstance(seccomp, dict):
        profile = copy.deepcopy(seccomp)
    else:
        raise NotIntercepted("config.json's seccomp profile is not an object")
    if profile.get("listenerPath") not in (None, "", listener_path):
        raise NotIntercepted(f"the seccomp profile already sends its listener to {profile['listenerPath']}")
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise NotIntercepted("the seccomp profile's syscalls are not a list of rules")
    action = profile.get("defaultAction")
    kept = []
    for rule in rules:
        names = rule.get("names") or []
        if not isinstance(names, list) or SYSCALL not in names:
            kept.append(rule)
            continue
        if rule.get("args"):
            raise NotIntercepted("the seccomp profile filters sysinfo by its arguments")
        action = rule.get("action")
        rest = [name for name in names if name != SYSCALL]
        if rest:
            kept.append(dict(rule, names=rest))
    if action == NOTIFY and profile.get("listenerPath") == listener_path:
        return copy.deepcopy(spec)  # already done (a `run` after a `create` of the same bundle)
    if action not in RUNNING_ACTIONS:
        raise NotIntercepted(f"the seccomp profile gives sysinfo {action}, not ALLOW")
    kept.append({"names": [SYSCALL], "action": NOTIFY})
    profile["syscalls"] = kept
    profile["listenerPath"] = listener_path
    result = copy.deepcopy(spec)
    result.setdefault("linux", {})["seccomp"] = profile
    return result


def runtime_notifies(runtime: str, cache_path: str) -> bool:
    """Whether `runtime` (a name on PATH or a path) can send a seccomp listener to a
    listenerPath.  Asked once per binary (it costs an exec): remembered in
    `cache_path` under the binary's path, inode, size and mtime."""
    resolved = runtime if "/" in runtime else _which(runtime)
    if resolved is None:
        return False
    try:
        info = os.stat(resolved)
    except OSError:
        return False
    key = f"{os.path.realpath(resolved)}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
    cache = _read_cache(cache_path)
    if key in cache:
        return bool(cache[key])
    answer = _ask(resolved)
    cache = {k: v for k, v in cache.items() if not k.startswith(os.path.realpath(resolved) + ":")}
    cache[key] = answer
    _write_cache(cache_path, cache)
    return answer


def _ask(runtime: str) -> bool:
    try:
        features = subprocess.run([runtime, "features"], capture_output=True, timeout=FEATURES_TIMEOUT_S)
        if features.returncode == 0:
            seccomp = (json.loads(features.stdout).get("linux") or {}).get("seccomp") or {}
            return bool(seccomp.get("enabled")) and NOTIFY in (seccomp.get("actions") or [])
        version = subprocess.run([runtime, "--version"], capture_output=True, timeout=FEATURES_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError):
        return False
    match = CRUN_VERSION.search(version.stdout.decode(errors="replace"))
    if match is None:
        return False
    return (int(match[1]), int(match[2])) >= CRUN_NOTIFY_SINCE and b"+SECCOMP" in version.stdout


def _which(name: str) -> str | None:
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path: str, cache: dict) -> None:
    temporary = f"{path}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(cache, f)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
