"""OCPP 2.0.1 end to end, block D (Local Authorization List) and the C cases of the list, the cache, GroupId and a
local stop: one test per OCTT 2.0.1 charging-station test case (Part 6), named after it, on one agent process and
simulated station shared by the module (one EVSE, the simulated 2.0.1 CSMS). Each test leaves the station as it
found it: no EV plugged, no transaction, the CSMS online, the list empty and the cache cleared, the variables it
changed put back (the autouse fixture makes sure of the first four; each test of the last).

The other C cases are in tests/test_e2e_ocpp201_cfg.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.station import CP_ID, WAIT_S, Station
from tests.test_e2e_ocpp201_cfg import (
    authorizes,
    cache_accepted,
    last_status,
    open_transactions,
    plug,
    set_variables,
    start_transaction,
    started,
    stop_transaction,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"  # accepted by the CSMS, never on the list


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("auth201"), ocpp="2.0.1", connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def neutral(station: Station) -> AsyncIterator[Station]:
    """After each test: the CSMS online, no EV, no transaction, the list empty and the cache cleared."""
    yield station
    s = station
    if not s.csms.online:
        await s.csms.set_online(True)
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    plugged, since = s.ev(1).plugged, len(s.log())
    s.ev(1).unplug()
    for tx_id in open_transactions(s):
        await s.csms.request_stop_transaction(CP_ID, tx_id, timeout_s=WAIT_S)
    if plugged:  # the agent itself saw the EV leave: a plug offline was never reported, so the CSMS's last status
        # (Available from before) says nothing, and the next test's plug would come before the agent noticed this unplug
        await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == 1
                         and e.get("status") == "Available", since=since, what="the agent saw the EV unplugged")
    await s.wait_until(lambda: last_status(s, 1) == "Available", what="EVSE 1 Available")
    await s.wait_until(lambda: not open_transactions(s), what="every transaction ended")
    assert (await send_list(s, 1, "Full", None))["status"] == "Accepted"
    assert (await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S))["status"] == "Accepted"


def entry(token: str, status: str | None = "Accepted") -> dict[str, Any]:
    """An AuthorizationData; without ``status`` no idTokenInfo (a Differential removal)."""
    data: dict[str, Any] = {"idToken": {"idToken": token, "type": "ISO14443"}}
    if status is not None:
        data["idTokenInfo"] = {"status": status}
    return data


async def send_list(s: Station, version: int, update_type: str, entries: list[dict[str, Any]] | None) -> Any:
    payload: dict[str, Any] = {"versionNumber": version, "updateType": update_type}
    if entries is not None:
        payload["localAuthorizationList"] = entries
    return await s.csms.call(CP_ID, "SendLocalList", payload, timeout_s=WAIT_S)


async def list_version(s: Station) -> int:
    return int((await s.csms.call(CP_ID, "GetLocalListVersion", {}, timeout_s=WAIT_S))["versionNumber"])


async def entries_count(s: Station) -> int:
    answer = await s.csms.get_variables(CP_ID, ["LocalAuthListCtrlr.Entries"], timeout_s=WAIT_S)
    return int(answer["getVariableResult"][0]["attributeValue"])


async def go_offline(s: Station) -> None:
    await s.csms.set_online(False)
    await s.csms.wait_disconnected(CP_ID, timeout_s=WAIT_S)


async def refused_locally(s: Station, token_status: str, source: str, since: int) -> None:
    """Until the agent logs the presented idToken refused from ``source`` with ``token_status``, no CSMS asked."""
    await s.wait_log(lambda e: e.get("msg") == "authorized without the CSMS" and e.get("source") == source
                     and e.get("status") == token_status, since=since, what=f"refused: {token_status} in {source}")


async def restore(s: Station, old: dict[str, str]) -> None:
    """The CSMS online again and the variables put back."""
    if not s.csms.online:
        await s.csms.set_online(True)
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    await set_variables(s, old)


def contactor_closed(s: Station) -> bool:
    return bool(s.charger.connector_state(1)["contactor_closed"])


# --- D Local Authorization List ----------------------------------------------------------------------------------


async def test_tc_d_01_cs_send_local_list_full(station: Station) -> None:
    """TC_D_01_CS Send Local Authorization List - Full: Accepted; GetLocalListVersion the version sent."""
    s = station
    assert (await send_list(s, 2, "Full", [entry("D0010001"), entry("D0010002", "Blocked")]))["status"] == "Accepted"
    assert await list_version(s) == 2
    assert await entries_count(s) == 2


async def test_tc_d_02_cs_send_local_list_differential_update(station: Station) -> None:
    """TC_D_02_CS Send Local Authorization List - Differential Update: an idToken added, the version sent."""
    s = station
    assert (await send_list(s, 2, "Full", [entry("D0020001")]))["status"] == "Accepted"
    assert (await send_list(s, 3, "Differential", [entry("D0020002")]))["status"] == "Accepted"
    assert await list_version(s) == 3
    assert await entries_count(s) == 2


async def test_tc_d_03_cs_send_local_list_differential_remove(station: Station) -> None:
    """TC_D_03_CS Send Local Authorization List - Differential Remove: an entry without idTokenInfo removes its
    idToken; the version sent. The removed token, presented offline, is no longer known (refused)."""
    s = station
    assert (await send_list(s, 2, "Full", [entry("D0030001"), entry("D0030002")]))["status"] == "Accepted"
    assert (await send_list(s, 3, "Differential", [entry("D0030001", None)]))["status"] == "Accepted"
    assert await list_version(s) == 3
    assert await entries_count(s) == 1


async def test_tc_d_04_cs_send_local_list_full_with_empty_list(station: Station) -> None:
    """TC_D_04_CS Send Local Authorization List - Full with empty list (no localAuthorizationList: the schema wants
    at least one entry when it is there): Accepted, every idToken removed; GetLocalListVersion 0, which D02
    reserves for an empty list."""
    s = station
    assert (await send_list(s, 2, "Full", [entry("D0040001")]))["status"] == "Accepted"
    assert (await send_list(s, 3, "Full", None))["status"] == "Accepted"
    assert await entries_count(s) == 0
    assert await list_version(s) == 0


async def test_tc_d_05_cs_send_local_list_differential_with_empty_list(station: Station) -> None:
    """TC_D_05_CS Send Local Authorization List - Differential with empty list: Accepted, the entries kept, the
    version the one sent."""
    s = station
    assert (await send_list(s, 2, "Full", [entry("D0050001")]))["status"] == "Accepted"
    assert (await send_list(s, 3, "Differential", None))["status"] == "Accepted"
    assert await list_version(s) == 3
    assert await entries_count(s) == 1


async def test_tc_d_06_cs_send_local_list_version_mismatch(station: Station) -> None:
    """TC_D_06_CS Send Local Authorization List - VersionMismatch: a Differential update below the current version
    is VersionMismatch, the list and its version unchanged."""
    s = station
    assert (await send_list(s, 3, "Full", [entry("D0060001")]))["status"] == "Accepted"
    assert (await send_list(s, 2, "Differential", [entry("D0060002")]))["status"] == "VersionMismatch"
    assert await list_version(s) == 3
    assert await entries_count(s) == 1


async def test_tc_d_07_cs_send_local_list_persistent_over_reboot(station: Station) -> None:
    """TC_D_07_CS Send Local Authorization List - Persistent over reboot: the list and its version after a restart
    of the agent; its idToken authorized from it offline."""
    s = station
    s.csms.behaviour.id_tags.accept("D0070001")  # the CSMS knows what it listed
    assert (await send_list(s, 2, "Full", [entry("D0070001")]))["status"] == "Accepted"
    await s.stop_agent()
    await s.start_agent()
    assert await list_version(s) == 2
    assert await entries_count(s) == 1
    old = await set_variables(s, {"AuthCtrlr.LocalAuthorizeOffline": "true"})
    try:
        await go_offline(s)
        await plug_offline(s)
        await s.tap("D0070001")
        await s.wait_until(lambda: contactor_closed(s), what="charging on the kept list")
    finally:
        await restore(s, old)


async def test_tc_d_08_cs_get_local_list_version(station: Station) -> None:
    """TC_D_08_CS Get Local List Version - Success: the version of the last update; 0 with no list."""
    s = station
    assert await list_version(s) == 0
    assert (await send_list(s, 7, "Full", [entry("D0080001")]))["status"] == "Accepted"
    assert await list_version(s) == 7


async def test_tc_d_10_cs_get_local_list_version_function_disabled(station: Station) -> None:
    """TC_D_10_CS Get Local List Version - Function disabled: LocalAuthListCtrlr.Enabled false — version 0 (no list
    in use), SendLocalList Failed; the stored list back once enabled again."""
    s = station
    assert (await send_list(s, 4, "Full", [entry("D0100001")]))["status"] == "Accepted"
    old = await set_variables(s, {"LocalAuthListCtrlr.Enabled": "false"})
    try:
        assert await list_version(s) == 0
        assert (await send_list(s, 5, "Full", [entry("D0100002")]))["status"] == "Failed"
    finally:
        await restore(s, old)
    assert await list_version(s) == 4


async def test_send_local_list_failed_over_items_per_message(station: Station) -> None:
    """SendLocalList with more entries than LocalAuthListCtrlr.ItemsPerMessage (1000): Failed, nothing changed."""
    s = station
    assert (await send_list(s, 5, "Full", [entry("D0000001")]))["status"] == "Accepted"
    over = [entry(f"BB{i:06d}") for i in range(1001)]
    assert (await send_list(s, 9, "Full", over))["status"] == "Failed"
    assert await list_version(s) == 5
    assert await entries_count(s) == 1


# --- C Authorization through the Local Authorization List -------------------------------------------------------


async def test_tc_c_21_cs_offline_local_list_accepted(station: Station) -> None:
    """TC_C_21_CS Offline authorization through local authorization list - Accepted: a transaction of a listed
    idToken runs; offline the idToken presented again is authorized from the list and stops it; after the reconnect
    the events go out flagged offline, one with triggerReason StopAuthorized, then Ended."""
    s = station
    token = "C0210001"
    s.csms.behaviour.id_tags.accept(token)  # the CSMS knows what it listed
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "false"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token)]))["status"] == "Accepted"
        tx_id = await start_transaction(s, 1, token)
        await go_offline(s)
        await s.tap(token)
        await s.wait_until(lambda: not contactor_closed(s), what="stopped offline")
        s.ev(1).unplug()
        mark = s.mark()
        await s.csms.set_online(True)
        end = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
        assert end.payload["transactionInfo"]["transactionId"] == tx_id
        events = [e.payload for e in s.calls("TransactionEvent", mark)]
        stop = [e for e in events if e["triggerReason"] == "StopAuthorized"]
        assert stop and all(e.get("offline") is True for e in stop)
        assert stop[0]["idToken"]["idToken"] == token
    finally:
        await restore(s, old)


@pytest.mark.parametrize(("case", "status"), [("TC_C_22_CS", "Invalid"), ("TC_C_23_CS", "Blocked"),
                                              ("TC_C_24_CS", "Expired")])
async def test_offline_local_list_not_accepted(station: Station, case: str, status: str) -> None:
    """TC_C_22_CS (Invalid), TC_C_23_CS (Blocked), TC_C_24_CS (Expired) — Offline authorization through local
    authorization list: the listed idToken with that status is refused offline, no energy, no transaction."""
    s = station
    token = f"C0{case[5:7]}0001"
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "false"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token, status)]))["status"] == "Accepted"
        await go_offline(s)
        await plug_offline(s)
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, status, "local_list", since)
        assert not contactor_closed(s)
        s.ev(1).unplug()
        mark = s.mark()
        await s.csms.set_online(True)
        await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
        await s.wait_until(lambda: last_status(s, 1) == "Available", what="EVSE 1 Available")
        assert [e for e in s.calls("TransactionEvent", mark) if e.payload.get("idToken", {}).get("idToken") == token
                ] == []
    finally:
        await restore(s, old)


async def test_tc_c_25_cs_offline_local_list_over_the_cache(station: Station) -> None:
    """TC_C_25_CS Offline authorization through local authorization list - Local Authorization List > Authorization
    Cache: an idToken cached Accepted, then listed Invalid, is refused offline (the list speaks first), even with
    OfflineTxForUnknownIdEnabled."""
    s = station
    token = "C0250001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "true",
                                  "TxCtrlr.StopTxOnInvalidId": "false"})
    try:
        await cache_accepted(s, 1, token)
        assert (await send_list(s, 2, "Full", [entry(token, "Invalid")]))["status"] == "Accepted"
        await go_offline(s)
        await plug_offline(s)
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, "Invalid", "local_list", since)
        assert not contactor_closed(s)
    finally:
        await restore(s, old)


async def plug_offline(s: Station) -> None:
    """The EV plugged in while the CSMS cannot be told: until the agent logs the connector Preparing."""
    since = len(s.log())
    s.ev(1).plug()
    await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == 1
                     and e.get("status") == "Preparing", since=since, what="EV plugged in")


async def test_tc_c_27_cs_online_local_list_accepted(station: Station) -> None:
    """TC_C_27_CS Online authorization through local authorization list - Accepted: with LocalPreAuthorize the
    listed idToken starts the transaction without an AuthorizeRequest."""
    s = station
    token = "C0270001"
    s.csms.behaviour.id_tags.accept(token)  # the CSMS knows what it listed
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token)]))["status"] == "Accepted"
        mark = s.mark()
        tx_id = await start_transaction(s, 1, token)
        assert authorizes(s, token, mark) == []
        await stop_transaction(s, tx_id)
    finally:
        await restore(s, old)


@pytest.mark.parametrize(("case", "status"), [("TC_C_28_CS", "Invalid"), ("TC_C_29_CS", "Blocked"),
                                              ("TC_C_30_CS", "Expired")])
async def test_online_local_list_not_accepted(station: Station, case: str, status: str) -> None:
    """TC_C_28_CS (Invalid & Not Accepted), TC_C_29_CS (Blocked), TC_C_30_CS (Expired) — Online authorization
    through local authorization list: the listed idToken with that status is sent in an AuthorizeRequest (the CSMS
    may know better, C14.FR.03); the CSMS saying the same, no transaction — the next accepted idToken starts one."""
    s = station
    token = f"C0{case[5:7]}0001"
    s.csms.behaviour.id_tags.set(token, status)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token, status)]))["status"] == "Accepted"
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="Authorize of the listed idToken")
        await s.tap(CARD)
        first = await s.wait_call("TransactionEvent", started(), since=mark)
        assert first.payload["idToken"]["idToken"] == CARD
        await stop_transaction(s, first.payload["transactionInfo"]["transactionId"])
    finally:
        await restore(s, old)


async def test_tc_c_31_cs_online_local_list_invalid_and_accepted(station: Station) -> None:
    """TC_C_31_CS Online authorization through local authorization list - Invalid & Accepted: the list (outdated)
    says Invalid, the CSMS Accepted: the CSMS's answer is acted on, the transaction starts; the list is unchanged."""
    s = station
    token = "C0310001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token, "Invalid")]))["status"] == "Accepted"
        mark = s.mark()
        tx_id = await start_transaction(s, 1, token)
        assert len(authorizes(s, token, mark)) == 1
        await stop_transaction(s, tx_id)
        assert await list_version(s) == 2 and await entries_count(s) == 1
    finally:
        await restore(s, old)


