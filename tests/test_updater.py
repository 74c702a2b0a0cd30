"""The update pipeline (firmware/maintenance/updater.py) with the real slots (SlotsInstaller on a controller root in a
directory), real signed bundles, a real HTTP server, run as a process of its own (tests/updater_runner.py) so that it
can be killed with SIGKILL right after each step is written: every time the job resumes and ends with the new slot
active, the held connectors released and the outcome reported. Also: retries then DownloadFailed, a refused bundle
(nothing installed), and a failed health check after the switch (rolled back, InstallationFailed)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.maintenance import privileged, slots
from firmware.maintenance.installers import PrivilegedInstaller, SlotsInstaller
from firmware.maintenance.updater import (
    JOB_FILE,
    FirmwareStatus,
    FirmwareUpdater,
    InstallError,
    JobStore,
    Step,
    UpdateJob,
    UpdaterSettings,
)
from firmware.storage import Database
from firmware.storage.outbox import Outbox
from tests.bundles import install_first, small_bundle
from tests.file_servers import HttpFileServer, http_file_server
from tests.pki import Signer, make_signer
from tests.updater_runner import FileHold

REPO = Path(__file__).resolve().parents[1]
STEPS = ["scheduled", "downloading", "verifying", "staging", "waiting_idle", "holding", "switching", "checking",
         "done"]  # holding: inside waiting_idle, once the connectors are Unavailable


@dataclass
class Setup:
    where: Path
    root: Path
    server: HttpFileServer
    signer: Signer

    def configure(self, location: str, **extra: object) -> None:
        (self.where / "settings.json").write_text(json.dumps({
            "root": str(self.root), "state": str(self.root / "var/lib/evse-agent"),
            "trust": str(self.signer.ca_cert), "location": location, **extra}))

    def run(self, kill_at: str = "never", runs: int = 8) -> list[int]:
        """The runner until it finishes (restarted after a kill or a restart request, as systemd would)."""
        codes = []
        for _ in range(runs):
            r = subprocess.run([sys.executable, "-m", "tests.updater_runner", str(self.where), kill_at], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
            codes.append(r.returncode)
            assert r.returncode in (0, -9, 75), r.stderr
            if r.returncode == 0:
                return codes
        raise AssertionError(f"did not finish in {runs} runs: {codes}")

    def job(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.root / "var/lib/evse-agent" / JOB_FILE).read_text())  # type: ignore[no-any-return]

    def statuses(self) -> list[str]:
        return (self.where / "statuses.txt").read_text().split()

    def connectors(self) -> dict[str, bool]:
        return json.loads((self.where / "connectors.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def setup(tmp_path: Path, signer: Signer) -> Iterator[Setup]:
    root = tmp_path / "controller"
    state = root / "var/lib/evse-agent"  # storage.dir, as the controller sees it
    state.mkdir(parents=True)
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/agent.toml").write_text(f'[storage]\ndir = "{state}"\n')
    Database(state / "agent.db").close()
    (tmp_path / "srv").mkdir()
    install_first(root, small_bundle(tmp_path / "srv/v1.bundle", signer, "1.0.0"))
    small_bundle(tmp_path / "srv/v2.bundle", signer, "1.1.0")
    with http_file_server(tmp_path / "srv") as server:
        yield Setup(tmp_path, root, server, signer)


def in_order(seen: list[str], expected: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


@pytest.mark.parametrize("kill_at", STEPS)
def test_kill_9_at_every_step_ends_installed(setup: Setup, kill_at: str) -> None:
    setup.configure(setup.server.url("v2.bundle"))
    codes = setup.run(kill_at)
    assert -9 in codes and 75 in codes  # killed once, restarted once for the switch
    job = setup.job()
    assert (job["step"], job["outcome"], job["reported"]) == ("done", "Installed", True), job
    assert slots.active_slot(str(setup.root)) == "b"
    assert slots.info(str(setup.root))["slots"]["b"]["version"] == "1.1.0"
    assert slots.info(str(setup.root))["slots"]["b"]["health"] == "passed"
    assert (setup.root / "opt/evse-agent/snapshots/before-b.db").is_file()  # the database before b first ran
    assert setup.connectors() == {"1": True, "2": True}  # held while installing, released after
    statuses = setup.statuses()
    assert in_order(statuses, ["Downloading", "Downloaded", "Installing", "Installed"]), statuses
    assert statuses[-1] == "Installed"


def test_download_failed_after_the_retries(setup: Setup) -> None:
    setup.configure("http://127.0.0.1:1/v2.bundle", retries=2)  # nothing listens there
    assert setup.run() == [0]
    job = setup.job()
    assert (job["outcome"], job["attempt"]) == ("DownloadFailed", 3)
    assert setup.statuses() == ["Downloading"] * 3 + ["DownloadFailed"]
    assert slots.active_slot(str(setup.root)) == "a" and not slots.info(str(setup.root))["slots"]["b"]["installed"]


def test_a_refused_bundle_installs_nothing(setup: Setup, tmp_path: Path) -> None:
    stranger = make_signer(tmp_path / "stranger", "Someone else")
    small_bundle(setup.server.root / "evil.bundle", stranger, "6.6.6")
    setup.configure(setup.server.url("evil.bundle"))
    assert setup.run() == [0]
    job = setup.job()
    assert job["outcome"] == "InstallationFailed" and "signature does not verify" in job["detail"]
    assert setup.statuses() == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert slots.active_slot(str(setup.root)) == "a" and not slots.info(str(setup.root))["slots"]["b"]["installed"]
    assert setup.connectors() == {"1": True, "2": True}


def test_a_download_replaced_before_its_verification_is_refused_though_signed(setup: Setup) -> None:
    """The download's digest is recorded with the job (hashed on the way, no second read): a file replaced between
    the download and the verification — here by another validly signed bundle, during a power cut — is not what
    was downloaded and is refused; nothing is installed."""
    setup.configure(setup.server.url("v2.bundle"))
    r = subprocess.run([sys.executable, "-m", "tests.updater_runner", str(setup.where), "verifying"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    job = setup.job()
    assert job["step"] == "verifying" and len(job["sha256"]) == 64
    part = setup.root / "var/lib/evse-agent/firmware-download" / f"{job['id']}.part"
    assert slots.sha256_file(part) == job["sha256"]
    shutil.copyfile(small_bundle(setup.where / "other.bundle", setup.signer, "6.6.6"), part)
    assert setup.run() == [0]
    job = setup.job()
    assert job["outcome"] == "InstallationFailed" and "changed after it was downloaded" in job["detail"], job
    assert slots.active_slot(str(setup.root)) == "a" and not slots.info(str(setup.root))["slots"]["b"]["installed"]


def test_a_job_with_a_request_id_and_no_signing_certificate_has_the_extended_statuses(setup: Setup,
                                                                                        tmp_path: Path) -> None:
    """2.0.1's UpdateFirmware without a signature (L02): no signature over the file to check (no SignatureVerified),
    the extended statuses all the same (InstallRebooting before the switch); a bundle refused is then
    InstallVerificationFailed, not 1.6 Core's InstallationFailed."""
    setup.configure(setup.server.url("v2.bundle"), request_id=7)
    assert setup.run() == [75, 0]
    assert setup.statuses() == ["Downloading", "Downloaded", "Installing", "InstallRebooting", "Installed"]
    assert (setup.job()["request_id"], slots.active_slot(str(setup.root))) == (7, "b")

    small_bundle(setup.server.root / "evil.bundle", make_signer(tmp_path / "stranger", "Someone else"), "6.6.6")
    (setup.root / "var/lib/evse-agent" / JOB_FILE).unlink()
    (setup.where / "statuses.txt").unlink()
    setup.configure(setup.server.url("evil.bundle"), request_id=8)
    assert setup.run() == [0]
    assert setup.statuses() == ["Downloading", "Downloaded", "InstallVerificationFailed"]
    assert slots.active_slot(str(setup.root)) == "b"


