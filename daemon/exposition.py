"""The Prometheus text format (0.0.4) for a registry, written lean.

prometheus_client's generate_latest validates and escapes every label name of
every sample; with 100 containers x 15 series that is a fifth of a scrape's CPU.
This writer trusts the names (the collectors use fixed, valid ones), escapes only
label values, and formats a label set once per sample with no sorting.  The output
parses the same (tests/metrics/test_exposition.py compares both, and promtool
lints it).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1 << 53:
        return str(int(value))
    return repr(float(value))


def encode(registry: CollectorRegistry) -> bytes:
    output: list[str] = []
    append = output.append
    for family in registry.collect():
        name, kind = family.name, family.type
        # OpenMetrics names a counter family without _total; the text format with it.
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        elif kind in ("stateset", "unknown"):
            kind = "gauge" if kind == "stateset" else "untyped"
        elif kind == "gaugehistogram":
            kind = "histogram"
        append(f"# HELP {name} {_escape_help(family.documentation)}\n# TYPE {name} {kind}\n")
        for sample in family.samples:
            if sample.name.endswith(("_created", "_gsum", "_gcount")) and sample.name != name:
                continue  # OpenMetrics-only series; no collector here sets them
            if sample.labels:
                labels = ",".join(f'{key}="{_escape_value(value)}"' for key, value in sample.labels.items())
                append(f"{sample.name}{{{labels}}} {format_value(sample.value)}\n")
            else:
                append(f"{sample.name} {format_value(sample.value)}\n")
    return "".join(output).encode("utf-8")
