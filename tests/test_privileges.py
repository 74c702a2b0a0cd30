"""Least privilege on the controller: the units tools/flash.py installs, checked by systemd's own tools; the agent
run as an unprivileged user in what of its unit's sandbox applies without systemd (tests/sandbox.py) through a
charging session and a Hard reset; the privileged A/B switch as its unit runs it.

Commissioning's user and modes over a real SSH target, and the migration of a controller commissioned by the
previous version: tests/test_flash.py. The policy itself on a directory root: tests/test_access.py.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from firmware.exitcodes import ExitCode
from firmware.maintenance import access, privileged, slots
from firmware.maintenance.privileged import REBOOT_REQUEST, RUN_DIR, SWITCH_REQUEST
from tests.controller import agent_python, grant_serial_ports, traversable_dir
from tests.nested_systemd import NestedSystemd, NestedSystemdUnavailable, nested_systemd
from tests.nested_systemd import unavailable as nested_systemd_unavailable
from tests.sandbox import Sandbox, service_directives
from tests.station import CP_ID, Station
from tools.flashing.unit import (
    CONFIRM_TIMEOUT_S,
    STATE_DROPIN_PATH,
    helper_units,
    state_dropin,
    unit_files,
    unit_text,
)

REPO = Path(__file__).resolve().parents[1]
CARD = "04A1B2C3"
MAX_EXPOSURE = 2.0  # systemd-analyze's "OK" band ends at 4.9; the issue asks for 2.0 at most


def free_id() -> int:
    """A user and group id this machine does not use: the stand-in for the controller's evse-agent."""
    for n in range(64100, 65000):
        try:
            pwd.getpwuid(n)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(n)
        except KeyError:
            return n
    raise RuntimeError("no free id in 64100..64999")


def exposure(unit: Path) -> float:
    """``systemd-analyze security --offline=true``'s overall exposure of a unit file."""
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                       text=True, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout + r.stderr)
    assert found, r.stdout + r.stderr
    print(f"[figure] {unit.name}: exposure {found[1]} {found[2]}")
    return float(found[1])


def test_installed_units_verify_and_the_agent_is_exposed_at_most_2(tmp_path: Path) -> None:
    """The units as flash writes them on a controller (root /), with commissioning's drop-in beside the agent's
    (verify reads it with the unit: a typo there is reported, and any report fails the test)."""
    system = tmp_path / "etc/systemd/system"
    for unit in unit_files("/", "/usr/bin/python3"):
        (tmp_path / unit.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / unit.path).write_text(unit.text)
    (tmp_path / STATE_DROPIN_PATH).parent.mkdir(parents=True)
    (tmp_path / STATE_DROPIN_PATH).write_text(state_dropin("/var/lib/evse-agent"))
    units = sorted(system.glob("evse-agent*.service")) + sorted(system.glob("*.path"))
    assert [u.name for u in units] == ["evse-agent-install.service", "evse-agent-reboot.service",
                                       "evse-agent-switch.service", "evse-agent.service", "evse-agent-install.path",
                                       "evse-agent-reboot.path", "evse-agent-switch.path"]
    r = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, check=False)
    assert (r.returncode, r.stdout + r.stderr) == (0, ""), r.stdout + r.stderr
    assert exposure(system / "evse-agent.service") <= MAX_EXPOSURE
    assert exposure(system / "evse-agent-switch.service") <= MAX_EXPOSURE  # root, but boxed in
    assert exposure(system / "evse-agent-install.service") <= MAX_EXPOSURE  # root, boxed in, no network
    assert exposure(system / "evse-agent-reboot.service") <= 1.0  # runs /bin/true
    directives = service_directives(unit_text("/", "/usr/bin/python3"))
    assert directives["User"] == ["evse-agent"] and directives["UMask"] == ["0077"]


