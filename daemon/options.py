"""The daemon's options: one table that makes the flags, the CGROUPFS_* settings and their documentation.

A row is a flag of `cgroupfs daemon` (other commands reuse some rows), a setting
named CGROUPFS_ + the flag in capitals with dashes as underscores, and one help
sentence shown by --help, systemd/cgroupfs.default and the README (a test keeps
both files in step with this table).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cgroupfs.layout import DEFAULT_MOUNTPOINT

PREFIX = "CGROUPFS_"
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9477"
UPTIME_SOURCES = ("container", "host")


@dataclass(frozen=True)
class Option:
    flag: str                                   # "--cache-ttl-ms"
    help: str                                   # one or two sentences
    default: str | float | bool | None = None   # None: decided when the daemon starts (see `shown_default`)
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False                        # a flag without a value (default False); the setting: yes or no
    exclusive: str = ""                         # options with the same word exclude each other
    shown_default: str | None = None            # what a default of None amounts to, for the documentation

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def setting(self) -> str:
        return PREFIX + self.dest.upper()

    @property
    def documented_default(self) -> str:
        """The default as a setting's value: what the example settings file shows."""
        if self.switch:
            return "yes" if self.default else "no"
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


MOUNTPOINT = Option(
    "--mountpoint", "Where the files are mounted; containers bind files from here.",
    default=DEFAULT_MOUNTPOINT, metavar="DIR")
DOCKER_HOST = Option(
    "--docker-host", f"The Docker engine's address; when unset, $DOCKER_HOST, else {DEFAULT_DOCKER_HOST}.",
    metavar="URL", exclusive="docker", shown_default=DEFAULT_DOCKER_HOST)
NO_DOCKER = Option(
    "--no-docker", "Do not watch Docker for containers to put the files into (then use "
    "`docker run $(cgroupfs flags) ...`).", default=False, switch=True, exclusive="docker")
METRICS_ADDRESS = Option(
    "--metrics-address", "Where Prometheus metrics are served, HOST:PORT ([::1]:PORT for IPv6).",
    metavar="HOST:PORT", exclusive="metrics", shown_default=DEFAULT_METRICS_ADDRESS)
NO_METRICS = Option("--no-metrics", "Do not serve metrics.", default=False, switch=True, exclusive="metrics")
LOG_LEVEL = Option(
    "--log-level", "debug, info, warning or error; debug logs each injection and cache decision.",
    default="info", metavar="LEVEL", type=str.lower, choices=LOG_LEVELS)
CACHE_TTL_MS = Option(
    "--cache-ttl-ms", "How long rendered content is reused for a cgroup, in milliseconds (0: never).",
    default=100.0, type=float, metavar="MS")
NO_CPU_QUOTA_CAP = Option(
    "--no-cpu-quota-cap", "Show the whole cpuset even when the CPU quota allows fewer CPUs.", default=False,
    switch=True)
UPTIME = Option(
    "--uptime", "What proc/uptime counts from: container (its age, what uptime-reporting agents expect) or "
    "host (the host's uptime, which ps and top need for process ages and %CPU).",
    default="container", metavar="FROM", type=str.lower, choices=UPTIME_SOURCES)
VIEWS_MOUNTPOINT = Option(
    "--views-mountpoint", "Where the per-container views are mounted (served from the page cache); "
    "the Docker watcher puts these into containers.", metavar="DIR", exclusive="views",
    shown_default="MOUNTPOINT-views")
NO_VIEWS = Option(
    "--no-views", "No views: the Docker watcher puts the per-reader files into containers.", default=False,
    switch=True, exclusive="views")
RUNTIME = Option(
    "--runtime", "The real OCI runtime `cgroupfs-runtime` runs for the engines (runc, crun, or a path); "
    "the daemon itself does not use it.", default="runc", metavar="PATH")
RUNTIME_WAIT_MS = Option(
    "--runtime-wait-ms", "How long `cgroupfs-runtime` waits for the mount to answer before it starts a container "
    "without the files, in milliseconds.", default=100.0, type=float, metavar="MS")
SYSINFO_SOCKET = Option(
    "--sysinfo-socket", "Where the daemon takes the seccomp listeners of containers `cgroupfs-runtime` "
    "started, to answer their sysinfo(2) with their own memory, uptime and load.", metavar="PATH",
    exclusive="sysinfo", shown_default="/run/cgroupfs/sysinfo.sock")
NO_SYSINFO = Option(
    "--no-sysinfo", "Do not answer containers' sysinfo(2): `cgroupfs-runtime` then leaves their seccomp "
    "profile as it is.", default=False, switch=True, exclusive="sysinfo")

# `cgroupfs daemon`'s options, in the order --help and the documentation list them.
OPTIONS = (MOUNTPOINT, DOCKER_HOST, NO_DOCKER, METRICS_ADDRESS, NO_METRICS, LOG_LEVEL, CACHE_TTL_MS,
           NO_CPU_QUOTA_CAP, UPTIME, VIEWS_MOUNTPOINT, NO_VIEWS, SYSINFO_SOCKET,
           NO_SYSINFO, RUNTIME, RUNTIME_WAIT_MS)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option],
                configured: Mapping[str, object]) -> None:
    """Add `options` to `parser`, each defaulting to its configured value (by dest), else its own."""
    groups: dict[str, Any] = {}  # exclusive word -> argparse's group
    for option in options:
        target: Any = parser
        if option.exclusive:
            target = groups.get(option.exclusive)
            if target is None:
                target = groups[option.exclusive] = parser.add_mutually_exclusive_group()
        default = configured.get(option.dest, option.default)
        if option.switch:
            target.add_argument(option.flag, action="store_true", default=default, help=option.help)
        else:
            target.add_argument(option.flag, default=default, type=option.type, choices=option.choices,
                                metavar=option.metavar, help=option.help)
