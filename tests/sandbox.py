"""The agent's systemd sandbox, as far as it can be applied without systemd: to run the agent as it runs on a
controller, in tests where systemd is not PID 1.

A :class:`Sandbox` is read from the ``[Service]`` section of the unit tools/flashing/unit.py writes, so what the
tests run is what the unit says. It is applied in the child between fork and exec, as systemd does it:

- ``User=``, ``Group=``: numeric stand-ins the test chooses (this machine has no ``evse-agent``);
  ``SupplementaryGroups=`` by name (``dialout``); every capability is dropped from the bounding set first
  (``CapabilityBoundingSet=`` empty), and the switch away from root clears the rest;
- ``UMask=``, ``NoNewPrivileges=``;
- the directives systemd implements with seccomp, with the same rules as systemd 252 (Debian 12), each its own
  filter as systemd stacks them, built with libseccomp: ``SystemCallFilter=`` (an allow list; the groups expanded
  by ``systemd-analyze syscall-filter``, systemd's own tables; ``~`` entries removed), ``SystemCallErrorNumber=``,
  ``SystemCallArchitectures=native``, ``RestrictAddressFamilies=`` (``socket()`` of another family:
  EAFNOSUPPORT), ``MemoryDenyWriteExecute=`` (writable and executable mappings, ``mprotect(PROT_EXEC)``: EPERM),
  ``RestrictNamespaces=yes`` (``unshare``/``setns``/``clone`` with a namespace flag: EPERM; ``clone3``: ENOSYS).

The rest needs systemd (mount namespaces, the cgroup device ACL, ...): :attr:`Sandbox.not_applied` names it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import grp
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# libseccomp (seccomp.h)
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_LT, SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 2, 4, 6, 7
# prctl(2)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 24, 38, 22, 2
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
CLONE_NEW = {"cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000, "pid": 0x20000000,
             "user": 0x10000000, "uts": 0x04000000}
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
AF_MAX = 46

#: What a Sandbox applies; any other [Service] directive of the unit is listed in ``not_applied``.
APPLIED = ("User", "Group", "SupplementaryGroups", "UMask", "NoNewPrivileges", "CapabilityBoundingSet",
           "AmbientCapabilities", "SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures",
           "RestrictAddressFamilies", "MemoryDenyWriteExecute", "RestrictNamespaces")
#: Not sandbox directives: how the service runs (the test's harness does these its own way).
SERVICE = ("Type", "NotifyAccess", "WorkingDirectory", "Environment", "ExecStart", "Restart", "RestartSec",
           "RestartPreventExitStatus", "WatchdogSec", "TimeoutStopSec", "RuntimeDirectory", "RuntimeDirectoryMode",
           "RuntimeDirectoryPreserve", "ReadWritePaths")


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


def service_directives(unit_text: str) -> dict[str, list[str]]:
    """``[Service]`` assignments in order, per key (an empty assignment resets the key, as systemd reads it)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out[key] = [*out.get(key, []), value] if value else []
    return out


