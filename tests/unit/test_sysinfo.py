"""sysinfo(2) for containers, the pure parts: the struct from the /proc texts, the seccomp
profile edit, the runtime's support, the listeners' names and the runtimes' messages."""

from __future__ import annotations

import ctypes
import json
import os

import pytest

from cgroupfs.errors import ParseError
from cgroupfs.sysinfo import LAYOUT, SI_LOAD_SHIFT, Sysinfo, for_reader, from_files
from cgroupfs_daemon import runtime_seccomp
from cgroupfs_daemon.runtime_seccomp import NotIntercepted, intercepted, runtime_notifies
from cgroupfs_daemon.sysinfo_responder import container_of, listener_name, parse_state

pytestmark = pytest.mark.unit

MEMINFO = (b"MemTotal:          65536 kB\nMemFree:           60000 kB\nMemAvailable:      61000 kB\n"
           b"Buffers:              12 kB\nCached:              900 kB\nSwapCached:            0 kB\n"
           b"Shmem:                34 kB\nSwapTotal:         32768 kB\nSwapFree:          30000 kB\n")
UPTIME = b"12.01 3.50\n"
LOADAVG = b"0.50 1.25 0.00 2/17 4242\n"
SOCKET = "/run/cgroupfs/sysinfo.sock"


def test_the_struct_says_what_the_files_say():
    info = from_files(MEMINFO, UPTIME, LOADAVG)
    assert info == Sysinfo(uptime=13, loads=(32768, 81920, 0), totalram=65536 * 1024, freeram=60000 * 1024,
                           sharedram=34 * 1024, bufferram=12 * 1024, totalswap=32768 * 1024,
                           freeswap=30000 * 1024, procs=17)
    assert info.mem_unit == 1 and info.totalhigh == info.freehigh == 0
    # The kernel rounds a fraction of a second up; a whole second stays.
    assert from_files(MEMINFO, b"12.00 0.00\n", LOADAVG).uptime == 12


@pytest.mark.parametrize("meminfo, uptime, loadavg", [
    (b"MemFree: 1 kB\n", UPTIME, LOADAVG),          # no MemTotal
    (MEMINFO, b"", LOADAVG),
    (MEMINFO, b"nan 0\n", LOADAVG),
    (MEMINFO, UPTIME, b"0.1 0.2\n"),
    (MEMINFO, UPTIME, b"0.1 0.2 0.3 17 4242\n"),      # no running/total
])
def test_malformed_texts_are_a_parse_error(meminfo, uptime, loadavg):
    with pytest.raises(ParseError):
        from_files(meminfo, uptime, loadavg)


def test_packed_as_the_kernel_lays_it_out():
    info = from_files(MEMINFO, UPTIME, LOADAVG)
    packed = info.pack()
    assert len(packed) == LAYOUT.size == 112
    assert Sysinfo.unpack(packed) == info
    assert Sysinfo.unpack(Sysinfo(1, (0, 0, 0), 1, 1, 0, 0, 0, 0, procs=70000).pack()).procs == 0xFFFF


def test_the_layout_reads_this_kernels_own_answer():
    """The real sysinfo(2) into a buffer of LAYOUT's size, read back with LAYOUT."""
    buffer = ctypes.create_string_buffer(LAYOUT.size)
    assert ctypes.CDLL(None, use_errno=True).sysinfo(buffer) == 0
    kernel = Sysinfo.unpack(buffer.raw)
    with open("/proc/meminfo", "rb") as f:
        totals = {line.split(b":")[0]: int(line.split()[1]) for line in f if line.split()[1].isdigit()}
    with open("/proc/uptime", "rb") as f:
        uptime = float(f.read().split()[0])
    assert kernel.mem_unit == 1
    assert kernel.totalram == totals[b"MemTotal"] * 1024
    assert kernel.totalswap == totals[b"SwapTotal"] * 1024
    assert abs(kernel.uptime - uptime) <= 2
    assert kernel.procs > 0


def test_text_lists_every_field():
    text = from_files(MEMINFO, UPTIME, LOADAVG).text()
    assert "totalram 67108864\n" in text and "mem_unit 1\n" in text
    assert f"loads 32768 (0.50) {5 << SI_LOAD_SHIFT >> 2} (1.25) 0 (0.00)\n" in text


def test_for_reader_asks_the_content_of_each_file_for_that_pid():
    asked = []

    def content(path: str, pid: int) -> bytes:
        asked.append((path, pid))
        return {"proc/meminfo": MEMINFO, "proc/uptime": UPTIME, "proc/loadavg": LOADAVG}[path]

    assert for_reader(content, 7).totalram == 65536 * 1024
    assert sorted(asked) == [("proc/loadavg", 7), ("proc/meminfo", 7), ("proc/uptime", 7)]


# -- the seccomp profile ---------------------------------------------------------------

def docker_like_profile() -> dict:
    """Docker's default profile's shape: deny by default, sysinfo among the allowed."""
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["read", "sysinfo", "write"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]}


