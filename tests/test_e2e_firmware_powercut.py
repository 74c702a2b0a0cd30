"""A power cut (SIGKILL of the agent process) at every step of an update from the CSMS, end to end: the real agent
runs out of A/B slots in a controller root it may write (as in tests/test_e2e_firmware.py), against the simulated
charger and CSMS, and is started again as systemd would (the slot switch applied at its next start). Each case is a
whole update (the next version, into the other slot) with one cut at its own instant, picked on an event the CSMS
or the agent's log shows; then every time: the charger runs a working slot and says its version, the update ends
once (exactly one final FirmwareStatusNotification, none lost), every transaction has its StopTransaction and the
agent's outbox is empty. One station for the module: the cases follow each other, each from what the last left.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from firmware.maintenance import slots
from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from tests.bundles import slot_station, small_bundle
from tests.pki import Signer, make_signer
from tests.station import CP_ID, Station

pytestmark = pytest.mark.asyncio(loop_scope="module")

FINAL = ("Installed", "InstallationFailed", "DownloadFailed")
#: Where the cut falls, in the order of an update.
CUTS = ["scheduled", "downloading", "downloaded", "verified", "installing", "waiting_idle_with_transaction",
        "switched_before_restart", "new_slot_before_confirmation", "rolling_back"]
#: The job's recorded step when the cut fell (the later ones: the agent moved on in the few ms the kill took).
STEPS_AT_CUT = {"scheduled": {"scheduled"}, "downloading": {"downloading"},
                "downloaded": {"downloading", "verifying", "staging", "waiting_idle", "switching"},
                "verified": {"verifying", "staging", "waiting_idle", "switching"},
                "installing": {"staging", "waiting_idle", "switching"},
                "waiting_idle_with_transaction": {"waiting_idle"}, "switched_before_restart": {"switching"},
                "new_slot_before_confirmation": {"checking"}, "rolling_back": {"rolling_back"}}


def version_of(cut: str) -> str:
    return f"2.{CUTS.index(cut)}.0"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    where = tmp_path_factory.mktemp("files")
    signer = make_signer(where / "pki")
    small_bundle(where / "v1.bundle", signer, "1.0.0")
    for cut in CUTS:
        small_bundle(where / f"{cut}.bundle", signer, version_of(cut))
    return where, signer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def station(tmp_path_factory: pytest.TempPathFactory, files: tuple[Path, Signer]) -> AsyncIterator[Station]:
    where, signer = files
    async with slot_station(tmp_path_factory.mktemp("controller"), where / "v1.bundle", signer, where) as s:
        yield s


def calls(s: Station, action: str, since: int) -> list[TranscriptEntry]:
    return [e for e in s.csms.transcript.messages(CP_ID, action=action, since=since)
            if e.kind == EntryKind.CALL and e.direction == Direction.FROM_CP]


def last_status_is(s: Station, connector: int, since: int, status: str) -> bool:
    return s.statuses(connector, since)[-1:] == [status]


def log_step(step: str) -> Callable[[dict], bool]:  # type: ignore[type-arg]
    return lambda e: e.get("msg") == "firmware update step" and e.get("step") == step


@pytest.mark.parametrize("cut", CUTS)
async def test_a_power_cut_at_every_step_of_an_update_leaves_a_working_slot(station: Station, cut: str) -> None:
    s = station
    root: Path = s.root  # type: ignore[attr-defined]
    files = s.csms.files
    assert files is not None
    old_slot = slots.active_slot(str(root))
    old_version = slots.info(str(root))["slots"][old_slot]["version"]
    new_slot = "b" if old_slot == "a" else "a"
    version = version_of(cut)
    mark, lines = s.mark(), len(s.log())
    tx_id = await s.start_session(1) if cut == "waiting_idle_with_transaction" else None
    retrieve = datetime.now(UTC) + timedelta(seconds=2 if cut == "scheduled" else 0)
    if cut == "downloading":
        files.faults.holding.clear()
        files.faults.release.clear()
        files.faults.hold_after = 100_000
    if cut == "new_slot_before_confirmation":
        s.profile.boot_statuses = ["Pending"]  # the new version is up but not (yet) accepted
    if cut == "rolling_back":
        s.profile.boot_statuses = ["Rejected"]  # the CSMS will not have the new version: it goes back
    when: dict[str, Callable[[], Awaitable[object]]] = {
        "scheduled": lambda: s.wait_log(lambda e: e.get("msg") == "firmware update scheduled", since=lines),
        "downloading": lambda: s.wait_until(
            lambda: any(p.stat().st_size > 0 for p in (root / "var/lib/evse-agent/firmware-download").glob("*.part")),
            what="half the file downloaded"),
        "downloaded": lambda: s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Downloaded",
                                          since=mark),
        "verified": lambda: s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Installing",
                                        since=mark),
        "installing": lambda: s.wait_log(log_step("staging"), since=lines),
        "waiting_idle_with_transaction": lambda: s.wait_log(log_step("waiting_idle"), since=lines),
        "switched_before_restart": lambda: s.wait_log(
            lambda e: e.get("msg") == "firmware switch requested; restarting", since=lines),
        "new_slot_before_confirmation": lambda: s.wait_call(
            "BootNotification", lambda e: e.payload["firmwareVersion"] == version, since=mark),
        "rolling_back": lambda: s.wait_log(log_step("rolling_back"), since=lines, timeout_s=60),
    }
    answer = await s.csms.update_firmware(CP_ID, s.csms.file_url(f"{cut}.bundle"),
                                          retrieve.isoformat(timespec="seconds").replace("+00:00", "Z"),
                                          retries=2, retry_interval=1)
    assert answer == {}
    await when[cut]()
    job_file = root / "var/lib/evse-agent/firmware-update.json"
    await s.kill_agent()
    assert s.exit_codes[-1] == -9
    step_at_cut = json.loads(job_file.read_text())["step"]
    assert step_at_cut in STEPS_AT_CUT[cut], step_at_cut
    await s.start_agent(supervised=True, wait_boot=False)  # as systemd would, after a power loss
    files.faults.release.set()
    s.profile.boot_statuses = ["Accepted"]  # (after a rollback: the old version is welcome again)
    if tx_id is not None:
        s.ev(1).unplug()  # the cut ended the charge; the driver leaves

    final = await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] in FINAL, since=mark,
                              timeout_s=60)
    outcome = "InstallationFailed" if cut == "rolling_back" else "Installed"
    statuses = [e.payload["status"] for e in calls(s, "FirmwareStatusNotification", mark)]
    assert final.payload["status"] == outcome, (cut, statuses)
    # the charger runs a working slot (the new one, or the old one after a rollback), which says its version
    running_slot, running_version = (old_slot, old_version) if cut == "rolling_back" else (new_slot, version)
    assert slots.active_slot(str(root)) == running_slot
    if cut != "rolling_back":
        assert slots.info(str(root))["slots"][new_slot]["health"] == "passed"
    assert slots.info(str(root))["slots"][running_slot]["version"] == running_version
    assert [b.payload["firmwareVersion"] for b in calls(s, "BootNotification", mark)][-1] == running_version
    for connector in (1, 2):  # held while installing, released after (before or after the final status is sent)
        await s.wait_until(partial(last_status_is, s, connector, mark, "Available"),
                           what=f"connector {connector} Available again")
    job = json.loads(job_file.read_text())
    assert (job["step"], job["outcome"], job["reported"]) == ("done", outcome, True)
    # once: no second final status, none before it
    assert [x for x in statuses if x in FINAL] == [outcome] and statuses[-1] == outcome, statuses
    assert statuses[0] == "Downloading" and "Installing" in statuses, statuses
    if cut == "downloading":  # the second attempt went on from what the first had written
        gets = [r for r in files.faults.requests if r[1] == f"/{cut}.bundle"]
        assert gets[0][2] == "" and gets[-1][2].startswith("bytes=") and gets[-1][2] != "bytes=0-", gets
    if outcome == "Installed":
        await s.wait_call("SecurityEventNotification", lambda e: e.payload["type"] == "FirmwareUpdated", since=mark)
    # nothing lost: every transaction ended and was delivered, nothing left in the outbox
    if tx_id is not None:
        stop = await s.wait_call("StopTransaction", lambda e: e.payload["transactionId"] == tx_id, since=mark)
        assert stop.payload["reason"] == "PowerLoss"
    starts = [e.seq for e in calls(s, "StartTransaction", mark)]
    assert len(calls(s, "StopTransaction", mark)) == len(starts)
    await s.wait_until(lambda: s.outbox() == [], what="the outbox delivered")
    events = [e.payload["type"] for e in calls(s, "SecurityEventNotification", mark)]
    assert events.count("FirmwareUpdated") == (1 if outcome == "Installed" else 0), events