def syscall_groups() -> dict[str, list[str]]:
    """systemd's system call groups (``systemd-analyze syscall-filter``), entries as listed (nested ``@``)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= _expand(groups[name], groups) if name.startswith("@") else {name}
    return out


class _Seccomp:
    """One filter, built here with libseccomp and exported as BPF: the child only loads it (one prctl)."""

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    def __init__(self, default_action: int) -> None:
        self.ctx = self.lib.seccomp_init(default_action)

    def rule(self, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> bool:
        number = self.lib.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:  # not a system call of this architecture
            return False
        args = (_ArgCmp * max(len(cmps), 1))(*[_ArgCmp(*c) for c in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, number, len(cmps), args)
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for {syscall}: {os.strerror(-rc)}")
        return True

    def export(self) -> bytes:
        r, w = os.pipe()
        try:
            rc = self.lib.seccomp_export_bpf(self.ctx, w)
            os.close(w)
            if rc < 0:
                raise OSError(-rc, "seccomp_export_bpf")
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
        finally:
            os.close(r)
            self.lib.seccomp_release(self.ctx)
        return data


@dataclass
class Sandbox:
    """The agent's sandbox for a child process: ``preexec`` applies it (pass it to subprocess as preexec_fn)."""

    uid: int
    gid: int
    groups: list[int]
    umask: int
    no_new_privileges: bool
    filters: list[bytes] = field(repr=False)  # BPF programs, loaded in this order
    applied: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)

    @classmethod
    def from_unit(cls, unit_text: str, *, uid: int, gid: int) -> Sandbox:
        d = service_directives(unit_text)
        if d.get("CapabilityBoundingSet", [""]) not in ([], [""]) or d.get("AmbientCapabilities", []):
            raise ValueError("only an empty capability set is supported here")
        groups = [grp.getgrnam(name).gr_gid for v in d.get("SupplementaryGroups", []) for name in v.split()]
        filters = []
        if d.get("SystemCallFilter"):
            filters.append(_syscall_filter(d["SystemCallFilter"], d.get("SystemCallErrorNumber", [])))
        if d.get("RestrictAddressFamilies"):
            filters.append(_family_filter(" ".join(d["RestrictAddressFamilies"]).split()))
        if d.get("MemoryDenyWriteExecute") == ["yes"]:
            filters.append(_mdwe_filter())
        if d.get("RestrictNamespaces") == ["yes"]:
            filters.append(_namespace_filter())
        if d.get("SystemCallArchitectures", ["native"]) != ["native"]:
            raise ValueError("only SystemCallArchitectures=native is supported here")
        applied = [k for k in d if k in APPLIED]
        not_applied = [k for k in d if k not in APPLIED and k not in SERVICE]
        return cls(uid, gid, groups, int(d.get("UMask", ["0022"])[-1], 8), d.get("NoNewPrivileges") == ["yes"],
                   filters, applied, not_applied)

    def preexec(self) -> Callable[[], None]:
        """The function the child runs between fork and exec (everything it needs is prepared here)."""
        libc = ctypes.CDLL(None, use_errno=True)
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        buffers = [ctypes.create_string_buffer(f, len(f)) for f in self.filters]
        progs = [_SockFprog(len(f) // 8, ctypes.cast(b, ctypes.c_void_p)) for f, b in zip(self.filters, buffers,
                                                                                          strict=True)]

        def apply() -> None:
            for cap in range(last_cap + 1):
                if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
            os.setgroups(self.groups)
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)
            os.umask(self.umask)
            if self.no_new_privileges or progs:  # seccomp without CAP_SYS_ADMIN needs it too
                if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
            for prog in progs:
                if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")

        apply.programs = buffers  # type: ignore[attr-defined]  # alive as long as the function
        return apply


def _syscall_filter(values: list[str], error_number: list[str]) -> bytes:
    """SystemCallFilter=: the first assignment an allow list (systemd adds @default), ``~`` ones removed from it."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for i, value in enumerate(values):
        negate = value.startswith("~")
        names = value.lstrip("~").split()
        if i == 0 and negate:
            raise ValueError("only an allow list (SystemCallFilter=@...) is supported here")
        if negate:
            allowed -= _expand(names, groups)
        else:
            allowed |= _expand(["@default", *names], groups)
    default = _errno_action(getattr(errno, error_number[-1])) if error_number else SCMP_ACT_KILL_PROCESS
    f = _Seccomp(default)
    for name in sorted(allowed):
        f.rule(SCMP_ACT_ALLOW, name)
    return f.export()


def _family_filter(names: list[str]) -> bytes:
    """RestrictAddressFamilies= (an allow list): socket() of any other family fails with EAFNOSUPPORT."""
    allowed = sorted(FAMILIES[n] for n in names)
    f = _Seccomp(SCMP_ACT_ALLOW)
    deny = _errno_action(errno.EAFNOSUPPORT)
    f.rule(deny, "socket", (0, SCMP_CMP_LT, allowed[0], 0))
    f.rule(deny, "socket", (0, SCMP_CMP_GT, allowed[-1], 0))
    for family in range(allowed[0] + 1, allowed[-1]):
        if family not in allowed:
            f.rule(deny, "socket", (0, SCMP_CMP_EQ, family, 0))
    return f.export()


def _mdwe_filter() -> bytes:
    """MemoryDenyWriteExecute=yes as systemd 252 filters it."""
    f = _Seccomp(SCMP_ACT_ALLOW)
    deny = _errno_action(errno.EPERM)
    for name in ("mmap", "mmap2"):
        f.rule(deny, name, (2, SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
    for name in ("mprotect", "pkey_mprotect"):
        f.rule(deny, name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    f.rule(deny, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    return f.export()


def _namespace_filter() -> bytes:
    """RestrictNamespaces=yes as systemd 252 filters it (clone3's flags cannot be inspected: ENOSYS, and the C
    library falls back to clone)."""
    f = _Seccomp(SCMP_ACT_ALLOW)
    deny = _errno_action(errno.EPERM)
    f.rule(deny, "setns")
    f.rule(_errno_action(errno.ENOSYS), "clone3")
    for flag in CLONE_NEW.values():
        f.rule(deny, "unshare", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        f.rule(deny, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
    return f.export()
