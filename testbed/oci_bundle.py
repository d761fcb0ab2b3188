"""OCI bundles for tests and benchmarks that drive runc directly (no engine): busybox, and
optionally the host's /usr (python3, glibc) bound read-only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

from testbed.docker_engine import HOST_TOOL_DIRECTORIES, busybox_rootfs_tar
from testbed.timing import scaled


def make_bundle(directory: str, args: list[str], memory_limit: int | None = None, cpu_quota_us: int | None = None,
                host_tools: bool = False) -> str:
    """A bundle at `directory` whose container runs `args` (busybox's applets on PATH,
    and with `host_tools` the host's /usr/bin/python3); its path."""
    rootfs = os.path.join(directory, "rootfs")
    os.makedirs(rootfs, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar()), mode="r") as tar:
        # Our own archive; the filter argument exists from Python 3.11.4 (Debian 12 has 3.11.2).
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(rootfs, filter="tar")
        else:
            tar.extractall(rootfs)
    subprocess.run(["runc", "spec", "--bundle", directory], check=True, timeout=scaled(30))
    config_path = os.path.join(directory, "config.json")
    with open(config_path, encoding="utf-8") as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["process"]["env"] = ["PATH=/usr/bin:/bin", "HOME=/tmp"]
    spec["root"]["readonly"] = False
    resources = spec["linux"].setdefault("resources", {})
    if memory_limit is not None:
        resources["memory"] = {"limit": memory_limit}
    if cpu_quota_us is not None:
        resources["cpu"] = {"quota": cpu_quota_us, "period": 100_000}
    if host_tools:
        for path in HOST_TOOL_DIRECTORIES:
            spec["mounts"].append({"destination": path, "type": "bind", "source": os.path.realpath(path),
                                   "options": ["rbind", "ro", "nosuid", "nodev"]})
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    return directory


def seccomp_profile(bundle: str) -> dict | None:
    """The seccomp section of the bundle's config.json (what the wrapper left there)."""
    with open(os.path.join(bundle, "config.json"), encoding="utf-8") as f:
        return json.load(f).get("linux", {}).get("seccomp")


def delete_container(container_id: str, runtime: str = "runc") -> None:
    """`runc delete --force`: the container's processes killed, its state removed."""
    subprocess.run([runtime, "delete", "--force", container_id], capture_output=True, timeout=scaled(30))
