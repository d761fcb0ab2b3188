"""Per-container metric families with cAdvisor's names, types and units.

`container_families` is pure: snapshots in, fresh metric families out, so a
container that is gone is simply absent from the next scrape.  The table
`CONTAINER_METRICS` is the one place that lists what is exported; cAdvisor's
help texts and conventions are kept so its dashboards and alerts work unchanged:
- container_spec_memory_limit_bytes is 0 when the cgroup is unlimited;
- the CFS metrics and container_spec_cpu_quota exist only when a quota is set;
- container_cpu_usage_seconds_total carries cpu="total".
Deviation: limits are the effective ones, the tightest of the cgroup and its
ancestors (what the kernel enforces), where cAdvisor reads the cgroup's own file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cgroupfs_daemon.container_snapshot import ContainerSnapshot

BASE_LABELS = ("id", "name", "image")
INFO_METRIC = "cgroupfs_container_info"
_USEC_PER_S = 1e6

# A metric's values for one container: (extra label values, value) pairs.
Values = Callable[[ContainerSnapshot], Iterable[tuple[tuple[str, ...], float]]]


def _memory(value: Callable) -> Values:
    return lambda s: [((), value(s.memory))] if s.memory is not None else []


def _cpu(value: Callable, quota_only: bool = False) -> Values:
    def values(s: ContainerSnapshot):
        if s.cpu is None or (quota_only and s.cpu.quota_usec is None):
            return []
        return [((), value(s.cpu))]
    return values


def _io(value: Callable) -> Values:
    return lambda s: [((d.device,), value(d)) for d in s.io] if s.io is not None else []


def _pressure(resource: str, kind: str) -> Values:
    def values(s: ContainerSnapshot):
        stats = s.pressure.get(resource)
        total = None if stats is None else getattr(stats, f"{kind}_total_usec")
        return [] if total is None else [((), total / _USEC_PER_S)]
    return values


def working_set_bytes(memory) -> int:
    """usage - inactive_file, floored at 0 (cAdvisor's working set)."""
    return max(0, memory.usage_bytes - memory.inactive_file_bytes)


def spec_memory_limit_bytes(memory) -> int:
    """The effective limit; 0 means unlimited, as cAdvisor reports it."""
    return memory.limit_bytes or 0


# (name, type, help, extra label names, values)
CONTAINER_METRICS: tuple[tuple[str, str, str, tuple[str, ...], Values], ...] = (
    ("container_memory_usage_bytes", "gauge",
     "Current memory usage in bytes, including all memory regardless of when it was accessed", (),
     _memory(lambda m: m.usage_bytes)),
    ("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", (),
     _memory(working_set_bytes)),
    ("container_memory_rss", "gauge", "Size of RSS in bytes.", (), _memory(lambda m: m.anon_bytes)),
    ("container_memory_cache", "gauge", "Number of bytes of page cache memory.", (),
     _memory(lambda m: m.file_bytes)),
    ("container_memory_mapped_file", "gauge", "Size of memory mapped files in bytes.", (),
     _memory(lambda m: m.mapped_bytes)),
    ("container_memory_swap", "gauge", "Container swap usage in bytes.", (),
     _memory(lambda m: m.swap_usage_bytes or 0)),
    ("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container (0: unlimited).", (),
     _memory(spec_memory_limit_bytes)),
    # memory.stat's page faults (v1 total_pgfault/total_pgmajfault): the cgroup's and its
    # descendants', cAdvisor's scope="hierarchy"; the same counters as /proc/vmstat's.
    ("container_memory_failures_total", "counter", "Cumulative count of memory allocation failures.",
     ("failure_type", "scope"),
     lambda s: [((name, "hierarchy"), value) for name, value in s.memory.vm_events
                if name in ("pgfault", "pgmajfault")] if s.memory is not None else []),
    ("container_oom_events_total", "counter", "Count of out of memory events observed for the container", (),
     lambda s: [((), s.memory.oom_kill_count)] if s.memory and s.memory.oom_kill_count is not None else []),
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.", ("cpu",),
     lambda s: [(("total",), s.cpu.usage_usec / _USEC_PER_S)] if s.cpu is not None else []),
    ("container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds.", (),
     _cpu(lambda c: c.user_usec / _USEC_PER_S)),
    ("container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds.", (),
     _cpu(lambda c: c.system_usec / _USEC_PER_S)),
    ("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.", (),
     _cpu(lambda c: c.nr_periods, quota_only=True)),
    ("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.", (),
     _cpu(lambda c: c.nr_throttled, quota_only=True)),
    ("container_cpu_cfs_throttled_seconds_total", "counter",
     "Total time duration the container has been throttled.", (),
     _cpu(lambda c: c.throttled_usec / _USEC_PER_S, quota_only=True)),
    ("container_spec_cpu_quota", "gauge", "CPU quota of the container.", (),
     _cpu(lambda c: c.quota_usec, quota_only=True)),
    ("container_spec_cpu_period", "gauge", "CPU period of the container.", (), _cpu(lambda c: c.period_usec)),
    ("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read", ("device",),
     _io(lambda d: d.read_bytes)),
    ("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written", ("device",),
     _io(lambda d: d.write_bytes)),
    ("container_fs_reads_total", "counter", "Cumulative count of reads completed", ("device",),
     _io(lambda d: d.read_ios)),
    ("container_fs_writes_total", "counter", "Cumulative count of writes completed", ("device",),
     _io(lambda d: d.write_ios)),
    ("container_processes", "gauge", "Number of processes running inside the container.", (),
     lambda s: [((), s.processes)]),
    ("container_threads", "gauge", "Number of threads running inside the container", (),
     lambda s: [((), s.threads)]),
    ("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds.", (),
     lambda s: [((), s.start_time_s)] if s.start_time_s is not None else []),
    ("container_pressure_cpu_stalled_seconds_total", "counter",
     "Total time duration no tasks in the container could make progress due to CPU congestion.", (),
     _pressure("cpu", "full")),
    ("container_pressure_cpu_waiting_seconds_total", "counter",
     "Total time duration tasks in the container have waited due to CPU congestion.", (),
     _pressure("cpu", "some")),
    ("container_pressure_memory_stalled_seconds_total", "counter",
     "Total time duration no tasks in the container could make progress due to memory congestion.", (),
     _pressure("memory", "full")),
    ("container_pressure_memory_waiting_seconds_total", "counter",
     "Total time duration tasks in the container have waited due to memory congestion.", (),
     _pressure("memory", "some")),
    ("container_pressure_io_stalled_seconds_total", "counter",
     "Total time duration no tasks in the container could make progress due to IO congestion.", (),
     _pressure("io", "full")),
    ("container_pressure_io_waiting_seconds_total", "counter",
     "Total time duration tasks in the container have waited due to IO congestion.", (),
     _pressure("io", "some")),
)