@pytest.mark.parametrize("kill_at", ["never", "rolling_back"])
def test_a_failed_health_check_after_the_switch_rolls_back(setup: Setup, kill_at: str) -> None:
    """Also with a power cut right after the rollback was decided, before the switch back was asked for: the new
    slot's agent, started again, asks for it again and the old slot runs in the end."""
    setup.configure(setup.server.url("v2.bundle"), health_problem="not accepted by the CSMS within 5 s")
    # restarted into b, then back into a (after the cut: b again, which asks again)
    assert setup.run(kill_at) == ([75, 75, 0] if kill_at == "never" else [75, -9, 75, 0])
    job = setup.job()
    assert job["outcome"] == "InstallationFailed"
    assert job["detail"] == "not accepted by the CSMS within 5 s; rolled back to 1.0.0 (slot a)"
    assert slots.active_slot(str(setup.root)) == "a"
    assert setup.statuses()[-1] == "InstallationFailed" and "Installed" not in setup.statuses()
    assert setup.connectors() == {"1": True, "2": True}


class PathUnit:
    """What evse-agent-install.path does under systemd: when the request appears, run the root side once."""

    def __init__(self, run_dir: Path, root: Path) -> None:
        self.run_dir, self.root = run_dir, root
        self.results: list[dict] = []  # type: ignore[type-arg]

    async def serve(self) -> None:
        request = self.run_dir / "install-bundle"
        while True:
            if request.exists():
                self.results.append(await asyncio.to_thread(slots.apply_install_request, str(self.root),
                                                            str(request)))
            await asyncio.sleep(0.05)


