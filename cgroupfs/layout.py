"""Where the virtual files live: under the mount point, and inside a container.

The relative paths are LXCFS's, so moving from LXCFS changes only the prefix.  The
Docker flags and the injector use this one list; every file of the path table is
one of these targets or inside one (the cpu directory).
"""

import os

DEFAULT_MOUNTPOINT = "/var/lib/cgroupfs"

# relative path under the mount point -> the path it covers inside a container
ALL_TARGETS: dict[str, str] = {
    "proc/cpuinfo": "/proc/cpuinfo",
    "proc/diskstats": "/proc/diskstats",
    "proc/loadavg": "/proc/loadavg",
    "proc/meminfo": "/proc/meminfo",
    "proc/pressure/cpu": "/proc/pressure/cpu",
    "proc/pressure/io": "/proc/pressure/io",
    "proc/pressure/memory": "/proc/pressure/memory",
    "proc/slabinfo": "/proc/slabinfo",
    "proc/stat": "/proc/stat",
    "proc/swaps": "/proc/swaps",
    "proc/uptime": "/proc/uptime",
    "proc/vmstat": "/proc/vmstat",
    # A directory: the host's, with our online/possible/present and only the visible
    # cpuN directories (files/cpu_directory.py), so that glibc's _NPROCESSORS_CONF
    # (which counts cpuN directories), lscpu and hwloc agree with `online`.
    "sys/devices/system/cpu": "/sys/devices/system/cpu",
}

# Kernel files that exist only with a kernel feature (PSI: CONFIG_PSI and not psi=0;
# slabinfo: CONFIG_SLUB_DEBUG).  A container has them when the host has them; where
# it does not, nothing can be mounted over them (and Docker, creating the missing
# mount point inside /proc, would fail to start the container): left out.
OPTIONAL_TARGETS = frozenset({"/proc/pressure/cpu", "/proc/pressure/io", "/proc/pressure/memory", "/proc/slabinfo"})

# What is mounted into containers on this host.
CONTAINER_TARGETS: dict[str, str] = {
    relative: target for relative, target in ALL_TARGETS.items()
    if target not in OPTIONAL_TARGETS or os.path.exists(target)
}


# runc refuses a bind mount inside /proc except over these files (its validProcMounts,
# the list LXCFS needs): at create time, only they can be bound.  The other /proc
# targets (pressure, vmstat) reach a container by injection: the Docker watcher
# mounts whatever is missing, in flagged containers too.
RUNC_PROC_TARGETS = frozenset({"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
                               "/proc/uptime", "/proc/loadavg", "/proc/slabinfo"})


def flag_targets() -> dict[str, str]:
    """The targets a runtime can bind when it creates a container (docker run -v, OCI mounts)."""
    return {relative: target for relative, target in CONTAINER_TARGETS.items()
            if not target.startswith("/proc/") or target in RUNC_PROC_TARGETS}


def docker_volume_flags(mountpoint: str = DEFAULT_MOUNTPOINT) -> list[str]:
    """The `docker run` arguments that bind every virtual file runc accepts, read-only."""
    flags = []
    for relative, target in flag_targets().items():
        flags += ["-v", f"{mountpoint.rstrip('/')}/{relative}:{target}:ro"]
    return flags