# --- C Authorization Cache --------------------------------------------------------------------------------------


async def test_tc_c_12_cs_cache_invalid_and_accepted(station: Station) -> None:
    """TC_C_12_CS Authorization through authorization cache - Invalid & Accepted: an idToken cached Invalid is sent
    in an AuthorizeRequest again; the CSMS now says Accepted: the transaction starts."""
    s = station
    token = "C0120001"
    s.csms.behaviour.id_tags.set(token, "Invalid")
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)  # cached Invalid
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="the first Authorize")
        s.csms.behaviour.id_tags.accept(token)
        await s.tap(token)
        event = await s.wait_call("TransactionEvent", started(token, 1), since=mark)
        assert len(authorizes(s, token, mark)) == 2
        await stop_transaction(s, event.payload["transactionInfo"]["transactionId"])
    finally:
        await restore(s, old)


async def test_tc_c_33_cs_cache_updated_by_authorize_response(station: Station) -> None:
    """TC_C_33_CS Store Authorization Data in the Authorization Cache - Update on AuthorizeResponse: an idToken
    cached Accepted, then answered Blocked in an AuthorizeResponse (LocalPreAuthorize false): the cache holds
    Blocked — offline the idToken is refused from the cache, although unknown ones would be let in."""
    s = station
    token = "C0330001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "false", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "true"})
    try:
        await cache_accepted(s, 1, token)
        s.csms.behaviour.id_tags.set(token, "Blocked")
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="Authorize")
        response = await s.csms.transcript.wait_for_response(authorizes(s, token, mark)[0], timeout_s=WAIT_S)
        assert response.payload["idTokenInfo"]["status"] == "Blocked"
        await go_offline(s)
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, "Blocked", "cache", since)
        assert not contactor_closed(s)
    finally:
        await restore(s, old)