def test_sysinfo_moves_out_of_the_rule_that_allows_it():
    spec = {"ociVersion": "1.0.2", "linux": {"seccomp": docker_like_profile()}}
    original = json.loads(json.dumps(spec))
    result = intercepted(spec, SOCKET)
    assert spec == original  # the caller's spec is not changed
    profile = result["linux"]["seccomp"]
    assert profile["listenerPath"] == SOCKET
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["architectures"][0] == "SCMP_ARCH_X86_64"
    assert profile["syscalls"] == [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        docker_like_profile()["syscalls"][1],
        {"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"},
    ]
    assert intercepted(result, SOCKET) == result  # a second pass (run after create) changes nothing


def test_a_rule_of_sysinfo_alone_is_replaced():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_LOG"}]}
    result = intercepted({"linux": {"seccomp": profile}}, SOCKET)
    assert result["linux"]["seccomp"]["syscalls"] == [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]


def test_an_unconfined_container_gets_a_minimal_profile():
    for spec in ({"linux": {}}, {}):
        profile = intercepted(spec, SOCKET)["linux"]["seccomp"]
        assert profile == {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": SOCKET,
                           "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]}


@pytest.mark.parametrize("profile, why", [
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
     "SCMP_ACT_ERRNO"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_KILL"}]},
     "SCMP_ACT_KILL"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/other-agent.sock"}, "other-agent"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_ALLOW",
                                                        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]}]},
     "arguments"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": ["sysinfo"]}}, "list"),
])
def test_a_profile_that_must_stay_as_it_is(profile, why):
    with pytest.raises(NotIntercepted, match=why):
        intercepted({"linux": {"seccomp": profile}}, SOCKET)


def fake_runtime(tmp_path, name: str, features: str | None, version: str = "") -> str:
    """A runtime that answers `features` (or fails it) and `--version`, counting its runs."""
    path = tmp_path / name
    answer = f"cat <<'EOF'\n{features}\nEOF\nexit 0" if features is not None else "echo unknown command >&2; exit 1"
    path.write_text(f"#!/bin/sh\necho run >> {tmp_path}/{name}.runs\n"
                    f"case $1 in features) {answer} ;; --version) echo '{version}' ;; esac\n")
    path.chmod(0o755)
    return str(path)


def runs(tmp_path, name: str) -> int:
    try:
        return len((tmp_path / f"{name}.runs").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_the_runtime_is_asked_once_whether_it_can_notify(tmp_path):
    cache = str(tmp_path / "features.json")
    notify = json.dumps({"linux": {"seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_NOTIFY"]}}})
    runc = fake_runtime(tmp_path, "runc", notify)
    assert runtime_notifies(runc, cache) and runtime_notifies(runc, cache)
    assert runs(tmp_path, "runc") == 1
    old = fake_runtime(tmp_path, "old-runc", json.dumps({"linux": {"seccomp": {"enabled": True,
                                                                               "actions": ["SCMP_ACT_ALLOW"]}}}))
    assert not runtime_notifies(old, cache)
    # A new binary at the same path (an upgrade) is asked again.
    os.utime(runc, ns=(1, 1))
    assert runtime_notifies(runc, cache) and runs(tmp_path, "runc") == 2
    # The upgraded runc's entry replaced its old one: one per binary.
    assert len(json.loads((tmp_path / "features.json").read_text())) == 2


def test_crun_without_features_is_judged_by_its_version(tmp_path):
    cache = str(tmp_path / "features.json")
    assert runtime_notifies(fake_runtime(tmp_path, "crun", None, "crun version 1.8.1 +SECCOMP +CAP"), cache)
    assert not runtime_notifies(fake_runtime(tmp_path, "crun-old", None, "crun version 0.18 +SECCOMP"), cache)
    assert not runtime_notifies(fake_runtime(tmp_path, "crun-noseccomp", None, "crun version 1.8.1 +CAP"), cache)
    assert not runtime_notifies(fake_runtime(tmp_path, "other", None, "runc version 1.0.0"), cache)
    assert not runtime_notifies(str(tmp_path / "missing"), cache)
    assert not runtime_notifies("no-such-runtime-anywhere", cache)


def test_a_socket_nobody_listens_on_does_not_answer(tmp_path):
    assert not runtime_seccomp.socket_answers(str(tmp_path / "absent.sock"))


# -- the daemon's bookkeeping ----------------------------------------------------------------

def test_listener_names_are_unique_safe_and_name_their_container():
    name = listener_name("ab12", 7, "my:container/with spaces")
    assert name == "sysinfo-listener-ab12.7-my_container_with_spaces"
    assert ":" not in name and container_of(name) == "my_container_with_spaces"
    assert len(listener_name("ab12", 1, "x" * 300)) < 255


def test_the_runtimes_message():
    message = {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 4242, "metadata": "",
               "state": {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/b"}}
    assert parse_state(json.dumps(message).encode()) == ("c1", 4242, ["seccompFd"])
    assert parse_state(b"not json") == ("", 0, [])
    assert parse_state(b'{"state": [], "pid": "x", "fds": {}}') == ("", 0, [])
