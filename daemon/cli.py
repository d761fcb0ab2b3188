"""The `cgroupfs` command: daemon, show, flags, docker run, status, version.

Every operator-facing failure is one sentence on stderr and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cgroupfs.layout import DEFAULT_MOUNTPOINT
from cgroupfs.table import FILES

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9477"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear sentence, exit status 2
        self.exit(2, f"cgroupfs: {message} (see 'cgroupfs {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"cgroupfs: {message} (see 'cgroupfs --help')\n")


def file_name(value: str) -> str:
    """`show` accepts "meminfo", "proc/meminfo", "/proc/meminfo" or "cpu/online"."""
    cleaned = value.strip("/")
    for path in FILES:
        if cleaned == path or path.endswith("/" + cleaned) or path.split("/")[-1] == cleaned:
            return path
    raise argparse.ArgumentTypeError(f"unknown file {value!r}; choose from: " + ", ".join(FILES))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cgroupfs", description="Container-accurate /proc and /sys files over FUSE.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    daemon = sub.add_parser("daemon", help="mount the filesystem and serve until SIGTERM/SIGINT")
    daemon.add_argument("--mountpoint", default=DEFAULT_MOUNTPOINT)
    docker = daemon.add_mutually_exclusive_group()
    docker.add_argument("--docker-host", default=None,
                        help="Docker engine URL (default: $DOCKER_HOST or unix:///var/run/docker.sock)")
    docker.add_argument("--no-docker", action="store_true", help="do not watch Docker")
    metrics = daemon.add_mutually_exclusive_group()
    metrics.add_argument("--metrics-address", default=None, help=f"HOST:PORT (default {DEFAULT_METRICS_ADDRESS})")
    metrics.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    daemon.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS)
    daemon.add_argument("--cache-ttl-ms", type=float, default=100.0,
                        help="how long rendered content is reused per cgroup (0 disables)")
    daemon.add_argument("--no-cpu-quota-cap", action="store_true",
                        help="show the whole cpuset even when a CPU quota allows fewer cpus")
    views = daemon.add_mutually_exclusive_group()
    views.add_argument("--views-mountpoint", default="",
                       help="where the per-container views are mounted (default: MOUNTPOINT-views)")
    views.add_argument("--no-views", action="store_true",
                       help="no views: the Docker watcher injects the per-reader files")

    show = sub.add_parser("show", help="print what a process or container would read, without FUSE")
    show.add_argument("file", type=file_name, help="meminfo, cpuinfo, stat, diskstats, uptime, loadavg, swaps, online")
    target = show.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, default=None)
    target.add_argument("--container", default=None, help="Docker container name or id")
    show.add_argument("--docker-host", default=None)
    show.add_argument("--no-cpu-quota-cap", action="store_true")

    flags = sub.add_parser("flags", help="print the `docker run` -v flags that bind the files")
    flags.add_argument("--mountpoint", default=DEFAULT_MOUNTPOINT)

    docker_run = sub.add_parser("docker", help="`cgroupfs docker run ARGS...`: docker run with the flags added")
    docker_run.add_argument("--mountpoint", default=DEFAULT_MOUNTPOINT)
    docker_run.add_argument("docker_args", nargs=argparse.REMAINDER)

    sub.add_parser("version", help="print the version")
    status = sub.add_parser("status", help="is it mounted, which cgroup mode, Docker, metrics")
    status.add_argument("--mountpoint", default=DEFAULT_MOUNTPOINT)
    return parser


def configure_logging(level: str) -> None:
    from cgroupfs_daemon.journal import formatter

    handler = logging.StreamHandler(sys.stderr)
    # Under systemd, lines carry a syslog priority so `journalctl -p warning` works.
    handler.setFormatter(formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    if level != "debug":
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        logging.getLogger("docker").setLevel(logging.WARNING)


def cmd_daemon(args) -> int:
    from cgroupfs_daemon.main import Daemon, DaemonConfig, StartupError

    configure_logging(args.log_level)
    if os.geteuid() != 0:
        print("cgroupfs: the daemon must run as root (it mounts FUSE and reads every cgroup)", file=sys.stderr)
        return 2
    config = DaemonConfig(
        mountpoint=args.mountpoint,
        docker_host=None if args.no_docker else (args.docker_host or os.environ.get("DOCKER_HOST")
                                                  or "unix:///var/run/docker.sock"),
        metrics_address=None if args.no_metrics else (args.metrics_address or DEFAULT_METRICS_ADDRESS),
        cache_ttl_s=max(0.0, args.cache_ttl_ms) / 1000.0,
        cap_cpus_by_quota=not args.no_cpu_quota_cap,
        views_mountpoint=None if args.no_views else args.views_mountpoint,
    )
    try:
        daemon = Daemon(config)
        daemon.run()
    except StartupError as exc:
        print(f"cgroupfs: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_show(args) -> int:
    from cgroupfs.errors import CgroupfsError
    from cgroupfs.server import ContentServer
    from cgroupfs.sources import Options

    pid = args.pid if args.pid is not None else os.getppid()
    if args.container is not None:
        from cgroupfs_daemon.docker_cli import container_init_pid

        try:
            pid = container_init_pid(args.docker_host, args.container)
        except Exception as exc:  # the Docker SDK raises many types; all mean "cannot resolve"
            print(f"cgroupfs: cannot find container {args.container!r}: {exc}", file=sys.stderr)
            return 1
    if not os.path.exists(f"/proc/{pid}"):
        print(f"cgroupfs: no process {pid}", file=sys.stderr)
        return 1
    try:
        server = ContentServer(options=Options(cap_cpus_by_quota=not args.no_cpu_quota_cap), cache_ttl_s=0)
        sys.stdout.buffer.write(server.content(args.file, pid))
    except (CgroupfsError, OSError) as exc:
        print(f"cgroupfs: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_flags(args) -> int:
    from cgroupfs_daemon.docker_cli import print_flags

    return print_flags(args.mountpoint)


def cmd_docker(args) -> int:
    from cgroupfs_daemon.docker_cli import docker_run

    docker_args = args.docker_args
    if not docker_args or docker_args[0] != "run":
        print("cgroupfs: usage: cgroupfs docker run [DOCKER RUN ARGS...]", file=sys.stderr)
        return 2
    return docker_run(args.mountpoint, docker_args[1:])


def cmd_version(args) -> int:
    from cgroupfs_daemon.status import print_version

    return print_version()


def cmd_status(args) -> int:
    from cgroupfs_daemon.status import print_status

    return print_status(args.mountpoint)


COMMANDS = {
    "daemon": cmd_daemon, "show": cmd_show, "flags": cmd_flags, "docker": cmd_docker,
    "version": cmd_version, "status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    from cgroupfs_daemon.config import parse_args_with_config

    # Defaults come from /etc/default/cgroupfs (or $CGROUPFS_CONFIG) and CGROUPFS_* variables;
    # flags on the command line win.
    args = parse_args_with_config(build_parser(), argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