def proc_status(pid: int) -> dict[str, str]:
    """The kernel's word on a process's identity and restrictions."""
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def mount_lines(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/mountinfo").read_text().splitlines()


def assert_sandboxed(pid: int, uid: int) -> None:
    """The process runs as the stand-in user, in the serial ports' group only, with no capability, no new
    privileges, and the sandbox's four seccomp filters."""
    fields = proc_status(pid)
    assert fields["Uid"].split() == [str(uid)] * 4 and fields["Gid"].split() == [str(uid)] * 4
    assert fields["Groups"].split() == [str(grp.getgrnam("dialout").gr_gid)]
    assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == int(fields["CapPrm"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert fields["Seccomp_filters"].strip() == "4"


async def test_agent_runs_unprivileged_through_a_session_and_a_hard_reset() -> None:
    """The agent as a user of its own (no capabilities, no new privileges, umask 077, the unit's system call,
    address family, W^X and namespace filters), reaching the devices through the serial ports' group and writing
    only its own directory: a charging session, then a Hard reset that asks systemd for the reboot where the
    unit's path unit waits for it."""
    uid = free_id()
    unit = unit_text("/", agent_python())
    sandbox = Sandbox.from_unit(unit, uid=uid, gid=uid)
    assert sandbox.umask == 0o077 and sandbox.no_new_privileges and len(sandbox.filters) == 4
    print(f"\napplied without systemd: {', '.join(sandbox.applied)}\nneeds systemd: {', '.join(sandbox.not_applied)}")
    with traversable_dir("evse-priv-") as where:
        etc, state, run = where / "etc", where / "state", where / "run"
        etc.mkdir(mode=0o750)
        os.chown(etc, 0, uid)
        for d in (state, run):
            d.mkdir(mode=0o700)
            os.chown(d, uid, uid)
        # ResetRetries 0: the reboot nobody acts on here is not asked again (tests/test_e2e_core_keys.py does that)
        async with Station(etc, connectors=1, storage_dir=state, presets={"ResetRetries": 0}) as s:
            os.chown(s.config_path, 0, uid)
            s.config_path.chmod(0o640)  # as commissioning leaves it: root's, readable by the agent's group
            grant_serial_ports(s.charger)
            s.agent_command = [agent_python(), "-S", "-m", "firmware"]
            s.agent_env = {"PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}",
                           "RUNTIME_DIRECTORY": str(run)}
            s.spawn_options = {"preexec_fn": sandbox.preexec()}
            await s.start_agent(supervised=True)
            assert s.proc is not None
            assert_sandboxed(s.proc.pid, uid)

            tx_id = await s.start_session(1, CARD)
            mark = s.mark()
            s.ev(1).unplug()
            stop = await s.wait_call("StopTransaction", since=mark)
            assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "EVDisconnected"
            for name in ("agent.db", "agent.db-wal"):
                st = (state / name).stat()
                assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, uid, 0o600), name
            assert not (run / REBOOT_REQUEST).exists()

            mark = s.mark()
            assert (await s.csms.reset(CP_ID, "Hard"))["status"] == "Accepted"
            await s.wait_booted(since=mark)
            assert s.exit_codes == [ExitCode.RESTART] and s.starts == 2
            requested = next(e for e in s.log() if e.get("msg") == "reboot requested")
            request = run / REBOOT_REQUEST
            assert requested["request"] == str(request)
            # nobody acted on it here (no systemd): the agent started again finds it and removes it, so that a
            # reboot unit enabled later does not reboot the controller then
            await s.wait_log(lambda e: e.get("msg", "").startswith("the reboot asked for before this start"))
            assert not request.exists()
            reboot_path = next(u for u in helper_units("/", agent_python()) if u.name == "evse-agent-reboot.path")
            watched = service_directives(reboot_path.text.replace("[Path]", "[Service]"))["PathExists"]
            assert watched == [f"{RUN_DIR}/{request.name}"]  # where the unit's RuntimeDirectory puts it
            assert "RuntimeDirectory=evse-agent" in unit and RUN_DIR == "/run/evse-agent"
            assert_sandboxed(s.proc.pid, uid)  # the agent started again after the reset too


def fake_controller(root: Path) -> Path:
    """Two installed slots holding the controller-side code (what the switch unit runs), slot a active."""
    base = root / "opt/evse-agent"
    for n, slot in enumerate(slots.SLOTS):
        app = base / "slots" / slot / "app"
        for rel in ("firmware/__init__.py", "firmware/maintenance/__init__.py", "firmware/maintenance/access.py",
                    "firmware/maintenance/slots.py"):
            (app / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, app / rel)
        (base / "slots" / slot / "manifest.json").write_text(json.dumps({"version": f"1.{n}.0"}))
    os.symlink("slots/a", base / "current")
    (base / "state.json").write_text(json.dumps({"slots": {s: {"version": f"1.{n}.0", "health": "passed"}
                                                           for n, s in enumerate(slots.SLOTS)}}))
    (root / RUN_DIR.lstrip("/")).mkdir(parents=True)
    return root


def run_switch_unit(root: Path, request: Path) -> subprocess.CompletedProcess[str]:
    """evse-agent-switch.service's ExecStart with its Environment=, as systemd starts it (as root), but for the
    request read from ``request`` (the unit's is in /run/evse-agent, which systemd makes for the agent) and no
    restart of the agent (none runs here): test_the_units_under_a_real_systemd runs it whole."""
    unit = next(u for u in helper_units(str(root), agent_python()) if u.name == "evse-agent-switch.service")
    d = service_directives(unit.text)
    env = dict(item.split("=", 1) for v in d["Environment"] for item in shlex.split(v))
    *command, args = shlex.split(d["ExecStart"][0])
    assert json.loads(args) == {"root": str(root), "request": f"{RUN_DIR}/{SWITCH_REQUEST}",
                                "service": "evse-agent.service", "confirm_timeout_s": CONFIRM_TIMEOUT_S}
    args = json.dumps({"root": str(root), "request": str(request)})
    return subprocess.run([*command, args], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, timeout=30, check=False)


def test_switch_request_is_done_by_the_privileged_unit_and_nothing_else(tmp_path: Path) -> None:
    root = fake_controller(tmp_path / "controller")
    run = {"RUNTIME_DIRECTORY": str(root / RUN_DIR.lstrip("/"))}
    request = privileged.request_switch("b", environ=run)
    assert request is not None
    path_unit = next(u for u in helper_units(str(root), agent_python()) if u.name == "evse-agent-switch.path")
    assert f"PathExists={RUN_DIR}/{request.name}\n" in path_unit.text  # the agent writes what the path unit waits for
    r = run_switch_unit(root, request)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"]["switched"] is True
    assert slots.active_slot(str(root)) == "b" and not request.exists()
    history = slots.info(str(root))["history"]
    assert history[-1]["event"] == "switched (requested by the agent)" and history[-1]["previous"] == "a"

    # anything but a request for another healthy installed slot changes nothing (and is consumed)
    def refused(write: object, why: str) -> None:
        assert callable(write)
        write()
        r = slots.call("apply_switch_request", {"root": str(root), "request": str(request)})
        assert r["ok"] and r["result"]["switched"] is False and why in r["result"]["refused"], r
        assert slots.active_slot(str(root)) == "b" and not request.is_symlink() and not request.exists()

    refused(lambda: request.write_text("c\n"), "not a request for slot a or b")
    refused(lambda: request.write_text("../../etc\n"), "not a request for slot a or b")
    refused(lambda: request.write_text("a" * 100), "not a request for slot a or b")
    target = tmp_path / "elsewhere"
    target.write_text("a\n")
    refused(lambda: os.symlink(target, request), "not a request for slot a or b")
    assert target.read_text() == "a\n"  # the link's target is not touched
    os.mkfifo(tmp_path / "fifo")
    refused(lambda: os.symlink(tmp_path / "fifo", request), "not a request for slot a or b")
    refused(lambda: privileged.request_switch("b", environ=run), "slot b is already active")
    slots.record_health(str(root), "a", {"ok": False, "stage": "start", "detail": "test"})
    refused(lambda: privileged.request_switch("a", environ=run), "slot a failed its health check")
    (root / "opt/evse-agent/slots/a/manifest.json").unlink()
    refused(lambda: privileged.request_switch("a", environ=run), "slot a holds no installed agent")
    assert [h["event"] for h in slots.info(str(root))["history"]].count("switch refused") == 7


def test_requests_are_whole_files_of_the_agent_alone_and_without_the_unit_nobody_is_asked(tmp_path: Path) -> None:
    run = {"RUNTIME_DIRECTORY": str(tmp_path)}
    path = privileged.request_reboot("OCPP Hard reset", environ=run)
    assert path == tmp_path / REBOOT_REQUEST and path.read_text() == "OCPP Hard reset\n"
    assert path.stat().st_mode & 0o777 == 0o600 and sorted(p.name for p in tmp_path.iterdir()) == [REBOOT_REQUEST]
    assert privileged.clear_stale_reboot(environ=run) and not path.exists()
    assert not privileged.clear_stale_reboot(environ=run)
    assert privileged.request_switch("a", environ=run) == tmp_path / SWITCH_REQUEST
    assert privileged.request_reboot("test", environ={}) is None
    assert privileged.request_switch("a", environ={}) is None
    with pytest.raises(ValueError, match="slot 'x'"):
        privileged.request_switch("x", environ=run)


def controller_for_systemd(root: Path, units: Path, python: str) -> dict[Path, Path]:
    """A controller root with two slots (each: this checkout and its libraries, bound there as a bundle would lay
    them out: the returned binds), slot a active, this machine's account files; the units flash installs."""
    (root / "etc/evse-agent").mkdir(parents=True)
    root.chmod(0o755)
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    binds = {}
    for slot in slots.SLOTS:
        for part, source in (("app", REPO), ("lib", Path(sysconfig.get_paths()["purelib"]))):
            (root / f"opt/evse-agent/slots/{slot}/{part}").mkdir(parents=True)
            binds[root / f"opt/evse-agent/slots/{slot}/{part}"] = source
        (root / f"opt/evse-agent/slots/{slot}/manifest.json").write_text(json.dumps({"version": slot}))
    os.symlink("slots/a", root / "opt/evse-agent/current")
    units.mkdir()
    for unit in unit_files(str(root), python):
        (units / unit.name).write_text(unit.text)
    (units / "check.target").write_text("[Unit]\nDefaultDependencies=no\n"
                                        "Wants=evse-agent.service evse-agent-reboot.path evse-agent-switch.path\n")
    return binds


#: Device numbers (char major, minor) for the device ACL probe: the serial ports' drivers, and others.
SERIAL_NODES = {"ttyS": (4, 64), "ttyUSB": (188, 0), "ttyACM": (166, 0), "ttyAMA": (204, 64)}
OTHER_NODES = {"tun": (10, 200), "kmsg": (1, 11), "fuse": (10, 229)}
PROBE = """import errno, json, os, sys
out = {}
for name in sys.argv[2:]:
    try:
        os.close(os.open(os.path.join(sys.argv[1], name), os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY))
        out[name] = "opened"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def device_probe_unit(units: Path, root: Path, agent_unit: str) -> tuple[set[str], Path]:
    """A oneshot with the agent unit's device ACL (DevicePolicy=, DeviceAllow=), run as root so that only the ACL
    can refuse, opening device nodes: one per serial driver this machine has (systemd resolves char-NAME in
    /proc/devices when a unit starts), and others. The serial drivers probed, and where the result will be."""
    acl = service_directives(agent_unit)
    nodes = root / "probe-nodes"
    nodes.mkdir()
    drivers = {line.split()[1] for line in Path("/proc/devices").read_text().splitlines()[1:] if line[:1] == " "}
    serial = {n: dev for n, dev in SERIAL_NODES.items() if n in drivers}
    assert serial, "no serial driver on this machine to probe"
    for name, (major, minor) in {**serial, **OTHER_NODES}.items():
        os.mknod(nodes / name, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    (root / "probe.py").write_text(PROBE)
    out = root / "probe.json"
    (units / "device-probe.service").write_text(
        "[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\n"
        f"ExecStart={SYSTEM_PYTHON} -S {root}/probe.py {nodes} {' '.join([*serial, *OTHER_NODES])}\n"
        f"StandardOutput=truncate:{out}\nDevicePolicy={acl['DevicePolicy'][-1]}\n"
        + "".join(f"DeviceAllow={a}\n" for a in acl["DeviceAllow"]))
    return set(serial), out


async def device_probe(systemd: NestedSystemd, units: Path, root: Path, agent_unit: str) -> dict[str, str]:
    """What of :func:`device_probe_unit` went otherwise than: a serial port opens (or fails for want of hardware),
    any other device is refused (EPERM)."""
    serial, out = device_probe_unit(units, root, agent_unit)
    await systemd.systemctl("daemon-reload")
    await systemd.systemctl("start", "device-probe.service")
    seen: dict[str, str] = json.loads(out.read_text())
    assert set(seen) == serial | set(OTHER_NODES), seen
    return {n: r for n, r in seen.items() if (r == "EPERM") == (n in serial)}


CHECK_DROPINS = {
    # only for running them here: no system boot around them, and where a controller reboots, the nested systemd
    # exits (the same action). The simulator's serial ports are ptys, which DevicePolicy=closed always allows.
    "evse-agent.service": "[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:{log}\n"
                          "StandardError=inherit\n",
    "evse-agent-reboot.service": "[Unit]\nDefaultDependencies=no\nSuccessAction=exit\n",
    "evse-agent-switch.service": "[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:{log}\n",
    "evse-agent-reboot.path": "[Unit]\nDefaultDependencies=no\n",
    "evse-agent-switch.path": "[Unit]\nDefaultDependencies=no\n",
}


SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"  # the agent's user may run it
NO_NESTED_SYSTEMD = nested_systemd_unavailable() or (None if os.path.exists(SYSTEM_PYTHON) else
                                                     f"needs {SYSTEM_PYTHON} (Debian's python3)")


@pytest.mark.skipif(NO_NESTED_SYSTEMD is not None, reason=f"no nested systemd here: {NO_NESTED_SYSTEMD}")
async def test_the_units_under_a_real_systemd(tmp_path: Path) -> None:
    """The units as flash installs them, run by systemd itself (tests/nested_systemd.py): the agent in its whole
    sandbox through a charging session; the A/B switch it asks for, done by the privileged unit, and the agent
    restarted from the new slot; its Hard reset triggering the reboot unit's action."""
    python = SYSTEM_PYTHON
    root = Path(f"/srv/evse-agent-check-{os.getpid()}")  # not under /tmp nor /home: the sandbox hides those
    log = tmp_path / "agent.log"
    units = tmp_path / "units"
    try:
        binds = controller_for_systemd(root, units, python)
        async with Station(root / "etc/evse-agent", connectors=1, storage_dir=root / "var/lib/evse-agent") as s:
            report = access.secure(str(root))  # commissioning: the user (ids free on this machine), the modes
            for unit in ("evse-agent.service", "evse-agent-switch.service"):
                (units / f"{unit}.d").mkdir(exist_ok=True)
                (units / f"{unit}.d/state-dir.conf").write_text(state_dropin(report["state_dir"]))
            for name, text in CHECK_DROPINS.items():
                (units / f"{name}.d").mkdir(exist_ok=True)
                (units / f"{name}.d/check.conf").write_text(text.format(log=log))
            grant_serial_ports(s.charger)
            uid = report["account"]["uid"]
            async with contextlib.AsyncExitStack() as stack:
                try:
                    systemd = await stack.enter_async_context(
                        nested_systemd(units, root / "etc/passwd", root / "etc/group", binds))
                except NestedSystemdUnavailable as exc:
                    pytest.skip(str(exc))
                await s.wait_booted()
                [pid] = await systemd.unit_pids("evse-agent.service")
                fields = proc_status(pid)
                assert fields["Uid"].split() == [str(uid)] * 4 and int(fields["CapBnd"], 16) == 0
                assert fields["NoNewPrivs"].strip() == "1" and int(fields["Seccomp_filters"]) > 4
                mounts = {m[4]: m[5].split(",") for m in map(str.split, mount_lines(pid))}
                assert "ro" in mounts["/"] and "rw" in mounts[report["state_dir"]]  # ProtectSystem=strict + its dir
                tx_id = await s.start_session(1, CARD)
                mark = s.mark()
                s.ev(1).unplug()
                assert (await s.wait_call("StopTransaction", since=mark)).payload["transactionId"] == tx_id
                st = (root / "var/lib/evse-agent/agent.db").stat()
                assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)

                mark = s.mark()
                assert privileged.request_switch("b", {"RUNTIME_DIRECTORY": str(systemd.path(RUN_DIR))})
                await s.wait_booted(since=mark)  # restarted by the switch unit
                assert slots.active_slot(str(root)) == "b"
                assert slots.info(str(root))["history"][-1]["event"] == "switched (requested by the agent)"
                assert "snapshot of schema" in slots.info(str(root))["history"][-1]["database"]  # b's first run
                snapshot = root / "opt/evse-agent/snapshots/before-b.db"
                assert snapshot.is_file() and snapshot.stat().st_uid == 0  # root's, beside the code
                st = (root / "var/lib/evse-agent/agent.db").stat()
                assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)  # still the agent's

                assert await device_probe(systemd, units, root, unit_text(str(root), python)) == {}

                assert (await s.csms.reset(CP_ID, "Hard"))["status"] == "Accepted"
                await s.wait_until(lambda: systemd.pid is None, what="the reboot unit's action (here: exit)")
            assert '"msg": "reboot requested"' in log.read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
