"""Run a command under the restrictions systemd/cgroupfs.service declares, the way systemd applies them.

The test host has no systemd running, so the unit's sandboxing is applied here by
the same kernel mechanisms systemd uses, read from the unit file itself (so the
tests follow the unit when it changes):

- CapabilityBoundingSet=: every other capability dropped from the bounding set
  before execve; for a root service that leaves exactly the set (systemd does the same).
- NoNewPrivileges=: prctl(PR_SET_NO_NEW_PRIVS).
- SystemCallFilter= (allow-list) with SystemCallErrorNumber=: one seccomp filter
  allowing the groups as `systemd-analyze syscall-filter` expands them, the rest
  failing with that errno.
- RestrictNamespaces=: seccomp rules on unshare/clone/setns per namespace flag, and
  setns(fd, 0) refused, as systemd's seccomp_restrict_namespaces() builds them;
  clone3 fails with ENOSYS (its flags cannot be inspected).
- RestrictAddressFamilies=: socket() with another family fails with EAFNOSUPPORT.
- MemoryDenyWriteExecute=: mmap(W|X), mprotect/pkey_mprotect(X), shmat(SHM_EXEC) refused.
- DevicePolicy=closed/DeviceAllow=: a cgroup v1 devices cgroup (when the host has one).
- OOMScoreAdjust=, Nice=.

Not emulated (they cannot affect what the daemon does): LockPersonality=,
RestrictRealtime=, RestrictSUIDSGID=, SystemCallArchitectures=.

    python -m tests.service.unit_sandbox UNIT [--without CAP_X] [--with OPTION=VALUE]
                                          [--devices-cgroup DIR] -- COMMAND ARGS...
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
NAMESPACE_FLAGS = {
    "cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000,
    "pid": 0x20000000, "user": 0x10000000, "uts": 0x04000000,
}
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
# systemd's "closed" policy: the standard pseudo-devices (char major:minor).
CLOSED_POLICY_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
                         "c 136:* rwm")


def SCMP_ACT_ERRNO(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class ArgCompare(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
_seccomp.seccomp_init.restype = ctypes.c_void_p
_seccomp.seccomp_init.argtypes = (ctypes.c_uint32,)
_seccomp.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
_seccomp.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                            ctypes.POINTER(ArgCompare))
_seccomp.seccomp_load.argtypes = (ctypes.c_void_p,)
_seccomp.seccomp_release.argtypes = (ctypes.c_void_p,)
_libc = ctypes.CDLL(None, use_errno=True)


def unit_settings(path: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#;[" and "=" in line:
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def expand_syscall_groups(names: list[str]) -> set[str]:
    """Syscall names for groups and names, via `systemd-analyze syscall-filter` (recursively)."""
    result: set[str] = set()
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if not name.startswith("@"):
            result.add(name)
            continue
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                                 check=True).stdout
        for line in listing.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                pending.append(entry)
    return result


class Filter:
    def __init__(self, default_action: int):
        self.context = _seccomp.seccomp_init(default_action)
        if not self.context:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, syscall: str, *comparisons: tuple[int, int, int, int]) -> None:
        number = _seccomp.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:
            return  # not a syscall on this architecture
        array = (ArgCompare * max(1, len(comparisons)))(*[ArgCompare(*c) for c in comparisons])
        result = _seccomp.seccomp_rule_add_array(self.context, action, number, len(comparisons), array)
        if result < 0:
            raise OSError(-result, f"seccomp_rule_add({syscall}): {os.strerror(-result)}")

    def load(self) -> None:
        result = _seccomp.seccomp_load(self.context)
        if result < 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
        _seccomp.seccomp_release(self.context)


def capability_numbers() -> dict[str, int]:
    """CAP_* name -> number (the kernel ABI: these numbers never change)."""
    names = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
             "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
             "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
             "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
             "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
             "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
             "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
             "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
    return {name: number for number, name in enumerate(names)}


def capability_mask(names: set[str]) -> int:
    numbers = capability_numbers()
    return sum(1 << numbers[name] for name in names)


def apply(settings: dict[str, str], without: set[str], devices_cgroup: str | None) -> None:
    if "OOMScoreAdjust" in settings:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(settings["OOMScoreAdjust"])
        except PermissionError:  # lowering it needs CAP_SYS_RESOURCE, which systemd has and a test bed may not
            print("unit_sandbox: OOMScoreAdjust= not applied (no CAP_SYS_RESOURCE here)", file=sys.stderr)
    if "Nice" in settings:
        os.setpriority(os.PRIO_PROCESS, 0, int(settings["Nice"]))

    if devices_cgroup and settings.get("DevicePolicy") == "closed":
        os.makedirs(devices_cgroup, exist_ok=True)
        with open(os.path.join(devices_cgroup, "devices.deny"), "w") as f:
            f.write("a")
        allowed = list(CLOSED_POLICY_DEVICES)
        for entry in settings.get("DeviceAllow", "").split(",") if settings.get("DeviceAllow") else []:
            path, _, access = entry.strip().partition(" ")
            device = os.stat(path).st_rdev
            allowed.append(f"c {os.major(device)}:{os.minor(device)} {access or 'rwm'}")
        for rule in allowed:
            with open(os.path.join(devices_cgroup, "devices.allow"), "w") as f:
                f.write(rule)
        with open(os.path.join(devices_cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    if "CapabilityBoundingSet" in settings:
        keep = set(settings["CapabilityBoundingSet"].split()) - without
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        kept_numbers = {capability_numbers()[name] for name in keep}
        for number in range(last + 1):
            if number not in kept_numbers and _libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {number}")

    if settings.get("NoNewPrivileges") == "yes":
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")

    filters: list[Filter] = []
    if "SystemCallFilter" in settings:
        value = settings["SystemCallFilter"]
        assert not value.startswith("~"), "only allow-lists are emulated"
        error = getattr(errno, settings.get("SystemCallErrorNumber", "EPERM"))
        allowed_calls = set(expand_syscall_groups(value.split())) | set(expand_syscall_groups(["@default"]))
        allowed_calls |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
        allow_list = Filter(SCMP_ACT_ERRNO(error))
        for name in sorted(allowed_calls):
            allow_list.rule(SCMP_ACT_ALLOW, name)
        filters.append(allow_list)

    if "RestrictNamespaces" in settings:
        retained = sum(NAMESPACE_FLAGS[name] for name in settings["RestrictNamespaces"].split())
        namespaces = Filter(SCMP_ACT_ALLOW)
        namespaces.rule(SCMP_ACT_ERRNO(errno.EPERM), "setns", (1, SCMP_CMP_EQ, 0, 0))
        for flag in NAMESPACE_FLAGS.values():
            if flag & retained:
                continue
            namespaces.rule(SCMP_ACT_ERRNO(errno.EPERM), "unshare", (0, SCMP_CMP_MASKED_EQ, flag, flag))
            namespaces.rule(SCMP_ACT_ERRNO(errno.EPERM), "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
            namespaces.rule(SCMP_ACT_ERRNO(errno.EPERM), "setns", (1, SCMP_CMP_MASKED_EQ, flag, flag))
        namespaces.rule(SCMP_ACT_ERRNO(errno.ENOSYS), "clone3")
        filters.append(namespaces)

    if "RestrictAddressFamilies" in settings:
        import socket

        allowed_families = {int(getattr(socket, name)) for name in settings["RestrictAddressFamilies"].split()}
        families = Filter(SCMP_ACT_ALLOW)
        for family in range(64):
            if family not in allowed_families:
                families.rule(SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, family, 0))
        filters.append(families)

    if settings.get("MemoryDenyWriteExecute") == "yes":
        memory = Filter(SCMP_ACT_ALLOW)
        both = PROT_WRITE | PROT_EXEC
        memory.rule(SCMP_ACT_ERRNO(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, both, both))
        memory.rule(SCMP_ACT_ERRNO(errno.EPERM), "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        memory.rule(SCMP_ACT_ERRNO(errno.EPERM), "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        memory.rule(SCMP_ACT_ERRNO(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        filters.append(memory)

    # The allow-list last: loading the other filters needs prctl/seccomp, which it allows anyway.
    for each in reversed(filters):
        each.load()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("unit")
    parser.add_argument("--without", action="append", default=[], help="a capability to leave out")
    parser.add_argument("--with", dest="extra", action="append", default=[], help="OPTION=VALUE to add/override")
    parser.add_argument("--devices-cgroup")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    settings = unit_settings(args.unit)
    for extra in args.extra:
        key, _, value = extra.partition("=")
        settings[key] = value
    apply(settings, set(args.without), args.devices_cgroup)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
