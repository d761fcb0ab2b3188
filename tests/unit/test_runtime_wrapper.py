"""cgroupfs-runtime's pure parts: the command line, the bundle edit, records, engine set-up files."""

from __future__ import annotations

import json
import os
import tomllib

import pytest

from cgroupfs.layout import flag_targets
from cgroupfs_daemon import runtime_bundle, runtime_records, runtime_wrapper
from cgroupfs_daemon.engine_setup import MARK, SetupError, edit_containerd, edit_docker, edit_podman, setup
from cgroupfs_daemon.options import MOUNTPOINT, RUNTIME, RUNTIME_WAIT_MS

# How Docker 20.10's containerd shim calls the runtime (captured on this host).
DOCKER_CREATE = ["--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json", "--log-format", "json",
                 "create", "--bundle", "/run/x/bundle", "--pid-file", "/run/x/init.pid", "0123abc"]


def test_the_command_after_global_flags():
    flags, index = runtime_wrapper.split_command(DOCKER_CREATE)
    assert DOCKER_CREATE[index] == "create"
    assert flags == {"root": "/var/run/docker/runtime-runc/moby", "log": "/run/x/log.json", "log-format": "json"}
    flags, index = runtime_wrapper.split_command(["--systemd-cgroup", "--root=/r", "delete", "--force", "id"])
    assert (flags, index) == ({"root": "/r"}, 2)
    assert runtime_wrapper.split_command(["--version"]) == ({}, 1)


def test_create_arguments():
    flags, container_id = runtime_bundle.parse_create(["--bundle", "/b", "--pid-file=/p", "--no-pivot",
                                                       "--console-socket", "/s", "id1"])
    assert (flags, container_id) == ({"bundle": "/b", "pid-file": "/p", "console-socket": "/s"}, "id1")
    assert runtime_bundle.parse_create(["-b", "/b", "id2"]) == ({"b": "/b"}, "id2")


def test_mounts_added_for_every_file_of_the_table_but_taken_destinations():
    spec = {"mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/proc/meminfo", "type": "bind", "source": "/var/lib/lxcfs/proc/meminfo"}]}
    added = runtime_bundle.add_mounts(spec, "/var/lib/cgroupfs")
    assert added == [t for t in flag_targets().values() if t != "/proc/meminfo"]
    assert "/proc/vmstat" not in added  # runc refuses it at create
    ours = {m["destination"]: m for m in spec["mounts"][2:]}
    assert ours["/proc/cpuinfo"]["source"] == "/var/lib/cgroupfs/proc/cpuinfo"
    assert "ro" in ours["/proc/cpuinfo"]["options"] and ours["/proc/cpuinfo"]["type"] == "bind"
    assert spec["mounts"][1]["source"] == "/var/lib/lxcfs/proc/meminfo"  # left alone


@pytest.mark.parametrize("value, out", [("false", True), ("FALSE", True), ("0", True), ("true", False), ("", False)])
def test_opt_out(value, out):
    assert runtime_bundle.opted_out({"cgroupfs.inject": value}) is out
    assert runtime_bundle.opted_out(None) is False


def test_docker_labels_from_config_v2(tmp_path):
    container = tmp_path / "containers" / "0123abc"
    container.mkdir(parents=True)
    (container / "config.v2.json").write_text(json.dumps(
        {"Name": "/web", "Config": {"Image": "nginx", "Labels": {"cgroupfs.inject": "false"}}}))
    spec = {"mounts": [{"destination": "/etc/hostname", "source": str(container / "hostname"), "type": "bind"}]}
    docker = runtime_bundle.docker_config(spec)
    assert runtime_bundle.opted_out(docker["Config"]["Labels"])
    record = runtime_records.facts("0123abc", spec, docker, "/p", "/b")
    assert (record["engine"], record["name"], record["image"]) == ("docker", "web", "nginx")
    assert runtime_bundle.docker_config({"mounts": []}) == {}


def test_prepare_leaves_the_bundle_untouched_when_the_mount_does_not_answer(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    text = json.dumps({"ociVersion": "1.0.2", "mounts": []})
    (bundle / "config.json").write_text(text)
    environ = {"CGROUPFS_CONFIG": str(tmp_path / "none"), "CGROUPFS_MOUNTPOINT": str(tmp_path / "empty"),
               "CGROUPFS_STATE_FILE": str(tmp_path / "state" / "state.json")}
    with pytest.raises(runtime_bundle.NotPrepared, match="does not answer"):
        runtime_bundle.prepare(["--bundle", str(bundle), "c1"], {}, environ)
    assert (bundle / "config.json").read_text() == text
    # The facts are recorded all the same (names for metrics).
    records = runtime_records.read_records(str(tmp_path / "state" / "containers"))
    assert [(r["id"], r["files"]) for r in records] == [("c1", runtime_records.FILES_MISSING)]


def test_kubernetes_names_kept_bounded():
    annotations = {"io.kubernetes.cri.container-name": "app", "io.kubernetes.cri.sandbox-namespace": "prod",
                   "io.kubernetes.cri.image-name": "registry/app:1", "unrelated": "x" * 1000}
    annotations |= {f"io.kubernetes.extra{i}": "y" * 1000 for i in range(100)}
    record = runtime_records.facts("c", {"annotations": annotations}, {}, "", "/b")
    assert (record["engine"], record["name"], record["image"]) == ("kubernetes", "app", "registry/app:1")
    assert len(record["labels"]) == runtime_records.MAX_ANNOTATIONS and "unrelated" not in record["labels"]
    assert max(len(v) for v in record["labels"].values()) == runtime_records.MAX_VALUE_CHARS


def test_records_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_records, "MAX_RECORDS", 3)
    environ = {"CGROUPFS_STATE_FILE": str(tmp_path / "state.json")}
    written = [runtime_records.record(f"c{i}", {}, {}, "", "/b", environ) for i in range(5)]
    assert written == [True, True, True, False, False]
    assert not runtime_records.record("../escape", {}, {}, "", "/b", environ)


