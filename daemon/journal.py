"""Log lines the journal understands: a "<N>" syslog priority before each line.

Under systemd, stderr is a stream to journald, which stamps time, unit and pid
itself and reads a leading "<N>" as the line's priority (SyslogLevelPrefix=, on by
default), so `journalctl -u cgroupfs -p warning` shows warnings and errors only.
systemd sets $JOURNAL_STREAM to "DEVICE:INODE" of that stream; the prefix is used
only when stderr is still that stream (a shell redirect or a pipe gets plain lines).
"""

from __future__ import annotations

import logging
import os
import sys

# syslog(3) priorities
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def stderr_is_journal(environ=os.environ, stream=None) -> bool:
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = max((n for n in _PRIORITIES if n <= record.levelno), default=logging.DEBUG)
        text = super().format(record)
        # One journal entry per line: a traceback's lines all carry the record's priority.
        return "\n".join(f"<{_PRIORITIES[level]}>{line}" for line in text.split("\n"))


def formatter(fmt: str, environ=os.environ, stream=None) -> logging.Formatter:
    """`fmt` as given, with priorities when stderr goes to the journal."""
    return JournalFormatter(fmt) if stderr_is_journal(environ, stream) else logging.Formatter(fmt)