async def test_tc_c_34_cs_cache_updated_by_transaction_event_response(station: Station) -> None:
    """TC_C_34_CS Store Authorization Data in the Authorization Cache - Update on TransactionEventResponse: an
    idToken cached Accepted starts from the cache (LocalPreAuthorize); the TransactionEventResponse says Blocked:
    the cache holds Blocked (StopTxOnInvalidId: the transaction ends) — offline the idToken is refused from it."""
    s = station
    token = "C0340001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "true",
                                  "TxCtrlr.StopTxOnInvalidId": "true"})
    try:
        await cache_accepted(s, 1, token)
        s.csms.behaviour.id_tags.set(token, "Blocked")
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)
        event = await s.wait_call("TransactionEvent", started(token, 1), since=mark)
        assert authorizes(s, token, mark) == []
        tx_id = event.payload["transactionInfo"]["transactionId"]
        end = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended"
                                and e.payload["transactionInfo"]["transactionId"] == tx_id, since=mark)
        assert end.payload["triggerReason"] == "Deauthorized"
        # the cable stays locked for its owner after a deauthorization (docs/authorization.md): the CSMS unlocks it
        assert (await s.csms.unlock_connector_201(CP_ID, 1, timeout_s=WAIT_S))["status"] == "Unlocked"
        s.ev(1).unplug()
        await s.wait_until(lambda: last_status(s, 1) == "Available", what="EVSE 1 Available")
        await go_offline(s)
        await plug_offline(s)
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, "Blocked", "cache", since)
        assert not contactor_closed(s)
    finally:
        await restore(s, old)


