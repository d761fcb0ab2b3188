"""cgroupfs: container-accurate /proc and /sys files computed from cgroup counters.

This package has no side effects on import and starts nothing: it reads cgroup and
/proc trees rooted at parameters and renders file contents.  The daemon around it
(mounting, Docker, metrics, systemd) lives in the ``cgroupfs_daemon`` package.
"""



def __getattr__(name: str) -> str:
    """`__version__`, looked up on first use: importlib.metadata costs ~0.1 s to import,
    which every `cgroupfs-runtime create` would pay (daemon/runtime_wrapper.py)."""
    if name != "__version__":
        raise AttributeError(f"module 'cgroupfs' has no attribute {name!r}")
    from importlib import metadata

    # pyproject.toml is the one place the version is written.
    try:
        version = metadata.version("cgroupfs")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        version = "unknown"
    globals()["__version__"] = version
    return version
