"""Log lines carry journald priorities only when stderr is the journal's stream."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from cgroupfs_daemon.journal import formatter, stderr_is_journal
from tests.service.harness import REPO

pytestmark = pytest.mark.unit

SCRIPT = """
import logging, sys
from cgroupfs_daemon.journal import formatter
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(formatter("%(levelname)s %(name)s: %(message)s"))
log = logging.getLogger("cgroupfs")
log.addHandler(handler)
log.setLevel(logging.DEBUG)
log.debug("cache miss")
log.info("serving")
log.warning("slow")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


def run(tmp_path, journal: bool) -> list[str]:
    path = tmp_path / "stderr"
    with open(path, "wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("JOURNAL_STREAM", None)
        if journal:  # as systemd sets it for StandardError=journal
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, env=env, check=True, cwd=REPO)
    return path.read_text().splitlines()


def test_priorities_for_the_journal(tmp_path):
    lines = run(tmp_path, journal=True)
    assert lines[:4] == ["<7>DEBUG cgroupfs: cache miss", "<6>INFO cgroupfs: serving", "<4>WARNING cgroupfs: slow",
                         "<3>ERROR cgroupfs: failed"]
    assert lines[4] == "<3>Traceback (most recent call last):" and all(line.startswith("<3>") for line in lines[4:])


def test_plain_lines_elsewhere(tmp_path):
    assert run(tmp_path, journal=False)[:2] == ["DEBUG cgroupfs: cache miss", "INFO cgroupfs: serving"]
    # A JOURNAL_STREAM inherited by a process whose stderr was redirected does not count.
    with open(tmp_path / "other", "wb") as other:
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, other)
    assert isinstance(formatter("%(message)s", {}), logging.Formatter)
