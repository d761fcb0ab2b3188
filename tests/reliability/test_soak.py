"""The soak's short mode (60 s) and its 1000-cgroup scale phase, as part of `make test`.

benchmarks/soak.py does the work and applies the thresholds; these tests run it as
an operator would and check its figures one by one, so a failure names the figure.
The figures of speed (the slowest read, the median's ratio with 1000 cgroups) are the
benchmark's business: printed here, not asserted, since a busy host stretches them.
The long mode (10 min) is for people: `python -m benchmarks.soak --long`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from testbed.daemon_process import REPO


def run_soak(tmp_path, *args: str, timeout: float) -> dict:
    report_path = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.soak", *args, "--json", str(report_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    print(result.stdout)
    assert report_path.exists(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    report["exit_status"] = result.returncode
    return report


def test_short_soak(hierarchy, tmp_path):
    report = run_soak(tmp_path, "--short", timeout=300)
    soak = report["soak"]
    assert soak["daemon_alive"]
    assert soak["failed_reads"] == 0, soak["failure_examples"]
    assert soak["reads"] > 1_000
    print(f"slowest read {soak['slowest_read_ms']} ms (the benchmark's threshold: < 100 ms)")
    assert soak["rss_growth_mib"] < 10, soak
    assert soak["fds"][1] <= soak["fds"][0]
    assert soak["threads"][1] <= soak["threads"][0]
    assert soak["cgroupfs_mounts"] == [1, 1]
    assert soak["cgroups_churned"] >= 50 and soak["killed_readers"] >= 50
    assert soak["scrape_failures"] == 0


def test_a_thousand_cgroups(hierarchy, tmp_path):
    report = run_soak(tmp_path, "--short", "--no-soak", "--scale", "1000", timeout=600)
    scale = report["scale"]
    assert scale["cgroups"] == 1000 and scale["setup_failures"] == 0
    assert scale["single_us"]["bad"] == 0 and scale["many_us"]["bad"] == 0
    print(f"median read with 1000 cgroups / with one: x{scale['p50_ratio']} (the benchmark's threshold: <= 2)")
    assert 0 < scale["bytes_per_tracked_cgroup"] < 64 * 1024, scale