@pytest.mark.parametrize(("case", "stop", "max_energy"), [("TC_C_15_CS", "false", "10000"), ("TC_C_16_CS", "true", "0"),
                                                          ("TC_C_17_CS", "false", "0"),
                                                          ("TC_C_18_CS", "true", "500")])
async def test_cached_id_token_offline_then_invalid(station: Station, case: str, stop: str, max_energy: str) -> None:
    """TC_C_15_CS (StopTxOnInvalidId false, MaxEnergyOnInvalidId > 0), TC_C_16_CS (true), TC_C_17_CS (false),
    TC_C_18_CS (true, MaxEnergyOnInvalidId > 0) — Authorization through authorization cache: an idToken cached
    Accepted starts a transaction offline; after the reconnect its events go out flagged offline and the CSMS
    answers Invalid. StopTxOnInvalidId true: the transaction ends (Deauthorized), whatever MaxEnergyOnInvalidId;
    false: it goes on — the energy within MaxEnergyOnInvalidId (still Charging), none with 0 (SuspendedEVSE)."""
    s = station
    token = f"C0{case[5:7]}0001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCtrlr.LocalAuthorizeOffline": "true",
                                  "AuthCtrlr.OfflineTxForUnknownIdEnabled": "false",
                                  "TxCtrlr.StopTxOnInvalidId": stop, "TxCtrlr.MaxEnergyOnInvalidId": max_energy})
    try:
        await cache_accepted(s, 1, token)
        s.csms.behaviour.id_tags.set(token, "Invalid")
        await go_offline(s)
        await plug_offline(s)
        await s.tap(token)
        await s.wait_until(lambda: contactor_closed(s), what="charging offline from the cache")
        mark = s.mark()
        await s.csms.set_online(True)
        event = await s.wait_call("TransactionEvent", started(token, 1), since=mark)
        assert event.payload.get("offline") is True
        tx_id = event.payload["transactionInfo"]["transactionId"]
        response = await s.csms.transcript.wait_for_response(event, timeout_s=WAIT_S)
        assert response.payload["idTokenInfo"]["status"] == "Invalid"
        if stop == "true":
            end = await s.wait_call("TransactionEvent", ended_tx(tx_id), since=mark)
            assert end.payload["triggerReason"] == "Deauthorized"
            assert (await s.csms.unlock_connector_201(CP_ID, 1, timeout_s=WAIT_S))["status"] == "Unlocked"
        elif max_energy == "0":
            suspended = await s.wait_call("TransactionEvent", lambda e: e.payload["transactionInfo"].get(
                "chargingState") == "SuspendedEVSE", since=mark)
            assert suspended.payload["triggerReason"] == "EnergyLimitReached"  # an allowance of none, reached
            await s.wait_until(lambda: not contactor_closed(s), what="no energy")  # the event goes first
        else:
            trigger = s.mark()
            answer = await s.csms.trigger_message_201(CP_ID, "TransactionEvent", evse_id=1, timeout_s=WAIT_S)
            assert answer["status"] == "Accepted"
            update = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "Trigger",
                                       since=trigger)
            assert update.payload["transactionInfo"]["chargingState"] == "Charging" and contactor_closed(s)
        if stop == "false":
            assert not [e for e in s.calls("TransactionEvent", mark) if e.payload["triggerReason"] == "Deauthorized"]
    finally:
        await restore(s, old)


