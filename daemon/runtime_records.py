"""What `cgroupfs-runtime` learned about a container, kept for the daemon's metrics and status.

At `create` the wrapper writes one small JSON file per container into the
`containers` directory beside the daemon's state file (/run/cgroupfs/containers/
<id>.json): its name and image as config.json (or Docker's config.v2.json) says,
a few annotations (Kubernetes', podman's, nerdctl's), the pid file the engine
asked the runtime to write.  The daemon removes the records of containers whose
process is gone (runtime_containers.py), within seconds; the wrapper does not
act on `delete`, so that every call but create goes straight to the runtime.
Bounded: at most MAX_RECORDS files, values and annotations cut to a size.
"""

from __future__ import annotations

import os

MAX_RECORDS = 4096
# Whether the wrapper bound the files into the container ("files" in a record).
FILES_BOUND = "bound"
FILES_OPTED_OUT = "opted-out"
FILES_MISSING = "missing"  # the mount did not answer (or another failure): the daemon injects later
MAX_VALUE_CHARS = 256
MAX_ANNOTATIONS = 32
# Annotations worth keeping: they name the container (Kubernetes through CRI-O or
# containerd's CRI, nerdctl, podman) or opt it out.
ANNOTATION_PREFIXES = ("io.kubernetes.", "nerdctl/", "io.podman.", "io.container.manager", "cgroupfs.")
# Which annotation gives the name and the image, best first.
NAME_KEYS = ("io.kubernetes.container.name", "io.kubernetes.cri.container-name", "nerdctl/name")
IMAGE_KEYS = ("io.kubernetes.cri.image-name", "org.opencontainers.image.ref.name")


def records_directory(environ=os.environ) -> str:
    from cgroupfs_daemon.settings_file import default_state_path

    return os.path.join(os.path.dirname(default_state_path(environ)), "containers")


def usable_id(container_id: str) -> bool:
    return (0 < len(container_id) <= 128 and container_id[0] != "." and "/" not in container_id
            and "\0" not in container_id)


def _cut(value: object) -> str:
    return str(value)[:MAX_VALUE_CHARS]


def facts(container_id: str, spec: dict, docker: dict, pid_file: str, bundle: str,
          files: str = FILES_BOUND) -> dict:
    """The record of one container, from its config.json `spec` and Docker's config.v2.json `docker`."""
    annotations = spec.get("annotations") or {}
    kept = {key: _cut(value) for key, value in sorted(annotations.items())
            if isinstance(key, str) and key.startswith(ANNOTATION_PREFIXES)}
    labels = dict(list(kept.items())[:MAX_ANNOTATIONS])
    name = next((annotations[k] for k in NAME_KEYS if annotations.get(k)), "")
    image = next((annotations[k] for k in IMAGE_KEYS if annotations.get(k)), "")
    engine = "kubernetes" if any(k.startswith("io.kubernetes.") for k in annotations) else ""
    if docker:
        engine = "docker"
        name = str(docker.get("Name") or "").lstrip("/")
        config = docker.get("Config") or {}
        image = config.get("Image") or image
        docker_labels = config.get("Labels") or {}
        for key, value in sorted(docker_labels.items())[:MAX_ANNOTATIONS - len(labels)]:
            labels[_cut(key)] = _cut(value)
    elif "nerdctl/name" in annotations:
        engine = "nerdctl"
    elif annotations.get("io.container.manager") == "libpod":
        engine = "podman"
    return {"id": container_id, "engine": engine, "name": _cut(name), "image": _cut(image), "labels": labels,
            "pid_file": pid_file, "bundle": bundle, "files": files}


def record(container_id: str, spec: dict, docker: dict, pid_file: str, bundle: str, environ=os.environ,
           files: str = FILES_BOUND) -> bool:
    """Write the record (atomically); False when it was not written (no room, no usable id, an error)."""
    import json

    if not usable_id(container_id):
        return False
    directory = records_directory(environ)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        with os.scandir(directory) as entries:
            if sum(1 for _ in entries) >= MAX_RECORDS:
                return False
        path = os.path.join(directory, container_id + ".json")
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(facts(container_id, spec, docker, pid_file, bundle, files), f)
        os.replace(temporary, path)
    except OSError:
        return False
    return True


def read_records(directory: str) -> list[dict]:
    """Every readable record in `directory` (a torn or foreign file is skipped)."""
    import json

    records = []
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")][:MAX_RECORDS]
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("id") == name[:-len(".json")]:
            records.append(data)
    return records


def read_pid(pid_file: str) -> int:
    """The pid the runtime wrote to `pid_file`; 0 when there is none (yet)."""
    if not pid_file:
        return 0
    try:
        with open(pid_file, encoding="ascii") as f:
            text = f.read(32).strip()
    except (OSError, ValueError):
        return 0
    return int(text) if text.isdigit() else 0
