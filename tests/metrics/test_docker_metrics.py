"""With Docker: the daemon labels a container's series with its name and image, puts its
Docker labels on one info series, and drops them all once the container is removed."""

from __future__ import annotations

import os

import pytest

from tests.metrics.conftest import MetricsDaemon
from tests.metrics.support import MIB, free_port, ids_in, require, samples, values, wait_for

pytestmark = pytest.mark.docker  # the private dockerd (tests/conftest.py: lanes)


@pytest.fixture
def engine():
    require(os.geteuid() == 0, "Docker tests need root")
    from testbed.docker_engine import IMAGE
    from tests.docker.engine import running_engine

    with running_engine() as engine:
        engine.image = IMAGE
        yield engine


def test_docker_container_series_carry_its_name_image_and_labels(engine, tmp_path):
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    daemon = MetricsDaemon(str(mountpoint), f"127.0.0.1:{free_port()}", str(tmp_path / "daemon.log"),
                           docker_host=engine.host)
    try:
        wait_for(daemon.serving, 30, what="the daemon")
        name = f"cgfs-metrics-{os.getpid()}"
        engine.cli("run", "-d", "--name", name, "--network", "none", "-m", "64m",
                   "--label", "com.example.team=metrics", engine.image, "sleep", "600")
        container_id = engine.inspect(name)["Id"]

        def exported():
            text = daemon.scrape()
            return values(text, "container_spec_memory_limit_bytes", name=name) and text

        text = wait_for(exported, 30, what=f"series named {name}")
        assert values(text, "container_spec_memory_limit_bytes", name=name, image=engine.image) == [64 * MIB]
        [usage] = values(text, "container_memory_usage_bytes", name=name)
        assert 0 < usage < 64 * MIB
        assert values(text, "container_processes", name=name) == [1]
        assert values(text, "cgroupfs_container_info", name=name, container_id=container_id,
                      container_label_com_example_team="metrics") == [1]
        [container_path] = {dict(labels)["id"] for sample, labels in samples(text)
                            if sample.startswith("container_") and ("name", name) in labels}
        assert container_id in container_path  # /docker/<id> or /system.slice/docker-<id>.scope
        assert values(text, "cgroupfs_docker_up") == [1]
        assert values(text, "cgroupfs_containers_tracked") == [1]
        engine.cli("rm", "-f", name)
        wait_for(lambda: container_path not in ids_in(daemon.scrape()), 30, what="the removed container to go")
        assert not values(daemon.scrape(), "cgroupfs_container_info", name=name)
    finally:
        daemon.stop()