def ended_tx(tx_id: str) -> Any:
    return lambda e: e.payload["eventType"] == "Ended" and e.payload["transactionInfo"]["transactionId"] == tx_id


async def test_tc_c_57_cs_cache_disable_post_authorize(station: Station) -> None:
    """TC_C_57_CS Authorization through authorization cache - AuthCacheDisablePostAuthorize: an idToken cached
    Invalid, presented again with LocalPreAuthorize and AuthCacheCtrlr.DisablePostAuthorize true, is refused from
    the cache — no AuthorizeRequest, no transaction."""
    s = station
    token = "C0570001"
    s.csms.behaviour.id_tags.set(token, "Invalid")
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCacheCtrlr.DisablePostAuthorize": "true"})
    try:
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)  # unknown here: Authorize, the answer cached Invalid
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="the first Authorize")
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, "Invalid", "cache", since)
        assert len(authorizes(s, token, mark)) == 1 and not contactor_closed(s)
    finally:
        await restore(s, old)


async def test_tc_c_58_cs_local_list_disable_post_authorize(station: Station) -> None:
    """TC_C_58_CS Online authorization through local authorization list - LocalAuthListDisablePostAuthorize: an
    idToken listed Invalid, presented with LocalPreAuthorize and LocalAuthListCtrlr.DisablePostAuthorize true, is
    refused from the list — no AuthorizeRequest, no transaction."""
    s = station
    token = "C0580001"
    s.csms.behaviour.id_tags.accept(token)  # the CSMS would let it in: it is not asked
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true",
                                  "LocalAuthListCtrlr.DisablePostAuthorize": "true"})
    try:
        assert (await send_list(s, 2, "Full", [entry(token, "Invalid")]))["status"] == "Accepted"
        mark = s.mark()
        await plug(s, 1)
        since = len(s.log())
        await s.tap(token)
        await refused_locally(s, "Invalid", "local_list", since)
        assert authorizes(s, token, mark) == [] and not contactor_closed(s)
    finally:
        await restore(s, old)


