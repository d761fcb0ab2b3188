"""The few exceptions the readers raise; everything else is a bug."""


class CgroupfsError(Exception):
    """Base class for the errors cgroupfs raises on purpose."""


class ProcessGone(CgroupfsError):
    """The process (or thread) vanished between two reads: ENOENT/ESRCH on /proc/<pid>."""


class CgroupGone(CgroupfsError):
    """The cgroup directory vanished (container stopped) while we were reading it."""


class ParseError(CgroupfsError):
    """A kernel file did not have the documented format (truncated, garbage, non-UTF-8)."""
