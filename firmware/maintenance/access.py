"""Who the agent runs as on the controller, and what it may read and write.

This module runs ON THE CONTROLLER, as root, with the standard library only (like :mod:`slots`, which the tool
sends with it). Commissioning and every flash call :func:`secure`, so a controller commissioned by an older
version (agent run as root, configuration 0600 root, database owned by root) is migrated by the next flash.

The policy (docs/technician-guide.md, "Privileges")::

    user evse-agent, group evse-agent, also in dialout (the serial ports); no login, home = its state dir
    <root>/etc/evse-agent/                      root:evse-agent  0750
    <root>/etc/evse-agent/agent.toml            root:evse-agent  0640   the CSMS password: readable by the agent,
    <root>/etc/evse-agent/* (keys, certificates) root:evse-agent 0640   not writable by it
    <root>/etc/evse-agent/hardware-revision     root:root        0644
    <state dir> (storage.dir) and all in it     evse-agent       0700 dirs, 0600 files (database, the charge
                                                                        point's private key once it makes one)
    <root>/opt/evse-agent/ (slots, state.json)  root:root        not writable by anyone else: the agent's own
                                                                        code is read-only to it

The repair walks trees the agent could have written to (its state dir) as root, so it never follows a symbolic
link, changes files through descriptors opened with ``O_NOFOLLOW``, and leaves alone (and reports) what is not a
plain file or directory, or a file with other hard links.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

AGENT_USER = "evse-agent"
SERIAL_GROUP = "dialout"  # the group udev gives serial ports on Debian (ttyS*, ttyUSB*, ttyACM*, ttyAMA*)
DEFAULT_STATE_DIR = "/var/lib/evse-agent"  # firmware/config.py's default storage.dir
ETC = "etc/evse-agent"
CONFIG = "etc/evse-agent/agent.toml"
REVISION = "etc/evse-agent/hardware-revision"
CODE = "opt/evse-agent"
#: Directories a state dir may not be (nor be inside of, for the first group): chowning them to the agent would
#: hand it the system.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/dev", "/proc", "/sys",
                "/run", "/opt/evse-agent")
SYSTEM_DIRS = ("/var/lib", "/var/log", "/var/cache", "/var/tmp", "/var/spool", "/var/mail", "/var/backups",
               "/var/opt", "/var/local", "/home/root")


class AccessError(Exception):
    """The policy cannot be applied; the message says what to fix. ``kind`` as in :class:`slots.SlotError`."""

    def __init__(self, message: str, kind: str = "state") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Account:
    """The agent's user as the controller's ``etc/passwd`` and ``etc/group`` have it (numbers: they are what a
    directory root and this machine share)."""

    user: str
    uid: int
    gid: int
    groups: list[int]  # supplementary groups, e.g. dialout's

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """What :func:`secure` found and did, for the technician."""

    account: Account
    state_dir: str  # as the controller sees it (storage.dir)
    created_user: bool = False
    added_groups: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # "path: root:root 0644 -> root:evse-agent 0640"
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "account": self.account.to_json()}


def _db(root: str, name: str) -> list[list[str]]:
    path = Path(root) / "etc" / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AccessError(f"{path} is missing: is {root} a controller's root filesystem?") from None
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def read_account(root: str) -> Account | None:
    """The agent's account on the controller, or None if it has none yet."""
    try:
        users = {f[0]: f for f in _db(root, "passwd") if len(f) >= 7}
        groups = [f for f in _db(root, "group") if len(f) >= 4]
    except AccessError:
        return None
    entry = users.get(AGENT_USER)
    if entry is None:
        return None
    supplementary = sorted(int(g[2]) for g in groups if AGENT_USER in g[3].split(","))
    return Account(AGENT_USER, int(entry[2]), int(entry[3]), supplementary)


