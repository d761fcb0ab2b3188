"""A client of a /metrics endpoint: a free port to serve on, a scrape, its samples."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 10) -> str:
    url_host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{url_host}:{port}/metrics", timeout=timeout) as response:
        assert response.status == 200
        return response.read().decode()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset(labels)): value} of a text exposition."""
    result = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def ids_in(exposition: str) -> set[str]:
    return {dict(labels)["id"] for (name, labels), _ in samples(exposition).items()
            if name.startswith("container_") and "id" in dict(labels)}
