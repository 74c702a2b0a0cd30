"""tools/flash.py end to end: a real sshd on loopback stands for the controller (installing into a directory
that plays its root), the agent really runs from the installed slot against simulated devices on ptys and
the simulated CSMS for the health check, bundles are really built and signed.

Bundles are built once per session from one wheelhouse (``pip download`` of the pinned runtime dependencies:
from pip's cache or the index). Figures (bundle size, flash time over loopback) are printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.storage import Database
from firmware.storage.settings import Settings
from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms
from sim.csms.transcript import Direction
from sim.harness.charger import ChargerSpec, OcppSettings, SimulatedCharger
from tests.controller import agent_python, dialout_gid, grant_serial_ports, make_root, traversable_dir
from tests.pki import Signer, make_signer
from tests.sshd import CuttingProxy, SshServer, running_sshd
from tools.flashing.build import runtime_requirements
from tools.flashing.target import parse_target
from tools.flashing.unit import CONFIG_PATH as CONFIG

REPO = Path(__file__).resolve().parents[1]
FLASH = REPO / "tools" / "flash.py"
CP_ID = "FLASH-CP-1"
REVISION = "rev-c"
PASSWORD = "fedcba9876543210"
FAST_HEALTH = ["--health-settle", "1", "--health-timeout", "30"]


@dataclass(frozen=True)
class Bundles:
    signer: Signer
    stranger: Signer
    v1: Path
    v2: Path
    broken: Path  # an agent that exits at once (fails its health check)
    migrating: Path  # an agent with one more schema migration that never pings the watchdog (fails, after running)
    other_revision: Path
    wrongly_signed: Path
    other_python: Path  # wheels claimed for another interpreter than the controller's


def tool(*args: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """flash.py as a technician runs it (blocking: only for steps that need no simulated device)."""
    return subprocess.run([sys.executable, str(FLASH), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


async def atool(*args: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """flash.py while the simulated charger and CSMS keep running in this event loop."""
    proc = await asyncio.create_subprocess_exec(sys.executable, str(FLASH), *map(str, args),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())


def build(tmp: Path, signer: Signer, wheels: Path, version: str, *extra: str | Path,
          revision: str = REVISION) -> Path:
    out = tmp / f"evse-agent-{version}-{revision}.bundle"
    r = tool("build", "--key", signer.key, "--cert", signer.cert, "--hardware-revision", revision, "--out", out,
             "--version", version, "--wheels-from", wheels, *extra)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    tmp = tmp_path_factory.mktemp("bundles")
    wheels = tmp / "wheels"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(wheels),
                    "--constraint", str(REPO / "requirements.lock"), *runtime_requirements()], check=True)
    print(f"\n[figure] wheelhouse: {time.monotonic() - started:.1f} s")
    signer = make_signer(tmp / "pki")
    stranger = make_signer(tmp / "pki-stranger", "Someone else")
    broken_src = tmp / "broken-src"
    for package in ("firmware", "hal"):
        shutil.copytree(REPO / package, broken_src / package, ignore=shutil.ignore_patterns("__pycache__"))
    agent = broken_src / "firmware" / "agent.py"
    text = agent.read_text()
    start = "    async def run(self) -> ExitCode:\n"
    assert start in text
    agent.write_text(text.replace(start, start + '        raise RuntimeError("broken build: exits at once")\n'))
    migrating_src = tmp / "migrating-src"
    for package in ("firmware", "hal"):
        shutil.copytree(REPO / package, migrating_src / package, ignore=shutil.ignore_patterns("__pycache__"))
    database = migrating_src / "firmware/storage/database.py"
    text = database.read_text()
    last = "MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6"
    assert last in text
    database.write_text(text.replace(last, "def _v_next(conn: sqlite3.Connection) -> None:\n"
        "    conn.execute('ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0')\n"
        "    conn.execute('CREATE TABLE firmware_jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL)')\n\n\n"
        + last + ", _v_next"))
    agent = migrating_src / "firmware/agent.py"
    text = agent.read_text()
    watchdog = 'self.tasks.start("watchdog", notifier.watchdog)'
    assert watchdog in text
    agent.write_text(text.replace(watchdog, "pass  # broken build: never pings the watchdog"))
    v1 = build(tmp, signer, wheels, "1.0.0")
    print(f"[figure] bundle with full runtime deps: {v1.stat().st_size / 1e6:.1f} MB")
    return Bundles(signer, stranger, v1, build(tmp, signer, wheels, "1.1.0"),
                   build(tmp, signer, wheels, "1.2.0-broken", "--source", broken_src),
                   build(tmp, signer, wheels, "1.3.0-migrating", "--source", migrating_src),
                   build(tmp, signer, wheels, "1.0.0", revision="rev-a"),
                   build(tmp, stranger, wheels, "6.6.6"),
                   build(tmp, signer, wheels, "1.0.0-py39", "--python-version", "3.9"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


class Charger:
    """The controller's hardware and its CSMS: simulated devices on ptys and the simulated CSMS, and the
    agent.toml a technician would write for them (state under the controller root)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sim = SimulatedCharger(ChargerSpec(charge_point_id=CP_ID, connectors=2))
        self.csms = SimulatedCsms(response_timeout_s=5, ping_interval_s=None)
        self.config = root.parent / "agent.toml"

    async def __aenter__(self) -> Charger:
        await self.sim.start()
        grant_serial_ports(self.sim)  # the agent's user opens them through its group, as on a controller
        await self.csms.start()
        self.csms.behaviour.profiles[CP_ID] = ChargePointProfile(password=PASSWORD)
        self.config.write_text(self.sim.agent_config(str(self.root / "var/lib/evse-agent"),
                                                     OcppSettings(self.csms.url, PASSWORD)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.csms.stop()
        await self.sim.close()

    def boots(self) -> int:
        return len(self.csms.transcript.messages(CP_ID, action="BootNotification"))


@pytest.fixture
async def charger() -> AsyncIterator[Charger]:
    with traversable_dir("evse-flash-") as where:
        root = make_root(where / "controller")
        (root / "etc/evse-agent").mkdir(parents=True)
        (root / "etc/evse-agent/hardware-revision").write_text(REVISION + "\n")  # the factory writes it
        async with Charger(root) as c:
            yield c


def status(url: str, *opts: str) -> dict:  # type: ignore[type-arg]
    r = tool("status", url, "--json", *opts)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def active_link(root: Path) -> str:
    return os.readlink(root / "opt/evse-agent/current")


async def test_build_flash_over_ssh_health_check_upgrade_and_manual_rollback(
        charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    r = await atool("commission", url, *ssh, "--config", charger.config, "--security-profile", "1")
    assert r.returncode == 0, r.stderr
    assert "security      profile 1, password set" in r.stdout and PASSWORD not in r.stdout
    assert (charger.root / "etc/evse-agent/agent.toml").stat().st_mode & 0o777 == 0o640  # root:evse-agent

    started = time.monotonic()
    r = await atool("flash", url, bundles.v1, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    flash_s = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\n[figure] first flash over ssh (loopback), {bundles.v1.stat().st_size / 1e6:.1f} MB, incl. health "
          f"check: {flash_s:.1f} s\n{r.stdout}")
    assert "health check passed" in r.stdout and "transfer [" in r.stderr
    assert active_link(charger.root) == "slots/a"
    assert charger.boots() >= 1  # the agent really ran from the slot and booted at the CSMS
    slot = charger.root / "opt/evse-agent/slots/a"
    assert (slot / "lib/ocpp/__init__.py").is_file() and (slot / "app/firmware/agent.py").is_file()
    unit = (charger.root / "etc/systemd/system/evse-agent.service").read_text()
    assert "Restart=on-failure" in unit and "WatchdogSec=30" in unit and "Type=notify" in unit
    assert f"{charger.root}/opt/evse-agent/current/app" in unit
    assert os.readlink(charger.root / "etc/systemd/system/multi-user.target.wants/evse-agent.service") == \
        "/etc/systemd/system/evse-agent.service"

    started = time.monotonic()
    r = await atool("flash", url, bundles.v2, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    print(f"[figure] upgrade flash over ssh incl. health check: {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing into slot b" in r.stdout
    info = status(url, *ssh)
    assert info["active"] == "b"
    assert (info["slots"]["a"]["version"], info["slots"]["b"]["version"]) == ("1.0.0", "1.1.0")
    assert info["last_health"]["ok"] is True and info["last_health"]["version"] == "1.1.0"

    r = await atool("rollback", url, *ssh, "--dry-run")
    assert r.returncode == 0 and active_link(charger.root) == "slots/b"
    r = await atool("rollback", url, *ssh)
    assert r.returncode == 0, r.stderr
    assert active_link(charger.root) == "slots/a"
    text = tool("status", url, *ssh).stdout
    assert "a     *       1.0.0" in text and "agent user  evse-agent (uid " in text, text


async def test_failed_health_check_rolls_back_by_itself(charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    assert (await atool("commission", url, *ssh, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.v1, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    assert r.returncode == 0, r.stdout + r.stderr
    r = await atool("flash", url, bundles.broken, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    assert r.returncode == 5, r.stdout + r.stderr
    assert "health check FAILED (start): the agent exited with code 1 before it was ready" in r.stdout, r.stdout
    assert "broken build: exits at once" in r.stdout  # the agent's own last words, for the technician
    assert "rolled back: slot a (1.0.0) is active again" in r.stderr
    assert active_link(charger.root) == "slots/a"
    info = status(url, *ssh)
    assert info["last_health"]["ok"] is False and info["last_health"]["version"] == "1.2.0-broken"
    assert info["slots"]["b"]["health"] == "FAILED" and info["slots"]["a"]["health"] == "passed"
    assert [h["event"] for h in info["history"]][-3:] == ["activated", "health check", "rolled back (health check "
                                                                                        "failed)"]
    r = await atool("rollback", url, *ssh)  # a technician trying the bad slot by hand is stopped
    assert r.returncode == 8 and "FAILED its health check" in r.stderr and active_link(charger.root) == "slots/a"


async def test_a_failed_first_install_is_not_left_active(charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    assert (await atool("commission", url, *ssh, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.broken, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    assert r.returncode == 5, r.stdout + r.stderr
    assert "this was the first install and it failed: slot a is NOT left active" in r.stderr
    assert not (charger.root / "opt/evse-agent/current").is_symlink()
    info = status(url, *ssh)
    assert info["active"] is None and info["history"][-1]["event"] == "deactivated (first install failed its " \
        "health check)"
    r = await atool("flash", url, bundles.v1, "--trust", bundles.signer.ca_cert, *ssh, *FAST_HEALTH)
    assert r.returncode == 0, r.stdout + r.stderr  # the next install goes on as a first one (into the free slot a)
    assert active_link(charger.root) == "slots/a" and status(url, *ssh)["slots"]["a"]["version"] == "1.0.0"


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.02)


def controller_state(root: Path) -> dict:  # type: ignore[type-arg]
    """state.json as the controller wrote it (read from its disk, as a technician would with cat)."""
    try:
        return json.loads((root / "opt/evse-agent/state.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


async def test_link_lost_during_health_check_the_controller_rolls_back_by_itself(
        charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    assert (await atool("commission", url, *ssh, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.v1, "--trust", bundles.signer.ca_cert, *ssh, "--no-health-check")
    assert r.returncode == 0, r.stdout + r.stderr
    laptop = await asyncio.create_subprocess_exec(
        sys.executable, str(FLASH), "flash", url, str(bundles.broken), "--trust", str(bundles.signer.ca_cert), *ssh,
        *FAST_HEALTH, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        await wait_for(lambda: active_link(charger.root) == "slots/b", 60, "the switch to the new slot")
    finally:
        os.killpg(laptop.pid, signal.SIGKILL)  # the laptop and its ssh client are gone, mid health check
        await laptop.wait()
    await wait_for(lambda: (controller_state(charger.root).get("last_health") or {}).get("slot") == "b" and
                   active_link(charger.root) == "slots/a", 30, "the controller's own rollback")
    health = controller_state(charger.root)["last_health"]
    assert health["ok"] is False and health["version"] == "1.2.0-broken"
    assert status(url, *ssh)["active"] == "a"


async def test_tampered_wrongly_signed_and_other_revision_refused_before_anything_is_written(
        tmp_path: Path, charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    trust = ["--trust", str(bundles.signer.ca_cert)]
    tampered = tmp_path / "tampered.bundle"
    data = bytearray(bundles.v1.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, somewhere in a wheel
    tampered.write_bytes(bytes(data))
    r = await atool("flash", url, tampered, *trust, *ssh)
    assert r.returncode == 3, r.stderr
    assert "refused, nothing was written" in r.stderr
    assert "does not match its SHA-256 in the signed manifest" in r.stderr
    r = await atool("flash", url, bundles.wrongly_signed, *trust, *ssh)
    assert r.returncode == 3
    assert "signature does not verify against the trusted certificate (CN=Firmware CA" in r.stderr
    r = await atool("flash", url, bundles.other_revision, *trust, *ssh)
    assert r.returncode == 3
    assert "built for hardware revision(s) rev-a, the controller is 'rev-c'" in r.stderr
    r = await atool("flash", url, bundles.other_revision, *trust, *ssh, "--hardware-revision", "rev-a")
    assert r.returncode == 3
    assert "the controller states hardware revision 'rev-c' itself; --hardware-revision rev-a does not " \
           "override it" in r.stderr
    r = await atool("flash", url, bundles.other_python, *trust, *ssh)
    assert r.returncode == 3
    assert "the bundle is built for cp39 on x86_64, the controller runs cp311 on x86_64" in r.stderr
    assert not (charger.root / "opt").exists()


def test_permission_denied_on_the_controller_is_named(tmp_path: Path, sshd: SshServer) -> None:
    """Root may write anywhere, so an immutable directory (chattr +i) stands for a path the login may not write."""
    root = tmp_path / "controller"
    (root / "etc/evse-agent").mkdir(parents=True)
    config = tmp_path / "agent.toml"
    config.write_text('[charge_point]\nid = "CP"\n[[connectors]]\nid = 1\n'
                      'board = { driver = "ioboard", port = "/dev/ttyS1" }\n')
    if subprocess.run(["chattr", "+i", str(root / "etc/evse-agent")], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute (chattr +i)")
    try:
        r = tool("commission", sshd.url(root), *sshd.tool_options, "--config", config)
    finally:
        subprocess.run(["chattr", "-i", str(root / "etc/evse-agent")], check=True)
    assert r.returncode == 4, r.stderr
    assert f"permission denied writing {root}/etc/evse-agent/agent.toml on the controller: log in as a user who " \
           "may write there (root)" in r.stderr


async def test_interrupted_transfer_leaves_active_slot_and_resumes(
        charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    trust = ["--trust", str(bundles.signer.ca_cert)]
    assert (await atool("flash", url, bundles.v1, *trust, *ssh, "--no-health-check")).returncode == 0
    size = bundles.v2.stat().st_size
    proxy = CuttingProxy(sshd.port, cut_after=size // 2)
    await proxy.start()
    try:
        r = await atool("flash", sshd.url(charger.root, proxy.port), bundles.v2, *trust, *ssh, "--no-health-check")
    finally:
        await proxy.close()
    assert r.returncode == 6, r.stdout + r.stderr
    assert proxy.cuts == 1 and "transfer interrupted at" in r.stderr and "run the same flash command again" in r.stderr
    assert active_link(charger.root) == "slots/a" and not (charger.root / "opt/evse-agent/slots/b").exists()
    partial = status(url, *ssh)["incoming"]
    assert len(partial) == 1 and 0 < next(iter(partial.values())) < size
    r = await atool("flash", url, bundles.v2, *trust, *ssh, "--no-health-check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming the interrupted transfer at" in r.stdout
    info = status(url, *ssh)
    assert info["active"] == "b" and info["slots"]["b"]["version"] == "1.1.0" and info["incoming"] == {}


async def test_directory_target(charger: Charger, bundles: Bundles) -> None:
    url = f"dir://{charger.root}"
    trust = ["--trust", str(bundles.signer.ca_cert)]
    r = await atool("flash", url, bundles.v1, *trust, "--dry-run")
    assert r.returncode == 0 and "dry run: nothing was written" in r.stdout
    assert not (charger.root / "opt").exists()
    assert (await atool("commission", url, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.v1, *trust)
    assert r.returncode == 0, r.stderr
    assert "health check NOT run: nothing can be run on a dir:// target" in r.stdout
    assert active_link(charger.root) == "slots/a"
    r = await atool("rollback", url)
    assert r.returncode == 8 and "nothing to roll back to: slot b holds no agent" in r.stderr
    r = await atool("selftest", url)
    assert r.returncode == 8 and "cannot run anything" in r.stderr
    r = await atool("flash", url, bundles.v2, *trust)
    assert r.returncode == 0 and active_link(charger.root) == "slots/b"
    info = status(url)
    assert info["slots"]["b"]["health"] == "not run" and info["slots"]["a"]["version"] == "1.0.0"
    # the same root run here (--local-exec): the agent from the slot passes its health check
    r = await atool("flash", url, bundles.v1, *trust, "--local-exec", "--python", agent_python(), *FAST_HEALTH)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "health check passed" in r.stdout and active_link(charger.root) == "slots/a"


async def test_commission_refuses_invalid_configuration(charger: Charger, sshd: SshServer) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    bad = charger.config.with_name("bad.toml")
    bad.write_text(charger.config.read_text().replace('model = "sdm630"', 'model = "sdm63"', 1))
    r = await atool("commission", url, *ssh, "--config", bad)
    assert r.returncode == 78
    assert f"configuration error: {bad}: connectors[0].meter.model: expected one of abb_b23, sdm120, sdm630; " \
           "got 'sdm63'" in r.stderr
    assert "nothing was written to the controller" in r.stderr
    r = await atool("commission", url, *ssh, "--config", charger.config, "--security-profile", "2")
    assert r.returncode == 78 and "security profile 2 needs a wss:// URL" in r.stderr, r.stderr
    r = await atool("commission", url, *ssh, "--config", charger.config, "--dry-run")
    board1 = charger.sim.wires["board1"].host_port
    assert r.returncode == 0 and f"connector 1   32 A 3-phase, board ioboard on {board1}" in r.stdout
    assert not (charger.root / "etc/evse-agent/agent.toml").exists()


async def test_commission_installs_the_firmware_trust_anchor(charger: Charger, sshd: SshServer, bundles: Bundles
                                                            ) -> None:
    """The CA the charger trusts for updates from the CSMS, root's, where the configuration's [firmware] trust
    names it (the privileged install verifies against it: docs/firmware-update.md)."""
    url, ssh = sshd.url(charger.root), sshd.tool_options
    trust = ["--firmware-trust", str(bundles.signer.ca_cert)]
    r = await atool("commission", url, *ssh, "--config", charger.config, *trust)
    assert r.returncode == 78 and "[firmware] trust must be \"/etc/evse-agent/firmware-trust.pem\"" in r.stderr
    assert not (charger.root / "etc/evse-agent/agent.toml").exists()  # nothing written
    config = charger.config.with_name("with-trust.toml")
    config.write_text(charger.config.read_text() + '\n[firmware]\ntrust = "/etc/evse-agent/firmware-trust.pem"\n')
    r = await atool("commission", url, *ssh, "--config", config, *trust)
    assert r.returncode == 0, r.stderr
    written = charger.root / "etc/evse-agent/firmware-trust.pem"
    assert written.read_bytes() == bundles.signer.ca_cert.read_bytes()
    assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (0, 0o640)  # root:evse-agent (access.py)
    bad = config.with_name("not-a-cert.pem")
    bad.write_text("hello")
    r = await atool("commission", url, *ssh, "--config", config, "--firmware-trust", bad)
    assert r.returncode == 2 and "expected PEM certificates" in r.stderr


async def test_selftest_over_ssh_names_the_missing_device(charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    assert (await atool("commission", url, *ssh, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.v1, "--trust", bundles.signer.ca_cert, *ssh, "--no-health-check")
    assert r.returncode == 0, r.stderr
    charger.sim.reader.set_silent(True)  # type: ignore[union-attr]
    # the devices that are there answer within ms; the silent reader costs the whole --timeout
    r = await atool("selftest", url, *ssh, "--timeout", "10")
    assert r.returncode == 7, r.stdout + r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[2:] if line.strip()}
    assert "FAIL" in lines["reader1"] and "RFID reader (pn532)" in lines["reader1"]
    assert all("  ok  " in lines[n] for n in ("board1", "board2", "meter1", "meter2", "csms"))
    assert "1 check(s) FAILED: reader1" in r.stdout
    r = await atool("selftest", url, *ssh, "--timeout", "10", "--json")
    assert r.returncode == 7 and [c["name"] for c in json.loads(r.stdout)["checks"] if c["status"] == "FAIL"] == \
        ["reader1"]


def ssh_stat(sshd: SshServer, *paths: Path) -> dict[str, str]:
    """``stat`` run on the controller over SSH, as a technician checks it: path -> "uid:gid mode"."""
    cmd = "stat -c '%n %u:%g %a' " + " ".join(shlex.quote(str(p)) for p in paths)
    r = subprocess.run(["ssh", "-p", str(sshd.port), "-i", str(sshd.client_key), "-o", "BatchMode=yes", "-o",
                        "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o",
                        "LogLevel=ERROR", f"{sshd.user}@127.0.0.1", cmd], capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return {name: f"{owner} {mode}" for name, owner, mode in (line.rsplit(" ", 2) for line in r.stdout.splitlines())}


def agent_ids(root: Path) -> tuple[int, int]:
    entry = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                 if line.startswith("evse-agent:"))
    return int(entry[2]), int(entry[3])


async def test_commission_creates_the_agents_user_and_sets_every_mode(charger: Charger, sshd: SshServer) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    etc, state = charger.root / "etc/evse-agent", charger.root / "var/lib/evse-agent"
    (etc / "cp-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")  # the charge point's key, copied by hand
    r = await atool("commission", url, *ssh, "--config", charger.config)
    assert r.returncode == 0, r.stderr
    uid, gid = agent_ids(charger.root)
    assert f"agent user    evse-agent (uid {uid}, gid {gid}, groups {dialout_gid()}), created; state {state}" in \
        r.stdout
    want = {str(etc): f"0:{gid} 750", str(etc / "agent.toml"): f"0:{gid} 640", str(etc / "cp-key.pem"): f"0:{gid} 640",
            str(etc / "hardware-revision"): "0:0 644", str(state): f"{uid}:{gid} 700"}
    assert ssh_stat(sshd, *map(Path, want)) == want
    dropin = charger.root / "etc/systemd/system/evse-agent.service.d/state-dir.conf"
    assert f"ReadWritePaths={state}\n" in dropin.read_text()

    # a mode changed by hand is repaired at the next commissioning; a link the agent left is not followed
    (etc / "cp-key.pem").chmod(0o644)
    os.symlink(charger.root / "etc/shadow", state / "planted")
    r = await atool("commission", url, *ssh, "--config", charger.config)
    assert r.returncode == 0, r.stderr
    assert f"repaired    {etc}/cp-key.pem: 0:{gid} 0644 -> 0:{gid} 0640" in r.stdout and "1 owner/mode(s)" in r.stdout
    assert f"warning: {state}/planted: left alone (a symbolic link)" in r.stderr
    assert ssh_stat(sshd, *map(Path, want)) == want
    assert ssh_stat(sshd, charger.root / "etc/shadow") == {str(charger.root / "etc/shadow"): "0:0 640"}


OLD_UNIT = """[Unit]
Description=evse-agent (EV charger controller agent)
[Service]
Type=notify
ExecStart=/usr/bin/python3 -S -m firmware run --config /etc/evse-agent/agent.toml
[Install]
WantedBy=multi-user.target
"""


def as_the_previous_version_left_it(root: Path, config: Path) -> None:
    """The controller as the previous version commissioned and ran it: no user of the agent's, the configuration
    0600 root's, the database made by the agent running as root, the unit running it as root."""
    make_root_files = make_root(root.parent / "fresh") / "etc"
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy(make_root_files / name, root / "etc" / name)
    for leftover in (root / "etc").glob("*-"):
        leftover.unlink()
    etc, state = root / "etc/evse-agent", root / "var/lib/evse-agent"
    shutil.copy(config, etc / "agent.toml")
    os.chmod(etc, 0o755)
    (etc / "agent.toml").chmod(0o600)
    (etc / "cp-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (etc / "cp-key.pem").chmod(0o644)
    for path in [state, *state.rglob("*")]:
        os.chown(path, 0, 0)
        path.chmod(0o755 if path.is_dir() else 0o644)
    db = Database(state / "agent.db")
    Settings(db).put("test.written_by", "the previous version")
    db.close()
    systemd = root / "etc/systemd/system"
    shutil.rmtree(systemd)
    (systemd / "multi-user.target.wants").mkdir(parents=True)
    (systemd / "evse-agent.service").write_text(OLD_UNIT)
    os.symlink("/etc/systemd/system/evse-agent.service", systemd / "multi-user.target.wants/evse-agent.service")


async def test_flash_migrates_a_controller_commissioned_by_the_previous_version(
        charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    url, ssh = sshd.url(charger.root), sshd.tool_options
    trust = ["--trust", str(bundles.signer.ca_cert)]
    assert (await atool("flash", url, bundles.v1, *trust, *ssh, "--no-health-check")).returncode == 0
    as_the_previous_version_left_it(charger.root, charger.config)
    etc, state = charger.root / "etc/evse-agent", charger.root / "var/lib/evse-agent"
    assert ssh_stat(sshd, state / "agent.db") == {str(state / "agent.db"): "0:0 644"}

    started = time.monotonic()
    r = await atool("flash", url, bundles.v2, *trust, *ssh, *FAST_HEALTH)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\n[figure] migrating flash incl. health check: {time.monotonic() - started:.1f} s\n{r.stdout}")
    uid, gid = agent_ids(charger.root)
    assert f"agent user    evse-agent (uid {uid}, gid {gid}, groups {dialout_gid()}), created" in r.stdout
    for repaired in (f"{etc}/agent.toml: 0:0 0600 -> 0:{gid} 0640", f"{etc}/cp-key.pem: 0:0 0644 -> 0:{gid} 0640",
                     f"{state}: 0:0 0755 -> {uid}:{gid} 0700", f"{state}/agent.db: 0:0 0644 -> {uid}:{gid} 0600"):
        assert f"repaired    {repaired}" in r.stdout, r.stdout
    # the new agent, as its own user, opened the database the old one made as root
    assert "health check passed" in r.stdout and active_link(charger.root) == "slots/b"
    want = {str(etc / "agent.toml"): f"0:{gid} 640", str(etc / "cp-key.pem"): f"0:{gid} 640",
            str(state): f"{uid}:{gid} 700", str(state / "agent.db"): f"{uid}:{gid} 600"}
    assert ssh_stat(sshd, *map(Path, want)) == want
    db = Database(state / "agent.db")
    assert Settings(db).get("test.written_by") == "the previous version"  # nothing lost
    db.close()
    systemd = charger.root / "etc/systemd/system"
    assert "User=evse-agent\n" in (systemd / "evse-agent.service").read_text()
    assert f"ReadWritePaths={state}\n" in (systemd / "evse-agent.service.d/state-dir.conf").read_text()
    for name in ("evse-agent-reboot.path", "evse-agent-switch.path", "evse-agent-install.path"):
        assert os.readlink(systemd / "paths.target.wants" / name) == f"/etc/systemd/system/{name}"
    # the units as installed (paths under this test's root) pass systemd's own check
    units = [systemd / n for n in ("evse-agent.service", "evse-agent-reboot.service", "evse-agent-switch.service",
                                   "evse-agent-install.service", "evse-agent-reboot.path", "evse-agent-switch.path",
                                   "evse-agent-install.path")]
    v = await asyncio.create_subprocess_exec("systemd-analyze", "verify", *map(str, units),
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await v.communicate()
    assert (v.returncode, out.decode()) == (0, ""), out.decode()


def test_usage_errors_and_unreachable_controller(tmp_path: Path, sshd: SshServer) -> None:
    r = tool("flash", "ftp://x", "b.bundle", "--trust", "x.pem")
    assert r.returncode == 2 and "expected ssh://user@host[:port] or dir:///path" in r.stderr
    r = tool("status", f"ssh://{sshd.user}@127.0.0.1:1{tmp_path}", *sshd.tool_options)
    assert r.returncode == 4 and "cannot reach the controller" in r.stderr
    r = tool("status", f"dir://{tmp_path}/no-such-card")
    assert r.returncode == 4 and "is the SD card mounted there?" in r.stderr
    for command in ("build", "flash", "status", "rollback", "commission", "selftest"):
        r = tool(command, "--help")
        assert r.returncode == 0 and "exit codes:" in r.stdout


async def test_commission_security_profile_3_installs_the_certificates(charger: Charger, tmp_path: Path) -> None:
    """``--security-profile 3``: a real configuration key, the CSMS root and the charge point's certificate and
    key installed in the agent's state directory (the key 0600), all checked before anything is written."""
    from firmware.config import parse_config
    from sim.harness.pki import issue_charge_point_cert, make_ca, make_tls_pki

    pki = make_tls_pki(tmp_path / "pki", charge_point_serial=CP_ID)
    assert pki.charge_point is not None
    config = charger.config.with_name("tls.toml")
    config.write_text(charger.config.read_text().replace('csms_url = "ws://', 'csms_url = "wss://')
                      .replace(f'password = "{PASSWORD}"\n', ""))
    url = f"dir://{charger.root}"
    files = ["--csms-ca", str(pki.csms_root.path), "--cp-cert", str(pki.charge_point.cert)]
    r = await atool("commission", url, "--config", config, "--security-profile", "3", *files)
    assert r.returncode == 78 and "cp_cert and cp_key" in r.stderr and "nothing was written" in r.stderr
    stranger = issue_charge_point_cert(make_ca(tmp_path / "other", "Other"), tmp_path / "other", CP_ID)
    r = await atool("commission", url, "--config", config, "--security-profile", "3", *files,
                    "--cp-key", str(stranger.key))
    assert r.returncode == 78 and "charge point certificate" in r.stderr, r.stderr  # not the certificate's key
    assert not (charger.root / "etc/evse-agent/agent.toml").exists()

    r = await atool("commission", url, "--config", config, "--security-profile", "3", *files,
                    "--cp-key", str(pki.charge_point.key))
    assert r.returncode == 0, r.stderr
    state = charger.root / "var/lib/evse-agent"
    assert f"security      profile 3, password none, CSMS root {state}/certs/csms-root.pem, charge point " \
        f"certificate {state}/certs/charge-point.pem" in r.stdout
    written = charger.root / "etc/evse-agent/agent.toml"
    agent = parse_config(written.read_text(), str(written))
    assert agent.ocpp is not None and agent.ocpp.security_profile == 3
    assert agent.ocpp.csms_ca == str(state / "certs/csms-root.pem") and agent.ocpp.cp_key is not None
    installed = {k: state / f"certs/{k}.pem" for k in ("csms-root", "charge-point", "charge-point-key")}
    assert installed["csms-root"].read_bytes() == pki.csms_root.path.read_bytes()
    assert installed["charge-point-key"].read_bytes() == pki.charge_point.key.read_bytes()
    assert installed["charge-point-key"].stat().st_mode & 0o777 == 0o600
    r = await atool("commission", url, "--config", written, "--security-profile", "2")
    assert r.returncode == 78 and "ocpp.security_profile is 3, not 2" in r.stderr


async def test_rollback_across_a_schema_change_restores_the_database_and_the_older_agent_delivers_the_queue(
        charger: Charger, sshd: SshServer, bundles: Bundles) -> None:
    """Issue 13: the new agent migrates the database during its health check (schema 7), queues meter values while
    the CSMS will not have it, and fails; the rollback brings the snapshot (schema 6) back with those messages in it,
    and the older agent opens it and delivers them (before, it refused the newer schema: exit 74, no restart)."""
    url, ssh = sshd.url(charger.root), sshd.tool_options
    trust = ["--trust", str(bundles.signer.ca_cert)]
    state = charger.root / "var/lib/evse-agent"
    charger.config.write_text(charger.sim.agent_config(str(state), OcppSettings(
        charger.csms.url, PASSWORD, presets={"ClockAlignedDataInterval": "1"})))  # a meter value every second
    assert (await atool("commission", url, *ssh, "--config", charger.config)).returncode == 0
    r = await atool("flash", url, bundles.v1, *trust, *ssh, *FAST_HEALTH)
    assert r.returncode == 0, r.stdout + r.stderr
    db = Database(state / "agent.db")
    schema = db.version
    db.close()

    profile = charger.csms.behaviour.profiles[CP_ID]
    profile.password = "not-the-chargers-password"  # the CSMS refuses the new slot: what it records stays queued
    switched_at = time.time()
    r = await atool("flash", url, bundles.migrating, *trust, *ssh, "--csms-optional", "--health-settle", "3",
                    "--health-timeout", "30")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "does not ping the systemd watchdog" in r.stdout
    assert f"rolled back: slot a (1.0.0) is active again; the database is back to schema {schema}" in r.stderr
    assert active_link(charger.root) == "slots/a"
    info = status(url, *ssh)
    assert "restored schema" in info["history"][-1]["database"]
    aside = [p for p in state.iterdir() if p.name.startswith("agent.db.rolled-back-")]
    assert len(aside) == 1  # what the new slot left, kept for inspection

    db = Database(state / "agent.db")  # the older agent's code opens it (the newer schema: StorageError, exit 74)
    assert db.version == schema
    with db.read() as conn:
        queued = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM outbox WHERE action = 'MeterValues'")]
    db.close()
    from_new_slot = [m for m in queued if m["meterValue"][0]["timestamp"] >= time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(switched_at))]
    assert from_new_slot, queued

    profile.password = PASSWORD
    account = status(url, *ssh)["account"]
    target = parse_target(f"dir://{charger.root}", python=agent_python(), ssh_options=[], local_exec=True)
    agent = await asyncio.create_subprocess_shell(
        target.firmware_command("opt/evse-agent/current", ["run", "--config", str(charger.root / CONFIG)], account),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        wanted = {m["meterValue"][0]["timestamp"] for m in from_new_slot}

        def delivered() -> set[str]:
            return {e.payload["meterValue"][0]["timestamp"]
                    for e in charger.csms.transcript.messages(CP_ID, action="MeterValues")
                    if e.direction == Direction.FROM_CP and isinstance(e.payload, dict)}
        await wait_for(lambda: wanted <= delivered(), 60, "the older agent delivering the new slot's queue")
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        await agent.wait()