def base_label_values(snapshot: ContainerSnapshot) -> tuple[str, str, str]:
    container = snapshot.target.container
    if container is None:
        return (snapshot.target.id, "", "")
    return (snapshot.target.id, container.name.lstrip("/"), container.image)


def container_families(snapshots: list[ContainerSnapshot]) -> list[Metric]:
    """One family per table row that has at least one sample, plus the info family."""
    bases = [base_label_values(s) for s in snapshots]
    families: list[Metric] = []
    for name, kind, help_text, extra_labels, values in CONTAINER_METRICS:
        family_class = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_class(name, help_text, labels=BASE_LABELS + extra_labels)
        for snapshot, base in zip(snapshots, bases):
            for extra_values, value in values(snapshot):
                family.add_metric(base + extra_values, value)
        if family.samples:
            families.append(family)
    info = info_family(snapshots, bases)
    if info.samples:
        families.append(info)
    return families


_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def docker_label_name(key: str) -> str:
    """cAdvisor's spelling of a Docker label as a Prometheus label name."""
    return "container_label_" + _INVALID_LABEL_CHARS.sub("_", key)


def info_family(snapshots: list[ContainerSnapshot], bases: list[tuple[str, str, str]]) -> Metric:
    """Docker containers' labels, on one series each (never on the resource metrics,
    where they would multiply the series and change when a label does)."""
    family = Metric(INFO_METRIC, "Docker container identity and labels; value is always 1.", "gauge")
    for snapshot, (identity, name, image) in zip(snapshots, bases):
        container = snapshot.target.container
        if container is None:
            continue
        labels = {"id": identity, "name": name, "image": image, "container_id": container.id}
        for key in sorted(container.labels):
            # Two Docker labels may sanitise to one name: the first (sorted) wins.
            labels.setdefault(docker_label_name(key), container.labels[key])
        family.add_sample(INFO_METRIC, labels, 1)
    return family