async def test_tc_e_52_cs_disable_remote_authorization(station: Station) -> None:
    """TC_E_52_CS Local start transaction - Authorization first - DisableRemoteAuthorization: with
    AuthCtrlr.DisableRemoteAuthorization true an idToken neither listed nor cached (the CSMS would accept it) is
    refused without an AuthorizeRequest; a listed one starts a transaction, again without one."""
    s = station
    unknown, listed = "E0520001", "E0520002"
    s.csms.behaviour.id_tags.accept(unknown, listed)
    old = await set_variables(s, {"AuthCtrlr.DisableRemoteAuthorization": "true"})
    try:
        assert (await send_list(s, 2, "Full", [entry(listed)]))["status"] == "Accepted"
        mark = s.mark()
        await plug(s, 1)
        since = len(s.log())
        await s.tap(unknown)
        await s.wait_log(lambda e: e.get("msg") == "authorized without the CSMS" and e.get("verdict") == "refuse"
                         and e.get("status") == "Unknown", since=since, what="the unknown idToken refused")
        await s.tap(listed)
        event = await s.wait_call("TransactionEvent", started(listed, 1), since=mark)
        assert s.calls("Authorize", mark) == []
        await stop_transaction(s, event.payload["transactionInfo"]["transactionId"])
    finally:
        await restore(s, old)


async def test_tc_c_46_cs_cache_lifetime(station: Station) -> None:
    """TC_C_46_CS Store Authorization Data in the Authorization Cache - AuthCacheLifeTime: an idToken cached
    Accepted is no longer authorized from the cache once AuthCacheCtrlr.LifeTime has passed since it was stored:
    with LocalPreAuthorize it is sent in an AuthorizeRequest again."""
    s = station
    token = "C0460001"
    s.csms.behaviour.id_tags.accept(token)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCacheCtrlr.LifeTime": "1"})
    try:
        await cache_accepted(s, 1, token)
        await s.quiet(1.5)  # the lifetime passes: what is under test is the passage of time itself
        mark = s.mark()
        tx_id = await start_transaction(s, 1, token)
        assert len(authorizes(s, token, mark)) == 1
        await stop_transaction(s, tx_id)
    finally:
        await restore(s, old)


# --- C Authorization by GroupId ---------------------------------------------------------------------------------

GROUP = "FLEET0001"


def grouped(token: str, status: str = "Accepted") -> dict[str, Any]:
    """A list entry of the group."""
    return {"idToken": {"idToken": token, "type": "ISO14443"},
            "idTokenInfo": {"status": status, "groupIdToken": {"idToken": GROUP, "type": "Central"}}}