def test_the_wrapper_runs_the_configured_runtime(tmp_path):
    config = tmp_path / "cgroupfs"
    config.write_text("CGROUPFS_RUNTIME=/usr/bin/crun\n")
    assert runtime_wrapper.real_runtime({"CGROUPFS_CONFIG": str(config)}) == "/usr/bin/crun"
    assert runtime_wrapper.real_runtime({"CGROUPFS_CONFIG": str(tmp_path / "none")}) == "runc"
    assert runtime_wrapper.real_runtime({"CGROUPFS_RUNTIME": "crun", "CGROUPFS_CONFIG": str(config)}) == "crun"


def test_the_wrappers_setting_names_are_the_tables():
    assert (runtime_wrapper.RUNTIME_SETTING, runtime_wrapper.DEFAULT_RUNTIME) == (RUNTIME.setting, RUNTIME.default)
    assert (runtime_bundle.MOUNTPOINT_SETTING, runtime_bundle.DEFAULT_MOUNTPOINT) == (MOUNTPOINT.setting,
                                                                                    MOUNTPOINT.default)
    assert (runtime_bundle.WAIT_SETTING, runtime_bundle.DEFAULT_WAIT_MS) == (RUNTIME_WAIT_MS.setting,
                                                                           RUNTIME_WAIT_MS.default)


def test_the_log_line_goes_to_the_runtimes_json_log(tmp_path, capsys):
    log = tmp_path / "log.json"
    runtime_wrapper.log_line({"log": str(log), "log-format": "json"}, "daemon not answering")
    entry = json.loads(log.read_text())
    assert entry["level"] == "warning" and entry["msg"] == "cgroupfs-runtime: daemon not answering"
    assert "daemon not answering" in capsys.readouterr().err


# -- cgroupfs setup ---------------------------------------------------------------------

def test_docker_setup_keeps_other_settings_and_undoes():
    original = json.dumps({"log-level": "warn", "runtimes": {"nvidia": {"path": "/n"}}})
    edited = edit_docker(original, "/rt", make_default=True, undo=False)
    config = json.loads(edited)
    assert config["runtimes"] == {"nvidia": {"path": "/n"}, "cgroupfs": {"path": "/rt"}}
    assert config["default-runtime"] == "cgroupfs" and config["log-level"] == "warn"
    assert edit_docker(edited, "/rt", make_default=True, undo=False) == edited
    assert json.loads(edit_docker(edited, "/rt", make_default=False, undo=True)) == json.loads(original)


PODMAN = """# site settings
[containers]
log_driver = "k8s-file"  # ours

[engine]
# the runtime we had
runtime = "crun"
"""


def test_podman_setup_keeps_comments_idempotent_and_undoes():
    edited = edit_podman(PODMAN, "/rt", undo=False)
    data = tomllib.loads(edited)
    assert data["engine"]["runtime"] == "cgroupfs" and data["engine"]["runtimes"]["cgroupfs"] == ["/rt"]
    assert '# the runtime we had' in edited and 'log_driver = "k8s-file"  # ours' in edited
    assert edit_podman(edited, "/rt", undo=False) == edited
    assert edit_podman(edited, "/rt", undo=True) == PODMAN


CONTAINERD = """version = 2
# operator's comment
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
    BinaryName = "/usr/local/bin/runc"
"""


def test_containerd_setup_replaces_and_restores_binary_name():
    edited = edit_containerd(CONTAINERD, "/rt", undo=False)
    options = tomllib.loads(edited)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert options["options"] == {"SystemdCgroup": True, "BinaryName": "/rt"}
    assert f'BinaryName = "/rt"  {MARK}' in edited and "# operator's comment" in edited
    assert edit_containerd(edited, "/rt", undo=False) == edited
    assert edit_containerd(edited, "/rt", undo=True) == CONTAINERD


def test_containerd_setup_of_a_missing_file(tmp_path):
    path = str(tmp_path / "config.toml")
    assert setup("containerd", path, "/rt").changed
    data = tomllib.loads(open(path).read())
    runc = data["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert (data["version"], runc["options"]["BinaryName"], runc["runtime_type"]) == (2, "/rt",
                                                                                      "io.containerd.runc.v2")
    assert not setup("containerd", path, "/rt").changed
    assert setup("containerd", path, "/rt", undo=True).changed
    assert tomllib.loads(open(path).read()) == {"version": 2}


def test_setup_refuses_a_file_it_cannot_read_back(tmp_path):
    path = tmp_path / "containers.conf"
    path.write_text("[engine\nbroken")
    with pytest.raises(SetupError, match="not valid TOML"):
        setup("podman", str(path), "/rt")
    assert path.read_text() == "[engine\nbroken"


def test_setup_keeps_the_files_mode(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    setup("docker", str(path), "/rt")
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_wrapper_refuses_to_run_itself(capsys, monkeypatch):
    monkeypatch.setenv("CGROUPFS_RUNTIME", "/opt/cgroupfs/bin/cgroupfs-runtime")
    assert runtime_wrapper.main(["state", "x"]) == 127
    assert "names cgroupfs-runtime itself" in capsys.readouterr().err
