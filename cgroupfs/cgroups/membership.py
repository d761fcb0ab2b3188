"""Which cgroups a process belongs to: /proc/<pid>/cgroup.

Read from the host's cgroup namespace (where the daemon runs), the paths are
absolute even when the process sits in a private cgroup namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cgroupfs.errors import ParseError, ProcessGone


@dataclass(frozen=True)
class CgroupPaths:
    """A process's cgroup path per v1 controller, and its v2 path."""

    v1: dict[str, str] = field(default_factory=dict)
    v2: str | None = None

    def key(self) -> tuple:
        """A hashable identity, for caches keyed by "same cgroups".

        Computed once per value: it is asked for on every FUSE open (render cache and
        the metrics' served list), and the pid cache hands the same value to every
        open of that pid for 100 ms."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = (tuple(sorted(self.v1.items())), self.v2)
            object.__setattr__(self, "_key", cached)  # not a field: equality is unchanged
        return cached


def parse_proc_cgroup(text: str) -> CgroupPaths:
    """Parse `hierarchy-id:controller-list:path` lines."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            raise ParseError(f"malformed /proc/<pid>/cgroup line: {line!r}")
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                v1[controller] = path
    return CgroupPaths(v1=v1, v2=v2)


def read_proc_cgroup(pid: int, proc_root: str = "/proc") -> CgroupPaths:
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    if not text:  # a zombie's cgroup file reads empty
        raise ProcessGone(pid)
    return parse_proc_cgroup(text)