async def known_by(s: Station, source: str, tokens: dict[str, str]) -> None:
    """The CSMS knows ``tokens`` (id → status) in GROUP; ``source`` "list": they are listed so too; "cache": each is
    cached so (an Accepted one by a whole transaction, another by its refused Authorize)."""
    for token, status in tokens.items():
        s.csms.behaviour.id_tags.set(token, status, parent_id_tag=GROUP)
    if source == "list":
        answer = await send_list(s, 2, "Full", [grouped(t, st) for t, st in tokens.items()])
        assert answer["status"] == "Accepted"
    elif source == "cache":
        for token, status in tokens.items():
            if status == "Accepted":
                await cache_accepted(s, 1, token)
            else:
                mark = s.mark()
                await plug(s, 1)
                await s.tap(token)
                await s.wait_until(lambda t=token, m=mark: len(authorizes(s, t, m)) == 1,
                                   what="cached by its Authorize")
                await s.csms.transcript.wait_for_response(authorizes(s, token, mark)[0], timeout_s=WAIT_S)
                s.ev(1).unplug()
                await s.wait_until(lambda: last_status(s, 1) == "Available", what="EVSE 1 Available")


@pytest.mark.parametrize(("case", "source"), [("TC_C_39_CS", "csms"), ("TC_C_40_CS", "list"),
                                              ("TC_C_41_CS", "cache")])
async def test_stop_by_group_id(station: Station, case: str, source: str) -> None:
    """TC_C_39_CS (Success), TC_C_40_CS (with Local Authorization List), TC_C_41_CS (with Authorization Cache) —
    Authorization by GroupId: a transaction started by one idToken is stopped by another of the same groupIdToken
    (StopAuthorized, the other idToken in the event); from the list or the cache without an AuthorizeRequest."""
    s = station
    first, second = f"C0{case[5:7]}0001", f"C0{case[5:7]}0002"
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        await known_by(s, source, {first: "Accepted", second: "Accepted"})
        mark = s.mark()
        tx_id = await start_transaction(s, 1, first)
        await s.tap(second)
        stop = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "StopAuthorized",
                                 since=mark)
        assert stop.payload["transactionInfo"]["transactionId"] == tx_id
        assert stop.payload["idToken"]["idToken"] == second
        asked = authorizes(s, first, mark) + authorizes(s, second, mark)
        assert len(asked) == (2 if source == "csms" else 0)
    finally:
        await restore(s, old)


@pytest.mark.parametrize(("case", "source"), [("TC_C_42_CS", "csms"), ("TC_C_43_CS", "list"),
                                              ("TC_C_44_CS", "cache")])
async def test_not_stopped_by_an_invalid_id_token_of_the_group(station: Station, case: str, source: str) -> None:
    """TC_C_42_CS (Not stopped by GroupId), TC_C_43_CS (Invalid status with Local Authorization List), TC_C_44_CS
    (Invalid status with Authorization Cache) — Authorization by GroupId: an idToken of the same groupIdToken that
    is Invalid (for the CSMS; listed or cached so, it is sent in an AuthorizeRequest) does not stop the transaction."""
    s = station
    first, second = f"C0{case[5:7]}0001", f"C0{case[5:7]}0002"
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        await known_by(s, source, {first: "Accepted", second: "Invalid"})
        mark = s.mark()
        tx_id = await start_transaction(s, 1, first)
        await s.tap(second)
        await s.wait_until(lambda: len(authorizes(s, second, mark)) == 1, what="Authorize of the Invalid idToken")
        await s.csms.transcript.wait_for_response(authorizes(s, second, mark)[0], timeout_s=WAIT_S)
        trigger = s.mark()
        assert (await s.csms.trigger_message_201(CP_ID, "TransactionEvent", evse_id=1,
                                                 timeout_s=WAIT_S))["status"] == "Accepted"
        update = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "Trigger",
                                   since=trigger)
        assert update.payload["transactionInfo"]["chargingState"] == "Charging"
        end = await stop_transaction(s, tx_id)  # still running: stopped by the CSMS
        assert end.payload["transactionInfo"]["stoppedReason"] == "Remote"
        assert not [e for e in s.calls("TransactionEvent", mark) if e.payload["triggerReason"] == "StopAuthorized"]
    finally:
        await restore(s, old)