def group_id(root: str, name: str) -> int | None:
    """The id of group ``name`` on the controller (None: it has none, or no etc/group)."""
    try:
        return next((int(g[2]) for g in _db(root, "group") if len(g) >= 4 and g[0] == name), None)
    except AccessError:
        return None


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise AccessError(f"{name} not found on the controller (package passwd): cannot create the agent's user")
    return found


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AccessError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")


def ensure_account(root: str, state_dir: str) -> tuple[Account, bool, list[str]]:
    """Create the system user (no login, home = the state dir) or add it to the serial ports' group; returns the
    account, whether it was created, and the groups added. ``useradd --prefix`` for a root in a directory."""
    prefix = [] if root == "/" else ["--prefix", root]
    _db(root, "passwd"), _db(root, "group")  # both there, or an error that says which is not
    if group_id(root, SERIAL_GROUP) is None:
        raise AccessError(f"the controller has no group {SERIAL_GROUP!r} (etc/group): its serial ports must belong to "
                          "it (udev) for the agent to open them")
    account = read_account(root)
    created, added = False, []
    if account is None:
        _run([_tool("useradd"), *prefix, "--system", "--user-group", "--groups", SERIAL_GROUP, "--home-dir",
              state_dir, "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "evse-agent EV charger agent",
              AGENT_USER])
        created = True
    elif group_id(root, SERIAL_GROUP) not in account.groups:
        _run([_tool("usermod"), *prefix, "--append", "--groups", SERIAL_GROUP, AGENT_USER])
        added.append(SERIAL_GROUP)
    account = read_account(root)
    if account is None:
        raise AccessError(f"user {AGENT_USER} was not created in {Path(root) / 'etc/passwd'}")
    return account, created, added


def configured_state_dir(root: str) -> str:
    """storage.dir of the commissioned configuration (the default before commissioning), as the controller sees
    it. The configuration was validated by the tool when it was written; only this one key is read here."""
    try:
        data = tomllib.loads((Path(root) / CONFIG).read_text())
    except FileNotFoundError:
        return DEFAULT_STATE_DIR
    except (OSError, ValueError) as exc:
        raise AccessError(f"{Path(root) / CONFIG} cannot be read ({exc}): commission the controller again") from None
    storage = data.get("storage")
    value = storage.get("dir", DEFAULT_STATE_DIR) if isinstance(storage, dict) else DEFAULT_STATE_DIR
    return str(value)


def on_root(root: str, path: str) -> Path:
    """``path`` from the configuration, on this machine. A root in a directory that is run where it lies (a test,
    a chroot: see tools/flashing/unit.py) has paths that already start with the root; an SD card's do not."""
    if root == "/" or path == root or path.startswith(root.rstrip("/") + "/"):
        return Path(path)
    return Path(root) / path.lstrip("/")


def check_state_dir(root: str, state_dir: str) -> Path:
    """The state dir is handed to the agent with all it holds: refuse anything that is not a directory of its
    own (``/``, ``/var/lib``, ``/etc/...``, the code, a parent of the configuration)."""
    normal = os.path.normpath(state_dir)
    top = root.rstrip("/")
    on_controller = normal
    if root != "/" and (normal == top or normal.startswith(top + "/")):
        on_controller = normal[len(top):] or "/"
    parts = Path(on_controller).parts
    bad = (not Path(normal).is_absolute() or len(parts) < 3 or on_controller in SYSTEM_DIRS
           or any(on_controller == t or on_controller.startswith(t + "/") for t in SYSTEM_TREES)
           or any(Path(t).is_relative_to(on_controller) for t in ("/" + ETC, "/" + CODE)))
    if bad:
        raise AccessError(f"storage.dir {state_dir!r} cannot be the agent's own directory (it would own everything "
                          f"in it): use a directory of its own such as {DEFAULT_STATE_DIR}")
    return on_root(root, normal)


@dataclass(frozen=True)
class _Rule:
    uid: int
    gid: int
    dir_mode: int
    file_mode: int


