"""A real Prometheus server scrapes the exporter; PromQL through its HTTP API sees the container."""

from __future__ import annotations

import os
import re

from tests.metrics.support import (
    ALLOCATE_20_MIB,
    ALLOCATE_ON_REQUEST,
    BUSY_LOOP,
    MIB,
    REPO,
    start_in,
    stop,
    wait_for,
)


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


def readme_queries() -> list[str]:
    """The ```promql blocks of the README's Metrics section, comments dropped."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.partition("\n## Metrics\n")[2].partition("\n## ")[0]
    blocks = re.findall(r"```promql\n(.*?)```", section, re.S)
    return [" ".join(line.strip() for line in block.splitlines() if not line.startswith("#")) for block in blocks]


def test_the_readme_queries_answer_for_real_containers(exporter, make_cgroup, prometheus_for):
    memory_query, throttling_query, near_oom_query = readme_queries()
    steady, doomed = make_cgroup("steady"), make_cgroup("doomed")
    steady.set_memory_limit(64 * MIB)
    steady.set_cpu_quota(10_000, 100_000)  # a tenth of a cpu: throttled even on a busy host
    doomed.set_memory_limit(32 * MIB)
    doomed.forbid_swap(32 * MIB)
    holder = start_in(steady, ALLOCATE_20_MIB, wait_ready=True)
    victim = start_in(doomed, ALLOCATE_ON_REQUEST, wait_ready=True)
    spinners = [start_in(steady, BUSY_LOOP.format(seconds=60)) for _ in range(2)]
    try:
        exporter.register(holder.pid)
        exporter.register(victim.pid)
        prometheus = prometheus_for(exporter.port)

        def by_id(query):
            return {r["metric"].get("id"): float(r["value"][1]) for r in prometheus.query(query)}

        ratio = wait_for(lambda: by_id(memory_query).get(steady.path), 30, what="memory ratio")
        assert 20 / 64 <= ratio < 0.9
        throttled = wait_for(lambda: by_id(throttling_query).get(steady.path), 30, what="a throttling ratio > 0")
        assert 0 < throttled <= 1
        assert doomed.path not in by_id(near_oom_query)
        # Let Prometheus see the OOM counter at 0, then go past the limit.
        wait_for(lambda: prometheus.query(
            f'count_over_time(container_oom_events_total{{id="{doomed.path}"}}[1m]) >= 2'), 30, what="two samples")
        victim.stdin.write(b"go\n")
        victim.stdin.flush()
        assert victim.wait(timeout=30) == -9  # SIGKILL from the OOM killer
        near = wait_for(lambda: doomed.path in by_id(near_oom_query) and by_id(near_oom_query), 30,
                        what="the OOM-killed container in the near-OOM query")
        assert steady.path not in near
    finally:
        for spinner in spinners:
            stop(spinner)
        stop(holder)
        stop(victim)
