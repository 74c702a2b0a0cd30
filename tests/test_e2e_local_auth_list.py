"""End to end: Local Auth List Management (OCPP 1.6 §3.5.2, §5.10, §5.15) — OCTT TC_042_1/_2 (GetLocalListVersion),
TC_043 and TC_043_1/_2/_3 (SendLocalList), a 100,000-entry list across a power cut and a Differential update that
fails half-way, offline refusal of listed ids that are not valid whatever AllowOfflineTxForUnknownId says, and
LocalListConflict.

The agent is a real process; the list goes in through the simulated CSMS's SendLocalList. What the charger does
with it is read from the hardware (contactor), the agent's session log lines and the CSMS's transcript; what is
on disk from the agent's database, opened read-only. The one-connector tests that need no restart share one station
(``one``; their keys set at their start), put back after each (tests/station_neutral.py); the others have their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sim.csms import local_list
from sim.csms.ocppj import check_payload
from sim.csms.server import CallErrorReceived
from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import Shared, configure, neutral_after, shared_station
from tests.test_e2e_offline_auth import _contactor, _sessions, _tap, _tap_refused

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"
OTHER = "04D4E5F6"
BLOCKED = "04BB0001"
EXPIRED = "04EE0002"
PAST_DATE = "04EE0003"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("list1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


async def _version(s: Station) -> int:
    return int((await s.csms.get_local_list_version(CP_ID))["listVersion"])


async def _send(s: Station, version: int, update_type: str, entries: list[dict[str, Any]] | None = None) -> str:
    return str((await s.csms.send_local_list(CP_ID, version, update_type, entries))["status"])


def _rows(s: Station, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{s.storage_dir / 'agent.db'}?mode=ro", uri=True, timeout=WAIT_S)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def _started_offline_from_the_list(s: Station, card: str) -> None:
    before = len(_sessions(s, "TransactionStarted"))
    await _tap(s, card)
    await s.wait_until(lambda: len(_sessions(s, "TransactionStarted")) > before, WAIT_S, f"{card} started")
    assert _sessions(s, "TransactionStarted")[-1]["auth_source"] == "local_list"
    await s.wait_until(lambda: _contactor(s), WAIT_S, "charging")


async def test_keys_versions_and_the_list_switched_off(one: Station) -> None:
    """TC_042_2 (an empty list: 0, also after a Full update without a list), TC_042_1 (LocalAuthListEnabled false:
    -1) and TC_043_1 (then SendLocalList NotSupported, and the list does not authorize)."""
    s = one
    keys = {k["key"]: k for k in (await s.csms.get_configuration(CP_ID))["configurationKey"]}
    assert "LocalAuthListManagement" in keys["SupportedFeatureProfiles"]["value"].split(",")
    assert (keys["LocalAuthListEnabled"]["value"], keys["LocalAuthListEnabled"]["readonly"]) == ("true", False)
    assert (keys["LocalAuthListMaxLength"]["value"], keys["LocalAuthListMaxLength"]["readonly"]) == ("100000", True)
    assert (keys["SendLocalListMaxLength"]["value"], keys["SendLocalListMaxLength"]["readonly"]) == ("1000", True)
    assert await _version(s) == 0
    assert await _send(s, 1, "Full") == "Accepted"  # TC_042_2: listVersion 1, no list
    assert await _version(s) == 0
    assert await _send(s, 3, "Full", [local_list.entry(CARD)]) == "Accepted"
    assert await _version(s) == 3
    assert (await s.csms.change_configuration(CP_ID, "LocalAuthListEnabled", "false"))["status"] == "Accepted"
    assert await _version(s) == -1  # TC_042_1
    assert await _send(s, 4, "Full", [local_list.entry(OTHER)]) == "NotSupported"  # TC_043_1
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, CARD, "Unknown")  # on the (switched off) list: not authorized by it
    await s.csms.set_online(True)
    await s.wait_booted(since=mark)
    assert (await s.csms.change_configuration(CP_ID, "LocalAuthListEnabled", "true"))["status"] == "Accepted"
    assert await _version(s) == 3  # the list as it was before, not the refused one
    assert _rows(s, "SELECT id_tag FROM local_auth_list") == [(CARD,)]
    assert not s.calls("StartTransaction", mark)


async def test_full_then_differential_update_authorize_offline(one: Station) -> None:
    """TC_043: a Full update, then a Differential one; the ids on the list are authorized by it."""
    s = one
    assert await _send(s, 1, "Full", [local_list.entry(CARD, parent_id_tag="FLEET")]) == "Accepted"
    assert await _send(s, 2, "Differential", [local_list.entry(OTHER, parent_id_tag="FLEET")]) == "Accepted"
    assert await _version(s) == 2
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _started_offline_from_the_list(s, OTHER)  # added by the Differential update
    await _tap(s, CARD)  # same group (parentIdTag from the list): stops it, offline
    await s.wait_until(lambda: not _contactor(s), WAIT_S, "stopped by the group's other card")
    await s.csms.set_online(True)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["idTag"] == CARD and stop.payload["reason"] == "Local"
    assert s.calls("StartTransaction", mark)[0].payload["idTag"] == OTHER
    assert not s.calls("Authorize", mark)


async def test_version_mismatch_and_failed_updates_leave_the_list(one: Station) -> None:
    """TC_043_2 (a Differential update not above the current version: VersionMismatch) and TC_043_3 (Failed:
    more entries than SendLocalListMaxLength, an id twice, a Full entry without idTagInfo), the list unchanged."""
    s = one
    assert await _send(s, 2, "Full", [local_list.entry(CARD)]) == "Accepted"
    assert await _version(s) == 2
    assert await _send(s, 5, "Differential", [local_list.entry(OTHER, "Blocked")]) == "Accepted"
    assert await _version(s) == 5
    assert await _send(s, 5, "Differential", [local_list.entry(BLOCKED, "Blocked")]) == "VersionMismatch"
    assert await _send(s, 4, "Differential", [local_list.entry(BLOCKED, "Blocked")]) == "VersionMismatch"
    assert await _version(s) == 5
    before = _rows(s, "SELECT * FROM local_auth_list ORDER BY key")
    too_many = [local_list.entry(f"{i:08X}") for i in range(1_001)]
    assert await _send(s, 6, "Full", too_many) == "Failed"
    assert await _send(s, 6, "Differential", too_many) == "Failed"
    assert await _send(s, 6, "Full", [local_list.entry(BLOCKED), local_list.entry(BLOCKED.lower())]) == "Failed"
    assert await _send(s, 6, "Full", [local_list.entry(BLOCKED), local_list.entry(CARD, None)]) == "Failed"
    # beyond the RPC layer's bound on a payload: refused before validation, with a CALLERROR
    try:
        await _send(s, 6, "Full", [local_list.entry(f"{i:08X}") for i in range(3_000)])
    except CallErrorReceived as exc:
        assert exc.code == "OccurenceConstraintViolation"
    else:
        raise AssertionError("3,000 entries were not refused with a CALLERROR")
    assert await _version(s) == 5
    assert _rows(s, "SELECT * FROM local_auth_list ORDER BY key") == before


async def test_listed_ids_that_are_not_valid_are_refused_offline_even_for_unknown_ids_allowed(one: Station) -> None:
    s = one
    await configure(s, {"AllowOfflineTxForUnknownId": "true"})
    assert await _send(s, 1, "Full", [
        local_list.entry(BLOCKED, "Blocked"), local_list.entry(EXPIRED, "Expired"),
        local_list.entry(PAST_DATE, expiry_date=datetime.now(UTC) - timedelta(minutes=1))]) == "Accepted"
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, BLOCKED, "Blocked")
    await _tap_refused(s, EXPIRED, "Expired")
    await _tap_refused(s, PAST_DATE, "Expired")  # Accepted on the list, but its expiryDate has passed
    await _tap(s, OTHER)  # not on the list: AllowOfflineTxForUnknownId lets it start
    await s.wait_until(lambda: _contactor(s), WAIT_S, "unknown id charging offline")
    assert _sessions(s, "TransactionStarted")[-1]["auth_source"] == "offline_allowed"
    assert not s.calls(since=mark)


async def test_a_start_transaction_answer_contradicting_the_list_is_reported_as_local_list_conflict(
        one: Station) -> None:
    """The list says Accepted (LocalPreAuthorize: the charge starts without Authorize), the CSMS's
    StartTransaction.conf says Blocked: StatusNotification on connector 0 with LocalListConflict; the CSMS's answer
    is acted on (DeAuthorized), the list is not changed and the id goes into no cache."""
    s = one
    s.csms.behaviour.id_tags.block(CARD)
    await configure(s, {"LocalPreAuthorize": "true"})
    assert await _send(s, 7, "Full", [local_list.entry(CARD)]) == "Accepted"
    mark = s.mark()
    s.ev(1).plug()
    await _tap(s, CARD)
    conflict = await s.wait_status(0, "Available", since=mark, error_code="LocalListConflict")
    assert conflict.payload["info"] == "list Accepted, CSMS Blocked"
    start = s.calls("StartTransaction", mark)[0]
    assert start.seq < conflict.seq and not s.calls("Authorize", mark)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["reason"] == "DeAuthorized"
    assert await _version(s) == 7
    assert _rows(s, "SELECT id_tag, status FROM local_auth_list") == [(CARD, "Accepted")]
    assert _rows(s, "SELECT key FROM auth_cache") == []


async def test_a_list_of_100000_survives_a_power_cut_and_a_differential_update_failing_half_way(
        tmp_path: Path) -> None:
    """LocalAuthListMaxLength entries sent as a CSMS sends them (100 requests), the agent killed (SIGKILL) and
    restarted: the whole list and its version are there. A Differential update that would take the list past
    its maximum fails after its rows were written: Failed, and the old list is still there, whole."""
    size, chunk = 100_000, 1_000
    entries = [local_list.entry(f"AA{i:06X}", "Blocked" if i % 10 == 0 else "Accepted") for i in range(size)]
    parts = local_list.chunked(entries, 1, chunk)
    for part in parts[:2]:  # a Full and a Differential request: the rest have the same shape
        assert check_payload("SendLocalList", part.payload()) is None
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent()
        sent = await s.csms.push_local_list(CP_ID, entries, chunk=chunk, validate=False)
        assert sent == [(v, "Accepted") for v in range(1, 101)]
        await s.kill_agent()
        await s.start_agent()
        assert await _version(s) == 100
        assert _rows(s, "SELECT COUNT(*), SUM(status = 'Blocked') FROM local_auth_list") == [(size, size // 10)]
        new = [local_list.entry(f"BB{i:06X}") for i in range(chunk)]
        assert await _send(s, 101, "Differential", new) == "Failed"
        assert await _version(s) == 100
        assert _rows(s, "SELECT COUNT(*) FROM local_auth_list WHERE key LIKE 'bb%'") == [(0,)]
        assert _rows(s, "SELECT COUNT(*) FROM local_auth_list") == [(size,)]
        await s.csms.set_online(False)
        s.ev(1).plug()
        await _tap_refused(s, "BB000001", "Unknown")  # of the failed update: not on the list
        await _tap_refused(s, "AA00000A", "Blocked")
        await _started_offline_from_the_list(s, "AA01869F")  # the last entry of the last request


async def test_tc_008_id_in_the_list_starts_without_authorize_identification_first_and_plug_first(
        tmp_path: Path) -> None:
    """TC_008: LocalPreAuthorize true, AuthorizationCacheEnabled false, an id sent in the list: presented, it is
    authorized by the list at once (Preparing, no Authorize.req), and the EV plugged in afterwards starts the
    transaction (StartTransaction, Charging). Then the other order: plugged in first, the listed id starts it."""
    async with Station(tmp_path, connectors=2, presets={"LocalPreAuthorize": "true",
                                                        "AuthorizationCacheEnabled": "false"}) as s:
        await s.start_agent()
        s.csms.behaviour.id_tags.accept(CARD, OTHER)  # the CSMS agrees with its list: no LocalListConflict
        assert await _version(s) == 0
        assert await _send(s, 1, "Full", [local_list.entry(CARD), local_list.entry(OTHER)]) == "Accepted"
        mark = s.mark()
        await _tap(s, CARD)  # identification first
        await s.wait_status(1, "Preparing", since=mark)
        s.ev(1).plug()
        start = await s.wait_call("StartTransaction", since=mark)
        assert start.payload["idTag"] == CARD and start.payload["connectorId"] == 1
        await s.wait_status(1, "Charging", since=mark)
        s.ev(2).plug()  # plug first, on the other connector
        await s.wait_status(2, "Preparing", since=mark)
        await _tap(s, OTHER)
        second = await s.wait_call("StartTransaction", lambda e: e.payload["connectorId"] == 2, since=mark)
        assert second.payload["idTag"] == OTHER
        await s.wait_status(2, "Charging", since=mark)
        assert not s.calls("Authorize", mark)  # the list answered both, online
        assert _rows(s, "SELECT COUNT(*) FROM auth_cache") == [(0,)]  # and nothing went into the cache
        assert not [e for e in s.calls("StatusNotification", mark) if e.payload["errorCode"] == "LocalListConflict"]