async def test_the_privileged_install_verifies_again_as_root_and_refuses_what_the_agent_cannot_vouch_for(
        setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent under its unit may not write the slots: it asks root (firmware/maintenance/privileged.py), which
    copies the bundle out of the agent's reach and verifies it against the configuration's trust anchor itself."""
    state = setup.root / "var/lib/evse-agent"
    trust = setup.root / "etc/evse-agent/firmware-trust.pem"  # root's, as commissioning leaves it
    shutil.copyfile(setup.signer.ca_cert, trust)
    (setup.root / "etc/evse-agent/agent.toml").write_text(
        f'[storage]\ndir = "{state}"\n[firmware]\ntrust = "{trust}"\n')
    (setup.root / "etc/evse-agent/hardware-revision").write_text("rev-c\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    unit = PathUnit(run_dir, setup.root)
    task = asyncio.create_task(unit.serve())
    try:
        installer = PrivilegedInstaller(str(setup.root), state)
        good = tmp_path / "good.part"
        shutil.copyfile(setup.server.root / "v2.bundle", good)
        sha = slots.sha256_file(good)
        assert await installer.stage(good, sha, good.stat().st_size) == "b"
        assert unit.results[-1]["installed"] is True
        assert slots.info(str(setup.root))["slots"]["b"]["version"] == "1.1.0"
        assert slots.active_slot(str(setup.root)) == "a"  # installed, not switched
        assert not (state / slots.DOWNLOADS / f"{sha}.bundle").exists()

        stranger = make_signer(tmp_path / "stranger", "Someone else")  # the agent was fooled, or is not honest
        evil = small_bundle(tmp_path / "evil.part", stranger, "6.6.6")
        with pytest.raises(InstallError, match=r"root refused the install: .*signature does not verify"):
            await installer.stage(evil, slots.sha256_file(evil), evil.stat().st_size)
        assert slots.info(str(setup.root))["slots"]["b"]["version"] == "1.1.0"  # untouched

        lie = tmp_path / "lie.part"
        shutil.copyfile(setup.server.root / "v1.bundle", lie)  # named by another bundle's hash
        with pytest.raises(InstallError, match="does not match the verified bundle"):
            await installer.stage(lie, sha, lie.stat().st_size)
    finally:
        task.cancel()


def switch_root(tmp_path: Path, signer: Signer) -> Path:
    """Slot a runs 1.0.0; slot b holds 1.1.0, never run."""
    root = tmp_path / "controller"
    state = root / "var/lib/evse-agent"
    state.mkdir(parents=True)
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/agent.toml").write_text(f'[storage]\ndir = "{state}"\n')
    Database(state / "agent.db").close()
    install_first(root, small_bundle(tmp_path / "v1.bundle", signer, "1.0.0"))
    v2 = small_bundle(tmp_path / "v2.bundle", signer, "1.1.0")
    sha, size = slots.sha256_file(v2), v2.stat().st_size
    shutil.copyfile(v2, slots.prepare_upload(str(root), sha, size)["path"])
    slots.install(str(root), sha, size)
    return root


@pytest.mark.parametrize("agent", ["confirms", "is silent", "gives up"])
def test_root_keeps_a_new_slot_only_once_its_agent_confirms(tmp_path: Path, signer: Signer, agent: str) -> None:
    """The switch unit's wait after a slot's first run (slots.apply_switch_request): the new agent confirms (kept,
    passed), says nothing (it may not even start: switched back after the time limit, FAILED), or asks to go back
    (switched back at once)."""
    root = switch_root(tmp_path, signer)
    run = tmp_path / "run"
    run.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run)}
    request = privileged.request_switch("b", env)
    assert request is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the switch unit, waiting
        waiting = pool.submit(slots.apply_switch_request, str(root), str(request),
                              confirm_timeout_s=30.0 if agent != "is silent" else 1.0)
        deadline = time.monotonic() + 30
        while slots.active_slot(str(root)) != "b":  # the new agent runs
            assert time.monotonic() < deadline, "no switch"
            time.sleep(0.02)
        if agent == "confirms":
            privileged.confirm_slot("b", env)
        elif agent == "gives up":
            privileged.request_switch("a", env)
        result = waiting.result(30)
    info = slots.info(str(root))
    if agent == "confirms":
        assert result["confirmed"] is True and info["active"] == "b" and info["slots"]["b"]["health"] == "passed"
        assert not (run / privileged.CONFIRM).exists()
    else:
        assert result["confirmed"] is False and info["active"] == "a" and info["slots"]["b"]["health"] == "FAILED"
        reason = "the new agent asked to go back" if agent == "gives up" else "did not confirm within 1 s"
        assert reason in info["history"][-1]["event"] and not request.exists()


def test_a_stale_confirmation_does_not_keep_a_slot(tmp_path: Path, signer: Signer) -> None:
    """A ``slot-confirmed`` left from an earlier switch (nobody consumed it) is removed before the next switch: the
    new slot's agent must confirm this run itself."""
    root = switch_root(tmp_path, signer)
    run = tmp_path / "run"
    run.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run)}
    privileged.confirm_slot("b", env)  # stale
    request = privileged.request_switch("b", env)
    assert request is not None
    result = slots.apply_switch_request(str(root), str(request), confirm_timeout_s=1.0)
    assert result["confirmed"] is False and slots.active_slot(str(root)) == "a"


