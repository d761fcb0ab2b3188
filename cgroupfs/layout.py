"""Where the virtual files live: under the mount point, and inside a container.

The relative paths are LXCFS's, so moving from LXCFS changes only the prefix.  The
Docker flags, the injector and the FUSE path table all use this one list.
"""

DEFAULT_MOUNTPOINT = "/var/lib/cgroupfs"

# relative path under the mount point -> the path it covers inside a container
CONTAINER_TARGETS: dict[str, str] = {
    "proc/cpuinfo": "/proc/cpuinfo",
    "proc/diskstats": "/proc/diskstats",
    "proc/loadavg": "/proc/loadavg",
    "proc/meminfo": "/proc/meminfo",
    "proc/stat": "/proc/stat",
    "proc/swaps": "/proc/swaps",
    "proc/uptime": "/proc/uptime",
    "sys/devices/system/cpu/online": "/sys/devices/system/cpu/online",
}


def docker_volume_flags(mountpoint: str = DEFAULT_MOUNTPOINT) -> list[str]:
    """The `docker run` arguments that bind every virtual file read-only."""
    flags = []
    for relative, target in CONTAINER_TARGETS.items():
        flags += ["-v", f"{mountpoint.rstrip('/')}/{relative}:{target}:ro"]
    return flags
