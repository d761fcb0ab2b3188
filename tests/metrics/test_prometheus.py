"""A real Prometheus server scrapes the exporter; PromQL through its HTTP API sees the container."""

from __future__ import annotations

import pytest

from tests.metrics.support import ALLOCATE_20_MIB, MIB, start_in, stop, wait_for

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_the_limit_of_a_container(exporter, make_cgroup, prometheus_for):
    cgroup = make_cgroup("prom")
    cgroup.set_memory_limit(64 * MIB)
    process = start_in(cgroup, ALLOCATE_20_MIB, wait_ready=True)
    try:
        exporter.register(process.pid)
        prometheus = prometheus_for(exporter.port)
        assert wait_for(lambda: prometheus.target_health() == "up", 30, what="target health up")
        selector = f'container_spec_memory_limit_bytes{{id="{cgroup.path}"}}'
        result = wait_for(lambda: prometheus.query(selector), 30, what=selector)
        assert [float(r["value"][1]) for r in result] == [67108864]
        # The README's first query: memory use against limit.
        ratio = prometheus.query(
            f'container_memory_working_set_bytes{{id="{cgroup.path}"}}'
            f' / (container_spec_memory_limit_bytes{{id="{cgroup.path}"}} > 0)')
        assert len(ratio) == 1 and 20 / 64 <= float(ratio[0]["value"][1]) < 1
    finally:
        stop(process)
