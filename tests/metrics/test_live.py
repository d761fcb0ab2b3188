"""The exporter against real cgroups on this host: values, lint, churn."""

from __future__ import annotations

import threading
import time

import pytest

from tests.metrics.support import (
    ALLOCATE_20_MIB,
    BUSY_LOOP,
    MIB,
    SLEEP_FOREVER,
    ids_in,
    promtool_check,
    start_in,
    stop,
    values,
)


def test_memory_limit_and_usage_of_a_64_mib_cgroup(exporter, make_cgroup):
    cgroup = make_cgroup("mem")
    cgroup.set_memory_limit(64 * MIB)
    process = start_in(cgroup, ALLOCATE_20_MIB, wait_ready=True)
    try:
        exporter.register(process.pid)
        text = exporter.scrape()
        assert values(text, "container_spec_memory_limit_bytes", id=cgroup.path) == [67108864]
        [usage] = values(text, "container_memory_usage_bytes", id=cgroup.path)
        # 20 MiB of written bytes plus the interpreter's own pages, all charged here
        # since the process joined before exec; well under the limit.
        assert 20 * MIB <= usage <= 48 * MIB, usage
        [working_set] = values(text, "container_memory_working_set_bytes", id=cgroup.path)
        assert 20 * MIB <= working_set <= usage
        [rss] = values(text, "container_memory_rss", id=cgroup.path)
        assert rss >= 20 * MIB
        assert values(text, "container_processes", id=cgroup.path) == [1]
        assert values(text, "container_threads", id=cgroup.path) == [1]
        [started] = values(text, "container_start_time_seconds", id=cgroup.path)
        assert abs(started - time.time()) < 60
        assert values(text, "container_oom_events_total", id=cgroup.path) == [0]
        assert values(text, "container_memory_usage_bytes", id=cgroup.path, name="", image="")
        result = promtool_check(text)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    finally:
        stop(process)


def test_cpu_seconds_grow_with_a_busy_loop(exporter, make_cgroup):
    cgroup = make_cgroup("cpu")
    cgroup.set_cpu_quota(200_000, 100_000)  # 2 cpus: the CFS metrics exist only with a quota
    idle = start_in(cgroup, SLEEP_FOREVER)
    try:
        exporter.register(idle.pid)
        before = exporter.scrape()
        [usage_before] = values(before, "container_cpu_usage_seconds_total", id=cgroup.path, cpu="total")
        busy = start_in(cgroup, BUSY_LOOP.format(seconds=0.6))
        busy.wait(timeout=30)
        stop(busy)
        after = exporter.scrape()
        [usage_after] = values(after, "container_cpu_usage_seconds_total", id=cgroup.path, cpu="total")
        assert 0.5 <= usage_after - usage_before <= 5, (usage_before, usage_after)
        [user] = values(after, "container_cpu_user_seconds_total", id=cgroup.path)
        [system] = values(after, "container_cpu_system_seconds_total", id=cgroup.path)
        assert user + system == pytest.approx(usage_after, abs=1e-6)
        assert values(after, "container_spec_cpu_quota", id=cgroup.path) == [200000]
        assert values(after, "container_spec_cpu_period", id=cgroup.path) == [100000]
        [periods] = values(after, "container_cpu_cfs_periods_total", id=cgroup.path)
        assert periods >= 1
    finally:
        stop(idle)


def test_two_concurrent_scrapes_while_cgroups_come_and_go(exporter, make_cgroup):
    stable = make_cgroup("stable")
    keeper = start_in(stable, SLEEP_FOREVER)
    exporter.register(keeper.pid)
    removed_ids: list[str] = []
    failures: list[BaseException] = []
    results: list[str] = []
    churning = threading.Event()
    churning.set()

    def churn():
        for round_number in range(12):
            cgroup = make_cgroup(f"churn{round_number}")
            process = start_in(cgroup, SLEEP_FOREVER)
            try:
                exporter.register(process.pid)
                time.sleep(0.02)
            finally:
                stop(process)
                cgroup.remove()  # gone while the exporter still lists it as served
                removed_ids.append(cgroup.path)
        churning.clear()

    def scraper():
        try:
            while churning.is_set():
                results.append(exporter.scrape())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    try:
        threads = [threading.Thread(target=churn)] + [threading.Thread(target=scraper) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        assert len(results) >= 2
        for text in results:  # every scrape during the churn succeeded and lists the stable cgroup
            assert stable.path in ids_in(text)
        final = exporter.scrape()
        assert stable.path in ids_in(final)
        assert not set(removed_ids) & ids_in(final)
        assert values(final, "cgroupfs_metrics_collector_errors_total") == [0]
    finally:
        stop(keeper)


def test_a_cgroup_that_is_removed_disappears_from_the_next_scrape(exporter, make_cgroup):
    cgroup = make_cgroup("gone")
    process = start_in(cgroup, SLEEP_FOREVER)
    exporter.register(process.pid)
    assert cgroup.path in ids_in(exporter.scrape())
    stop(process)
    cgroup.remove()
    assert cgroup.path not in ids_in(exporter.scrape())
    assert not exporter.stats.served_recently()  # forgotten, not retried until it expires
