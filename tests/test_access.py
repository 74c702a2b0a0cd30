"""Commissioning's user and file modes (firmware/maintenance/access.py) on a controller root in a directory: the
real ``useradd --prefix`` into its account files, real owners and modes; what the agent could have planted in
its own directory (links) is not followed. Over a real SSH target, and the migration of a controller
commissioned by the previous version: tests/test_flash.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from firmware.maintenance import access
from tests.controller import dialout_gid, make_root

CONFIG = '[charge_point]\nid = "CP"\n[storage]\ndir = "{state}"\n'


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_secure_creates_the_user_sets_every_mode_and_does_not_follow_links(tmp_path: Path) -> None:
    root = make_root(tmp_path / "controller")
    state = root / "var/lib/evse-agent"
    etc = root / "etc/evse-agent"
    etc.mkdir(parents=True)
    (etc / "agent.toml").write_text(CONFIG.format(state=state))
    (etc / "agent.toml").chmod(0o644)  # a technician's copy, readable by all
    (etc / "cp-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")  # the charge point's key, put there by hand
    (etc / "hardware-revision").write_text("rev-c\n")
    (etc / "hardware-revision").chmod(0o600)
    state.mkdir(parents=True)
    (state / "agent.db").write_bytes(b"SQLite format 3\0")  # left by an agent that ran as root
    (state / "sub").mkdir()
    victim = root / "etc/shadow"
    before = owner_mode(victim)
    os.symlink(victim, state / "link-to-shadow")  # what a compromised agent could leave for root to chown
    (root / "etc/motd").write_text("root's\n")
    os.link(root / "etc/motd", state / "hardlink-to-motd")
    code = root / "opt/evse-agent/slots/a/app"
    code.mkdir(parents=True)
    (code / "agent.py").write_text("")
    (code / "agent.py").chmod(0o666)

    report = access.secure(str(root))
    account = access.read_account(str(root))
    assert account is not None and report["created_user"] and report["account"] == account.to_json()
    assert account.groups == [dialout_gid()]
    passwd = (root / "etc/passwd").read_text()
    assert f"evse-agent:x:{account.uid}:{account.gid}:evse-agent EV charger agent:{state}:/usr/sbin/nologin" in passwd
    uid, gid = account.uid, account.gid
    assert owner_mode(etc) == (0, gid, 0o750)
    assert owner_mode(etc / "agent.toml") == (0, gid, 0o640)
    assert owner_mode(etc / "cp-key.pem") == (0, gid, 0o640)
    assert owner_mode(etc / "hardware-revision") == (0, 0, 0o644)
    assert owner_mode(state) == (uid, gid, 0o700)
    assert owner_mode(state / "agent.db") == (uid, gid, 0o600)
    assert owner_mode(state / "sub") == (uid, gid, 0o700)
    assert owner_mode(code / "agent.py") == (0, 0, 0o644)  # the agent's code: not writable by it
    assert owner_mode(victim) == before and owner_mode(root / "etc/motd") == (0, 0, 0o644)
    assert any("link-to-shadow: left alone (a symbolic link)" in w for w in report["warnings"])
    assert any("hardlink-to-motd: left alone (a file with 2 hard links)" in w for w in report["warnings"])
    assert f"{etc}/agent.toml: 0:0 0644 -> 0:{gid} 0640" in report["repaired"]

    again = access.secure(str(root))  # idempotent: nothing left to repair, the same user
    assert again["repaired"] == [] and not again["created_user"] and again["account"] == report["account"]


def test_secure_adds_an_existing_user_to_the_serial_group(tmp_path: Path) -> None:
    root = make_root(tmp_path / "controller")
    with (root / "etc/passwd").open("a") as f:
        f.write("evse-agent:x:990:990::/var/lib/evse-agent:/usr/sbin/nologin\n")
    with (root / "etc/group").open("a") as f:
        f.write("evse-agent:x:990:\n")
    with (root / "etc/gshadow").open("a") as f:
        f.write("evse-agent:!::\n")
    report = access.secure(str(root))
    assert not report["created_user"] and report["added_groups"] == ["dialout"]
    assert report["account"]["uid"] == 990 and report["account"]["groups"] == [dialout_gid()]
    assert owner_mode(root / "var/lib/evse-agent") == (990, 990, 0o700)  # the default storage.dir


@pytest.mark.parametrize("state_dir", ["/", "/var", "/var/lib", "/etc/evse-agent/state", "/opt/evse-agent",
                                       "/opt", "/usr/local/x", "relative/dir", "{root}", "{root}/etc"])
def test_a_state_dir_that_is_not_the_agents_own_is_refused(tmp_path: Path, state_dir: str) -> None:
    root = make_root(tmp_path / "controller")
    (root / "etc/evse-agent").mkdir()
    (root / "etc/evse-agent/agent.toml").write_text(CONFIG.format(state=state_dir.format(root=root)))
    with pytest.raises(access.AccessError, match="cannot be the agent's own directory"):
        access.secure(str(root))
    assert access.read_account(str(root)) is None  # refused before anything was done


def test_a_root_without_account_files_is_named(tmp_path: Path) -> None:
    with pytest.raises(access.AccessError, match=r"etc/passwd is missing: is .* a controller's root filesystem"):
        access.secure(str(tmp_path))
