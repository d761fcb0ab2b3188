"""The daemon's use of the wrapper's records: a live container is named, a gone one forgotten and removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cgroupfs_daemon.runtime_containers import ORPHAN_AFTER_S, RuntimeContainers
from cgroupfs_daemon.runtime_records import read_records, record
from cgroupfs_daemon.stats import DaemonStats


def test_records_follow_the_live_containers(tmp_path):
    environ = {"CGROUPFS_STATE_FILE": str(tmp_path / "state.json")}
    directory = str(tmp_path / "containers")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = tmp_path / "init.pid"
        pid_file.write_text(str(process.pid))
        spec = {"annotations": {"io.kubernetes.cri.container-name": "app", "io.kubernetes.cri.image-name": "img:1"}}
        assert record("live", spec, {}, str(pid_file), "/b", environ)
        assert record("starting", {}, {}, str(tmp_path / "not-yet.pid"), "/b", environ)
        stats = DaemonStats()
        containers = RuntimeContainers(stats, directory)
        containers.scan()
        info = stats.container("live")
        assert (info.name, info.image, info.init_pid) == ("app", "img:1", process.pid)
        assert stats.container("starting") is None  # no pid yet: kept, not tracked
        process.kill()
        process.wait()
        containers.scan()
        assert stats.container("live") is None
        assert [r["id"] for r in read_records(directory)] == ["starting"]
        containers.scan(now=os.stat(os.path.join(directory, "starting.json")).st_mtime + ORPHAN_AFTER_S + 1)
        assert read_records(directory) == []
    finally:
        process.kill()
        process.wait()


def test_a_torn_record_is_skipped(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "other.json").write_text(json.dumps({"id": "not-other"}))
    assert read_records(str(tmp_path)) == []