async def test_a_job_checking_a_slot_the_controller_switched_back_from_ends_installation_failed(
        tmp_path: Path, signer: Signer) -> None:
    """The new slot's agent did not confirm in time and root (or the simulator's slot runner) switched back: the old
    agent finds the job still `checking`. It reports InstallationFailed and does not confirm the slot it does not
    run, even though its own CSMS connection is fine."""
    root = switch_root(tmp_path, signer)
    state = root / "var/lib/evse-agent"
    slots.record_health(str(root), "b", {"ok": False, "stage": "running", "detail": "did not confirm"})
    JobStore(state).save(UpdateJob(id="j", location="http://x/v2.bundle", retrieve_at=0.0, retries=0,
                                   retry_interval_s=0.0, step=Step.CHECKING, version="1.1.0", slot="b",
                                   previous_slot="a", previous_version="1.0.0", status="Installing"))
    seen: list[str] = []

    async def report(status: FirmwareStatus) -> None:
        seen.append(status.value)
    installer = SlotsInstaller(str(root), state)
    settings = UpdaterSettings((), None, 1 << 20, 5.0, 5.0)
    updater = FirmwareUpdater(state, settings, installer, FileHold(tmp_path / "connectors.json"), lambda: None, report)
    await asyncio.wait_for(updater.run_job(), 10)
    assert seen == ["InstallationFailed"]
    assert updater.job is not None and "slot b (1.1.0) was not kept: its health check is FAILED" in updater.job.detail
    assert slots.info(str(root))["slots"]["b"]["health"] == "FAILED" and slots.active_slot(str(root)) == "a"


def _install_traced(setup: Setup, prelude: str = "") -> tuple[list[str], str]:
    """slots.install of v2 in a process under strace: its file system calls, and the staging directory."""
    bundle = setup.where / "srv/v2.bundle"
    sha, size = slots.sha256_file(bundle), bundle.stat().st_size
    shutil.copyfile(bundle, slots.prepare_upload(str(setup.root), sha, size)["path"])
    trace = setup.where / "strace.txt"
    subprocess.run(["strace", "-f", "-qq", "-y", "-o", str(trace), "-e",
                    "trace=openat,write,syncfs,fsync,rename,renameat,renameat2", sys.executable, "-c",
                    f"import sys; from firmware.maintenance import slots; {prelude}"
                    "slots.install(sys.argv[1], sys.argv[2], int(sys.argv[3]))", str(setup.root), sha, str(size)],
                   check=True, cwd=REPO, timeout=60)
    assert slots.info(str(setup.root))["slots"]["b"]["version"] == "1.1.0"
    return trace.read_text().splitlines(), f"{setup.root}/opt/evse-agent/slots/b.new"