def _apply(report: Report, shown: str, fd: int, st: os.stat_result, rule: _Rule) -> None:
    mode = rule.dir_mode if stat.S_ISDIR(st.st_mode) else rule.file_mode
    before = f"{st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o}"
    if (st.st_uid, st.st_gid) != (rule.uid, rule.gid):
        os.fchown(fd, rule.uid, rule.gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)
    after = f"{rule.uid}:{rule.gid} {mode:04o}"
    if before != after:
        report.repaired.append(f"{shown}: {before} -> {after}")


def _fix_entry(report: Report, shown: str, name: str, dir_fd: int | None, rule: _Rule) -> None:
    """One file or directory, through a descriptor that cannot be a symbolic link's target."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        report.warnings.append(f"{shown}: left alone ({why})")
        return
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            report.warnings.append(f"{shown}: left alone (not a file or directory)")
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and (st.st_uid, st.st_gid) != (rule.uid, rule.gid):
            report.warnings.append(f"{shown}: left alone (a file with {st.st_nlink} hard links)")
        else:
            _apply(report, shown, fd, st, rule)
    finally:
        os.close(fd)


def _fix_tree(report: Report, top: Path, rule: _Rule, special: dict[str, _Rule] | None = None) -> None:
    """``top`` and everything below it, never following a symbolic link (``os.fwalk``: directory descriptors)."""
    special = special or {}
    _fix_entry(report, str(top), str(top), None, rule)
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(top):
        for name in [*dirnames, *filenames]:
            shown = f"{dirpath}/{name}"
            _fix_entry(report, shown, name, dir_fd, special.get(shown, rule))


def _code_modes(report: Report, top: Path) -> None:
    """The code and the slot bookkeeping: root's, readable by all, writable by nobody else (modes kept otherwise)."""
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(top):
        for name in ([".", *dirnames, *filenames] if dirpath == str(top) else [*dirnames, *filenames]):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                continue  # "current" -> slots/a
            want = (stat.S_IMODE(st.st_mode) & ~0o022) | (0o555 if stat.S_ISDIR(st.st_mode) else 0o444)
            shown = dirpath if name == "." else f"{dirpath}/{name}"
            if (st.st_uid, st.st_gid) != (0, 0):
                os.chown(name, 0, 0, dir_fd=dir_fd, follow_symlinks=False)
                report.repaired.append(f"{shown}: {st.st_uid}:{st.st_gid} -> 0:0")
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(name, want, dir_fd=dir_fd)
                report.repaired.append(f"{shown}: {stat.S_IMODE(st.st_mode):04o} -> {want:04o}")


def secure(root: str) -> dict[str, Any]:
    """Create the agent's user if needed and set every mode of the policy above; what was changed is listed."""
    state_dir = configured_state_dir(root)
    state = check_state_dir(root, state_dir)
    account, created, added = ensure_account(root, state_dir)
    report = Report(account, state_dir, created, added)
    members = {m for g in _db(root, "group") if len(g) >= 4 and int(g[2]) == account.gid for m in g[3].split(",")}
    members |= {u[0] for u in _db(root, "passwd") if len(u) >= 7 and int(u[3]) == account.gid}
    others = sorted(members - {AGENT_USER, ""})
    if others:
        report.warnings.append(f"the agent's group has other members ({', '.join(others)}): they can read the "
                               "configuration and its password")

    etc = Path(root) / ETC
    etc.mkdir(parents=True, exist_ok=True)
    secret = _Rule(0, account.gid, 0o750, 0o640)
    _fix_tree(report, etc, secret, {str(Path(root) / REVISION): _Rule(0, 0, 0o755, 0o644)})

    state.parent.mkdir(parents=True, exist_ok=True)
    state.mkdir(mode=0o700, exist_ok=True)
    _fix_tree(report, state, _Rule(account.uid, account.gid, 0o700, 0o600))

    code = Path(root) / CODE
    if code.is_dir():
        _code_modes(report, code)
    return report.to_json()

