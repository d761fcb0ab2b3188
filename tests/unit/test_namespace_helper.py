"""The namespace helper's request format: what the daemon sends, what the helper accepts."""

import pytest

from cgroupfs_daemon.namespace_helper import MAX_JOBS, decode_request, encode_request

FDS = [10, 11, 12, 13]  # reply pipe, namespace, two detached mounts


def test_a_request_reads_back_as_sent():
    message = encode_request([("mount", "/proc/meminfo"), ("heal", "/sys/devices/system/cpu/online")], beneath=False)
    assert decode_request(message, FDS) == (
        [("mount", b"/proc/meminfo"), ("heal", b"/sys/devices/system/cpu/online")], False)


@pytest.mark.parametrize("jobs, fds", [
    ([("mount", "/proc/meminfo")], FDS),                         # an fd more than jobs
    ([("unmount", "/proc/meminfo"), ("mount", "/proc/stat")], FDS),  # not an action
    ([("mount", "proc/meminfo"), ("mount", "/proc/stat")], FDS),     # a relative target
    ([("mount", "/x")] * (MAX_JOBS + 1), list(range(MAX_JOBS + 3))),  # over the bound
])
def test_anything_the_daemon_would_not_send_is_refused(jobs, fds):
    with pytest.raises(ValueError):
        decode_request(encode_request(jobs, beneath=True), fds)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"jobs": 3, "beneath": true}', b'{"jobs": [[1]]}'])
def test_malformed_messages_are_refused(data):
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_request(data, FDS)
