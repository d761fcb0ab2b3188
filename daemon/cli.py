"""The `cgroupfs` command: daemon, show, flags, docker run, setup, status, version.

Every operator-facing failure is one sentence on stderr and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping

from cgroupfs.table import DIRECTORIES, FILES, HOST_DIRECTORY
from cgroupfs_daemon.config import ConfigError, read_settings, settle_exclusive
from cgroupfs_daemon.options import (
    DEFAULT_DOCKER_HOST,
    DEFAULT_METRICS_ADDRESS,
    DOCKER_HOST,
    MOUNTPOINT,
    NO_CPU_QUOTA_CAP,
    OPTIONS,
    UPTIME,
    add_options,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear sentence, exit status 2
        self.exit(2, f"cgroupfs: {message} (see 'cgroupfs {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"cgroupfs: {message} (see 'cgroupfs --help')\n")


# Not a file: what the daemon answers a container's sysinfo(2) with (cgroupfs/sysinfo.py).
SYSINFO = "sysinfo"


def file_name(value: str) -> str:
    """`show` accepts "meminfo", "proc/meminfo", "/proc/meminfo" or "cpu/online", and the
    cpu directory "sys/devices/system/cpu" (its entries, one per line)."""
    cleaned = value.strip("/")
    if cleaned in (HOST_DIRECTORY, SYSINFO):
        return cleaned
    for path in FILES:
        if cleaned == path or path.endswith("/" + cleaned) or path.split("/")[-1] == cleaned:
            return path
    raise argparse.ArgumentTypeError(f"unknown file {value!r}; choose from: "
                                     + ", ".join([*FILES, HOST_DIRECTORY, SYSINFO]))


def build_parser(configured: Mapping[str, object] | None = None) -> argparse.ArgumentParser:
    """The command line; `configured` (option dest -> value) replaces the table's defaults."""
    configured = configured or {}
    parser = _Parser(prog="cgroupfs", description="Container-accurate /proc and /sys files over FUSE.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    daemon = sub.add_parser("daemon", help="mount the filesystem and serve until SIGTERM/SIGINT")
    add_options(daemon, OPTIONS, configured)

    show = sub.add_parser("show", help="print what a process or container would read, without FUSE")
    show.add_argument("file", type=file_name, help="meminfo, cpuinfo, stat, diskstats, uptime, loadavg, swaps, "
                      "vmstat, slabinfo, pressure/cpu, pressure/memory, pressure/io, online, possible, present, "
                      "sys/devices/system/cpu (the entries it lists), or sysinfo (what sysinfo(2) answers, "
                      "field by field)")
    target = show.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, default=None)
    target.add_argument("--container", default=None, help="Docker container name or id")
    add_options(show, (DOCKER_HOST, NO_CPU_QUOTA_CAP, UPTIME), configured)

    flags = sub.add_parser("flags", help="print the `docker run` -v flags that bind the files")
    add_options(flags, (MOUNTPOINT,), configured)

    docker_run = sub.add_parser("docker", help="`cgroupfs docker run ARGS...`: docker run with the flags added")
    add_options(docker_run, (MOUNTPOINT,), configured)
    docker_run.add_argument("docker_args", nargs=argparse.REMAINDER)

    setup = sub.add_parser("setup", help="register cgroupfs-runtime with docker, podman or containerd (--undo)")
    setup.add_argument("engine", choices=("docker", "podman", "containerd"))
    setup.add_argument("--default", action="store_true", dest="make_default",
                       help="docker: make it the default runtime, for every new container")
    setup.add_argument("--undo", action="store_true", help="remove what setup added, put back what it replaced")
    setup.add_argument("--config", default=None, metavar="FILE",
                       help="the engine's file (default: /etc/docker/daemon.json, /etc/containers/containers.conf, "
                            "/etc/containerd/config.toml)")
    setup.add_argument("--runtime-path", default=None, metavar="PATH",
                       help="where cgroupfs-runtime is (default: beside this cgroupfs)")

    sub.add_parser("version", help="print the version")
    status = sub.add_parser("status", help="is it mounted, which cgroup mode, Docker, metrics")
    add_options(status, (MOUNTPOINT,), configured)
    return parser


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ,
               config_path: str | None = None) -> argparse.Namespace:
    """The command line over the settings: /etc/default/cgroupfs (or $CGROUPFS_CONFIG), then
    CGROUPFS_* variables, give the defaults; flags on the command line win."""
    try:
        settings = read_settings(environ, config_path)
    except ConfigError as exc:
        build_parser().error(str(exc))
    configured = {dest: setting.value for dest, setting in settings.items()}
    args = build_parser(configured).parse_args(argv)
    settle_exclusive(args, configured)
    return args


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
    # A reload (SIGHUP) while starting waits until the daemon serves, instead of killing
    # it (the default action): serve_in_main_thread() unblocks it.  A re-executed
    # daemon starts with it blocked already: the mask, and a pending SIGHUP, survive exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    from cgroupfs_daemon.main import Daemon, DaemonConfig, StartupError
    from cgroupfs_daemon.settings_file import default_sysinfo_socket

    configure_logging(args.log_level)
    if os.geteuid() != 0:
        print("cgroupfs: the daemon must run as root (it mounts FUSE and reads every cgroup)", file=sys.stderr)
        return 2
    config = DaemonConfig(
        mountpoint=args.mountpoint,
        docker_host=None if args.no_docker else (args.docker_host or os.environ.get("DOCKER_HOST")
                                                  or DEFAULT_DOCKER_HOST),
        metrics_address=None if args.no_metrics else (args.metrics_address or DEFAULT_METRICS_ADDRESS),
        cache_ttl_s=max(0.0, args.cache_ttl_ms) / 1000.0,
        cap_cpus_by_quota=not args.no_cpu_quota_cap,
        host_uptime=args.uptime == "host",
        views_mountpoint=None if args.no_views else (args.views_mountpoint or ""),
        sysinfo_socket=None if args.no_sysinfo else (args.sysinfo_socket or default_sysinfo_socket()),
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
        options = Options(cap_cpus_by_quota=not args.no_cpu_quota_cap, host_uptime=args.uptime == "host")
        server = ContentServer(options=options, cache_ttl_s=0)
        if args.file == HOST_DIRECTORY:
            sys.stdout.write("".join(f"{name}\n" for name in cpu_directory_listing(server, pid)))
        elif args.file == SYSINFO:
            from cgroupfs.sysinfo import for_reader

            sys.stdout.write(for_reader(server.content, pid).text())
        else:
            sys.stdout.buffer.write(server.content(args.file, pid))
    except (CgroupfsError, OSError) as exc:
        print(f"cgroupfs: {exc}", file=sys.stderr)
        return 1
    return 0


def cpu_directory_listing(server, pid: int) -> list[str]:
    """The names `pid` finds in the cpu directory: ours, and the host's it is shown."""
    from cgroupfs.cgroups.files import parse_cpu_list
    from cgroupfs.files.cpu_directory import shows

    visible = parse_cpu_list(server.content(f"{HOST_DIRECTORY}/online", pid).decode("ascii", "replace"))
    ours = tuple(DIRECTORIES[HOST_DIRECTORY])
    host = [name for name in os.listdir(f"/{HOST_DIRECTORY}") if shows(name, visible, ours)]
    return sorted([*ours, *host])


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


def cmd_setup(args) -> int:
    from cgroupfs_daemon.engine_setup import run_setup

    if args.make_default and args.engine != "docker":
        print("cgroupfs: --default is for docker (podman's setup makes it podman's runtime already)",
              file=sys.stderr)
        return 2
    return run_setup(args.engine, args.config, args.runtime_path, args.make_default, args.undo)


def cmd_version(args) -> int:
    from cgroupfs_daemon.status import print_version

    return print_version()


def cmd_status(args) -> int:
    from cgroupfs_daemon.status import print_status

    return print_status(args.mountpoint)


COMMANDS = {
    "daemon": cmd_daemon, "show": cmd_show, "flags": cmd_flags, "docker": cmd_docker,
    "setup": cmd_setup, "version": cmd_version, "status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