async def test_tc_c_45_cs_master_pass_cannot_start_a_transaction(station: Station) -> None:
    """TC_C_45_CS Authorization by GroupId - Master pass - Not able to start transaction + groupId (C16.FR.03): with
    AuthCtrlr.MasterPassGroupId set, an idToken the CSMS accepts with that groupIdToken, presented with the EV
    plugged in, is refused as a master pass: no transaction, no energy. (Stopping every transaction with it:
    TC_C_49_CS in tests/test_e2e_ocpp201_cfg.py, on two EVSEs.)"""
    s = station
    master, group = "C0450001", "POLICE0045"
    s.csms.behaviour.id_tags.set(master, "Accepted", parent_id_tag=group)
    old = await set_variables(s, {"AuthCtrlr.MasterPassGroupId": group})
    try:
        mark = s.mark()
        await plug(s, 1)
        since = len(s.log())
        await s.tap(master)
        await s.wait_log(lambda e: e.get("msg") == "session" and e.get("event") == "IdTokenRefused"
                         and e.get("reason") == "master_pass", since=since, what="refused as a master pass")
        assert len(authorizes(s, master, mark)) == 1
        assert not s.calls("TransactionEvent", mark) and not contactor_closed(s)
    finally:
        await restore(s, old)


async def test_tc_c_14_cs_cached_master_pass_stops_the_transaction(station: Station) -> None:
    """TC_C_14_CS Authorization through authorization cache - GroupID equal to MasterPassGroupId: a master pass
    cached Accepted with the MasterPassGroupId as its group (by its AuthorizeResponse, when it was refused as a
    master pass), presented during a transaction with LocalPreAuthorize true, is authorized from the cache — no
    second AuthorizeRequest — and ends the transaction: StopAuthorized, stoppedReason MasterPass."""
    s = station
    master, group = "C0140001", "POLICE0014"
    s.csms.behaviour.id_tags.set(master, "Accepted", parent_id_tag=group)
    old = await set_variables(s, {"AuthCtrlr.MasterPassGroupId": group, "AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        mark = s.mark()
        await plug(s, 1)
        since = len(s.log())
        await s.tap(master)  # unknown here: Authorize; the answer is cached, the master pass starts nothing
        await s.wait_log(lambda e: e.get("msg") == "session" and e.get("reason") == "master_pass", since=since,
                         what="refused as a master pass")
        await s.tap(CARD)
        tx_id = (await s.wait_call("TransactionEvent", started(CARD, 1), since=mark)).payload["transactionInfo"][
            "transactionId"]
        await s.tap(master)
        end = (await s.wait_call("TransactionEvent", ended_tx(tx_id), since=mark)).payload
        assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"], end["idToken"]["idToken"]) == (
            "StopAuthorized", "MasterPass", master)
        assert len(authorizes(s, master, mark)) == 1 and not contactor_closed(s)
    finally:
        await restore(s, old)


async def test_tc_c_04_cs_local_stop_by_a_different_id_token(station: Station) -> None:
    """TC_C_04_CS Local Stop Transaction - Different idToken: another idToken (Accepted, of another group) presented
    during the transaction is sent in an AuthorizeRequest and does not stop it. (An idToken presented during a
    transaction whose idToken has no group is refused without an AuthorizeRequest: nothing could match.)"""
    s = station
    first, second = "C0040001", "C0040002"
    s.csms.behaviour.id_tags.set(first, "Accepted", parent_id_tag=GROUP)
    s.csms.behaviour.id_tags.set(second, "Accepted", parent_id_tag="FLEET0002")
    mark = s.mark()
    tx_id = await start_transaction(s, 1, first)
    await s.tap(second)
    await s.wait_until(lambda: len(authorizes(s, second, mark)) == 1, what="Authorize of the different idToken")
    await s.csms.transcript.wait_for_response(authorizes(s, second, mark)[0], timeout_s=WAIT_S)
    end = await stop_transaction(s, tx_id)  # still running: stopped by the CSMS
    assert end.payload["transactionInfo"]["stoppedReason"] == "Remote"
    assert not [e for e in s.calls("TransactionEvent", mark) if e.payload["triggerReason"] == "StopAuthorized"]


async def test_tc_c_05_cs_invalid_id_token_with_a_cable_lock(station: Station) -> None:
    """TC_C_05_CS Local start transaction - Authorization invalid - Cable lock: an idToken presented before any cable
    (this socket locks the cable only for a transaction) is answered Invalid: no transaction, the lock stays open;
    the EV plugged in afterwards starts nothing until an accepted idToken is presented."""
    s = station
    token = "C0050001"
    s.csms.behaviour.id_tags.set(token, "Invalid")
    mark = s.mark()
    await s.tap(token)
    await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="Authorize")
    await s.csms.transcript.wait_for_response(authorizes(s, token, mark)[0], timeout_s=WAIT_S)
    await plug(s, 1)
    assert not s.cable_locked(1)
    await s.tap(CARD)
    first = await s.wait_call("TransactionEvent", since=mark)
    assert first.payload["eventType"] == "Started" and first.payload["idToken"]["idToken"] == CARD
    await stop_transaction(s, first.payload["transactionInfo"]["transactionId"])
