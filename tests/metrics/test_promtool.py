"""promtool (Debian package prometheus) accepts the expositions of the documented v2 tree,
as prometheus_client writes them and as our lean writer does (the values: test_exposition.py)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from cgroupfs_daemon.exposition import encode
from tests.metrics.support import promtool_check
from tests.metrics.test_exposition import v2_exporter, v2_stats


@pytest.mark.parametrize("write", [generate_latest, encode], ids=["prometheus_client", "lean-writer"])
def test_promtool_accepts_the_exposition(write):
    result = promtool_check(write(v2_exporter(v2_stats())).decode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