def _call(line: str) -> str:
    return line.split(None, 1)[-1]  # "<pid> call(...) = result", the pid padded


def test_the_new_slot_is_on_disk_before_it_is_renamed_into_place(setup: Setup) -> None:
    """Durability of the install, seen in its system calls (strace): every file of the new slot written, then one
    syncfs of the staging directory's file system (it writes back and waits for every dirty file, directory and
    the journal), and only then the rename of ``b.new`` to ``b``, whose directory is fsynced after."""
    calls, staging = _install_traced(setup)
    synced = [i for i, c in enumerate(calls) if "syncfs(" in c and f"<{staging}>" in c and c.endswith("= 0")]
    renamed = [i for i, c in enumerate(calls) if "rename" in c and f'"{staging}"' in c]
    written = [i for i, c in enumerate(calls) if _call(c).startswith("write(") and f"<{staging}/" in c]
    assert len(synced) == 1 and len(renamed) == 1 and written, (synced, renamed, len(written))
    assert written[-1] < synced[0] < renamed[0]  # all written, then on disk, then in place
    assert any("fsync(" in c and f"<{setup.root}/opt/evse-agent/slots>" in c for c in calls[renamed[0]:])


def test_without_syncfs_every_file_is_fsynced_before_the_rename(setup: Setup) -> None:
    """Where there is no syncfs, the fallback: each file and directory of the new slot fsynced, after the last
    write and before the rename."""
    calls, staging = _install_traced(setup, "slots._syncfs_call = lambda: None; ")
    renamed = next(i for i, c in enumerate(calls) if "rename" in c and f'"{staging}"' in c)
    assert not any("syncfs(" in c for c in calls)
    slot = setup.root / "opt/evse-agent/slots/b"
    files = {f"{staging}/{p.relative_to(slot)}" for p in slot.rglob("*") if p.is_file()}  # as they were written
    last_write = max(i for i, c in enumerate(calls) if _call(c).startswith("write(") and f"<{staging}/" in c)
    fsynced = {m.group(1) for c in calls[last_write:renamed] if _call(c).startswith("fsync(")
               and (m := re.search(rf"<({re.escape(staging)}[^>]*)>", c))}
    assert files and files <= fsynced, sorted(files - fsynced)[:5]
    assert staging in fsynced  # the directories too


@pytest.mark.parametrize("kill_at", ["answered", "queued", "never"])
def test_firmware_updated_is_queued_exactly_once_across_a_kill_9(tmp_path: Path, kill_at: str) -> None:
    """Killed after the CSMS answered Installed but before the event, or after the event was queued but before the
    job was recorded as reported: the next start reports Installed again, and FirmwareUpdated is in the outbox once
    (tests/firmware_event_runner.py: the real updater, 1.6 adapter, security events and outbox)."""
    JobStore(tmp_path).save(UpdateJob(id="job-7", location="http://csms/fw.bundle", retrieve_at=0.0, retries=0,
                                      retry_interval_s=0.0, step=Step.DONE, version="1.1.0", slot="b",
                                      previous_slot="a", previous_version="1.0.0", outcome="Installed"))
    codes = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-m", "tests.firmware_event_runner", str(tmp_path), kill_at], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        codes.append(r.returncode)
        assert r.returncode in (0, -9), r.stderr
        if r.returncode == 0:
            break
    assert codes == ([-9, 0] if kill_at != "never" else [0])
    answered = [json.loads(line) for line in (tmp_path / "answered.jsonl").read_text().splitlines()]
    assert answered == [["FirmwareStatusNotification", {"status": "Installed"}]] * len(codes)  # again after a kill
    db = Database(tmp_path / "agent.db")
    try:
        events = [m.payload for m in Outbox(db).peek() if m.action == "SecurityEventNotification"]
    finally:
        db.close()
    assert [(e["type"], e.get("techInfo")) for e in events] == [
        ("FirmwareUpdated", "firmware 1.0.0 -> 1.1.0 (slot b)")]
    assert JobStore(tmp_path).load().reported  # type: ignore[union-attr]
