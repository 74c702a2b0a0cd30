"""OCPP 2.0.1 end to end, blocks C (authorization), F (remote control), G (availability) and the local start and
stop cases of E (transactions): one test per OCTT
2.0.1 charging-station test case (Part 6), named after it, on one agent process and simulated station shared by the
module (two EVSEs, the simulated 2.0.1 CSMS). Each test leaves the station as it found it: no EV plugged, every
EVSE Operative and Available, the CSMS online, the variables it changed put back (the autouse fixture makes sure).

The cases of these blocks already in tests/test_e2e_ocpp201.py are named there (TC_F_01_CS, TC_F_08_CS,
TC_F_09_CS, TC_F_13_CS, TC_F_20_CS, TC_F_23_CS, TC_F_26_CS, TC_F_27_CS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sim.csms.transcript import TranscriptEntry
from tests.station import CP_ID, WAIT_S, Station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"  # accepted by the CSMS
OTHER = "04D4E5F6"  # accepted by the CSMS
EVSES = (1, 2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("cfg201"), ocpp="2.0.1", connectors=2) as s:
        s.csms.behaviour.id_tags.accept(CARD, OTHER)
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def neutral(station: Station) -> AsyncIterator[Station]:
    """After each test: the CSMS online, no EV, every transaction over, the station Operative and Available."""
    yield station
    s = station
    if not s.csms.online:
        await s.csms.set_online(True)
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    for evse in EVSES:
        s.ev(evse).unplug()
    for tx_id in open_transactions(s):
        await s.csms.request_stop_transaction(CP_ID, tx_id, timeout_s=WAIT_S)
    await s.csms.change_availability_201(CP_ID, "Operative", timeout_s=WAIT_S)
    for evse in EVSES:
        await s.wait_until(lambda e=evse: last_status(s, e) == "Available", what=f"EVSE {evse} Available")
    await s.wait_until(lambda: not open_transactions(s), what="every transaction ended")


def last_status(s: Station, evse: int) -> str | None:
    statuses = s.statuses(evse)
    return statuses[-1] if statuses else None


def open_transactions(s: Station) -> list[str]:
    return [t.transaction_id for t in s.csms.state(CP_ID).transactions201.values() if t.is_open]


def started(token: str | None = None, evse: int | None = None) -> Any:
    """A predicate: the Started event (of ``token``, on ``evse``)."""
    def match(e: TranscriptEntry) -> bool:
        p = e.payload
        return bool(p["eventType"] == "Started" and (token is None or p.get("idToken", {}).get("idToken") == token)
                    and (evse is None or p.get("evse", {}).get("id") == evse))
    return match


def ended(tx_id: str) -> Any:
    return lambda e: e.payload["eventType"] == "Ended" and e.payload["transactionInfo"]["transactionId"] == tx_id


def authorizes(s: Station, token: str, since: int) -> list[TranscriptEntry]:
    return [e for e in s.calls("Authorize", since) if e.payload["idToken"]["idToken"] == token]


async def set_variables(s: Station, values: dict[str, str]) -> dict[str, str]:
    """Sets them (each Accepted); returns the values they had, to put back."""
    names = list(values)
    before = await s.csms.get_variables(CP_ID, names, timeout_s=WAIT_S)
    old = {n: r["attributeValue"] for n, r in zip(names, before["getVariableResult"], strict=True)}
    answer = await s.csms.set_variables(CP_ID, values, timeout_s=WAIT_S)
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * len(values), answer
    return old


async def plug(s: Station, evse: int) -> None:
    mark = s.mark()
    s.ev(evse).plug()
    await s.wait_status(evse, "Occupied", since=mark)


async def start_transaction(s: Station, evse: int = 1, card: str = CARD) -> str:
    """EV plugged into ``evse``, ``card`` tapped: until its Started event; the station's transaction id."""
    mark = s.mark()
    await plug(s, evse)
    await s.tap(card)
    event = await s.wait_call("TransactionEvent", started(card, evse), since=mark)
    return str(event.payload["transactionInfo"]["transactionId"])


async def cache_accepted(s: Station, evse: int, token: str) -> None:
    """A whole transaction with ``token`` on ``evse`` (online: its Authorize answer is cached Accepted), the EV
    unplugged again."""
    tx_id = await start_transaction(s, evse, token)
    await stop_transaction(s, tx_id)
    s.ev(evse).unplug()
    await s.wait_until(lambda: last_status(s, evse) == "Available", what=f"EVSE {evse} Available")


async def stop_transaction(s: Station, tx_id: str) -> TranscriptEntry:
    mark = s.mark()
    answer = await s.csms.request_stop_transaction(CP_ID, tx_id, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    return await s.wait_call("TransactionEvent", ended(tx_id), since=mark)


# --- C Authorization ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "status"), [("TC_C_02_CS", "Invalid"), ("TC_C_06_CS", "Blocked"),
                                              ("TC_C_07_CS", "Expired"), ("TC_C_56_CS", "Unknown")])
async def test_local_start_with_an_id_token_not_accepted(station: Station, case: str, status: str) -> None:
    """TC_C_02_CS (Invalid), TC_C_06_CS (Blocked), TC_C_07_CS (Expired), TC_C_56_CS (Unknown) — Local start
    transaction - Authorization ...: the
    Authorize answered with that status starts no transaction; the next accepted idToken does."""
    s = station
    token = f"C0{case[5:7]}0{len(status)}00"  # a UID (hex) of its own
    s.csms.behaviour.id_tags.set(token, status)
    mark = s.mark()
    await plug(s, 1)
    await s.tap(token)
    authorize = await s.wait_call("Authorize", since=mark)
    assert authorize.payload["idToken"] == {"idToken": token, "type": "ISO14443"}
    await s.tap(CARD)
    first = await s.wait_call("TransactionEvent", started(), since=mark)
    assert first.payload["idToken"]["idToken"] == CARD  # the refused token never started one
    await stop_transaction(s, first.payload["transactionInfo"]["transactionId"])


async def test_tc_c_08_cs_authorization_through_the_cache_accepted(station: Station) -> None:
    """TC_C_08_CS Authorization through authorization cache - Accepted: with LocalPreAuthorize an idToken the
    cache holds as Accepted starts the transaction without an AuthorizeRequest."""
    s = station
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        await cache_accepted(s, 1, OTHER)
        mark = s.mark()
        tx_id = await start_transaction(s, 1, OTHER)
        assert authorizes(s, OTHER, mark) == []
        await stop_transaction(s, tx_id)
    finally:
        await set_variables(s, old)


@pytest.mark.parametrize(("case", "status"), [("TC_C_09_CS", "Invalid"), ("TC_C_10_CS", "Blocked"),
                                              ("TC_C_11_CS", "Expired")])
async def test_a_cached_id_token_not_accepted_is_authorized_again(station: Station, case: str, status: str) -> None:
    """TC_C_09_CS (Invalid), TC_C_10_CS (Blocked), TC_C_11_CS (Expired) — Authorization through authorization
    cache: with LocalPreAuthorize, an idToken the cache holds with that status is sent in an AuthorizeRequest
    again (C10.FR.03), and not let in while the CSMS still says so."""
    s = station
    token = f"C0{case[5:7]}0{len(status)}00"  # a UID (hex) of its own
    s.csms.behaviour.id_tags.set(token, status)
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        mark = s.mark()
        await plug(s, 1)
        await s.tap(token)  # online: Authorize, the answer cached with its status
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 1, what="the first Authorize")
        await s.tap(token)
        await s.wait_until(lambda: len(authorizes(s, token, mark)) == 2, what="Authorize again, not the cache")
        await s.tap(CARD)
        first = await s.wait_call("TransactionEvent", started(), since=mark)
        assert first.payload["idToken"]["idToken"] == CARD
        await stop_transaction(s, first.payload["transactionInfo"]["transactionId"])
    finally:
        await set_variables(s, old)


async def test_tc_c_13_cs_cached_id_token_before_the_cable(station: Station) -> None:
    """TC_C_13_CS Authorization through authorization cache - Accepted but cable not connected yet: the cached
    idToken presented before the EV is plugged in is authorized from the cache (no AuthorizeRequest); the
    transaction starts when the EV is plugged in."""
    s = station
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        await cache_accepted(s, 1, OTHER)
        mark = s.mark()
        await s.tap(OTHER)
        s.ev(1).plug()
        event = await s.wait_call("TransactionEvent", started(OTHER, 1), since=mark)
        assert authorizes(s, OTHER, mark) == []
        await stop_transaction(s, event.payload["transactionInfo"]["transactionId"])
    finally:
        await set_variables(s, old)


@pytest.mark.parametrize(("case", "restart"), [("TC_C_32_CS", True), ("TC_C_36_CS", False)])
async def test_the_cache_across_a_restart_and_without_local_pre_authorize(station: Station, case: str,
                                                                           restart: bool) -> None:
    """TC_C_32_CS Store Authorization Data in the Authorization Cache - Persistent over reboot: a cached idToken is
    still authorized from the cache after the agent restarted (LocalPreAuthorize on). TC_C_36_CS ... -
    LocalPreAuthorize = false: the cached idToken is authorized with an AuthorizeRequest all the same."""
    s = station
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true"})
    try:
        await cache_accepted(s, 2, OTHER)
        if restart:
            await s.stop_agent()
            await s.start_agent()
        else:
            await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "false"})
        mark = s.mark()
        tx_id = await start_transaction(s, 2, OTHER)
        assert len(authorizes(s, OTHER, mark)) == (0 if restart else 1)
        await stop_transaction(s, tx_id)
    finally:
        await set_variables(s, old)


async def test_tc_c_37_cs_clear_cache_accepted(station: Station) -> None:
    """TC_C_37_CS Clear Authorization Data in Authorization Cache - Accepted: after ClearCache the idToken the cache
    held is authorized with an AuthorizeRequest again (LocalPreAuthorize on)."""
    s = station
    old = await set_variables(s, {"AuthCtrlr.LocalPreAuthorize": "true", "AuthCacheCtrlr.Enabled": "true"})
    try:
        await cache_accepted(s, 2, OTHER)
        assert (await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S))["status"] == "Accepted"
        mark = s.mark()
        tx_id = await start_transaction(s, 2, OTHER)
        assert len(authorizes(s, OTHER, mark)) == 1
        await stop_transaction(s, tx_id)
    finally:
        await set_variables(s, old)


async def test_tc_c_38_cs_clear_cache_rejected_while_the_cache_is_disabled(station: Station) -> None:
    """TC_C_38_CS Clear Authorization Data in Authorization Cache - Rejected: AuthCacheCtrlr.Enabled false."""
    s = station
    old = await set_variables(s, {"AuthCacheCtrlr.Enabled": "false"})
    try:
        assert (await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S))["status"] == "Rejected"
    finally:
        await set_variables(s, old)
    assert (await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S))["status"] == "Accepted"


async def test_tc_c_26_cs_offline_authorization_of_an_unknown_id(station: Station) -> None:
    """TC_C_26_CS Offline Authorization - Unknown Id: with OfflineTxForUnknownIdEnabled (and LocalAuthorizeOffline,
    StopTxOnInvalidId false) an unknown idToken starts a transaction offline; once online its events go out flagged
    offline, the CSMS answers Invalid, and the transaction goes on (StopTxOnInvalidId false) until it is stopped."""
    s = station
    token = "C0260000"  # a UID the CSMS does not know
    old = await set_variables(s, {"AuthCtrlr.OfflineTxForUnknownIdEnabled": "true",
                                  "AuthCtrlr.LocalAuthorizeOffline": "true", "TxCtrlr.StopTxOnInvalidId": "false"})
    try:
        await s.csms.set_online(False)
        await s.csms.wait_disconnected(CP_ID, timeout_s=WAIT_S)
        board = s.charger.connectors[1].board
        s.ev(1).plug()
        await s.tap(token)
        await s.wait_until(lambda: board.contactor_closed, what="charging offline")
        mark = s.mark()
        await s.csms.set_online(True)
        event = await s.wait_call("TransactionEvent", started(token), since=mark)
        assert event.payload.get("offline") is True
        tx_id = event.payload["transactionInfo"]["transactionId"]
        response = await s.csms.transcript.wait_for_response(event, timeout_s=WAIT_S)
        assert response.payload["idTokenInfo"]["status"] == "Invalid"
        end = await stop_transaction(s, tx_id)  # still running: StopTxOnInvalidId is false
        assert end.payload["transactionInfo"]["stoppedReason"] == "Remote"
    finally:
        if not s.csms.online:
            await s.csms.set_online(True)
        await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
        await set_variables(s, old)


async def test_tc_c_49_cs_master_pass_without_ui_stops_every_transaction(station: Station) -> None:
    """TC_C_49_CS Stop Transaction with a Master Pass - Without UI (C16.FR.02; C16.FR.07/08 of the 2025 errata): both
    EVSEs charging, an idToken whose groupIdToken is AuthCtrlr.MasterPassGroupId presented on the shared reader is
    sent in an AuthorizeRequest (neither transaction has a group: it is asked about because it may be a master pass)
    and, Accepted with that group, ends both transactions: Ended, triggerReason StopAuthorized (E07), stoppedReason
    MasterPass, the master pass as idToken; the energy stops on both."""
    s = station
    master, group = "C0490001", "POLICE0049"
    s.csms.behaviour.id_tags.set(master, "Accepted", parent_id_tag=group)
    old = await set_variables(s, {"AuthCtrlr.MasterPassGroupId": group})
    try:
        tx_ids = [await start_transaction(s, 1, CARD), await start_transaction(s, 2, OTHER)]
        await s.wait_until(lambda: charging(s, 1) and charging(s, 2), what="both EVSEs charging")
        mark = s.mark()
        await s.tap(master)
        ends = [(await s.wait_call("TransactionEvent", ended(tx_id), since=mark)).payload for tx_id in tx_ids]
        assert len(authorizes(s, master, mark)) == 1
        assert [(e["triggerReason"], e["transactionInfo"]["stoppedReason"], e["idToken"]["idToken"]) for e in ends] \
            == [("StopAuthorized", "MasterPass", master)] * 2
        assert not charging(s, 1) and not charging(s, 2)
    finally:
        await set_variables(s, old)


# --- F Remote control ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "authorize"), [("TC_F_02_CS", "true"), ("TC_F_03_CS", "false")])
async def test_remote_start_first(station: Station, case: str, authorize: str) -> None:
    """TC_F_02_CS / TC_F_03_CS Remote start transaction - Remote start first - AuthorizeRemoteStart is true / false:
    RequestStartTransaction before the EV is plugged in is Accepted; the idToken is authorized first only when
    AuthorizeRemoteStart is true; the transaction starts when the EV is plugged in, with the remoteStartId."""
    s = station
    old = await set_variables(s, {"AuthCtrlr.AuthorizeRemoteStart": authorize})
    try:
        mark = s.mark()
        answer = await s.csms.request_start_transaction(CP_ID, OTHER, remote_start_id=202, evse_id=1,
                                                        timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        if authorize == "true":
            await s.wait_until(lambda: len(authorizes(s, OTHER, mark)) == 1, what="Authorize of the remote start")
        s.ev(1).plug()
        event = await s.wait_call("TransactionEvent", started(OTHER, 1), since=mark)
        assert event.payload["transactionInfo"]["remoteStartId"] == 202
        assert len(authorizes(s, OTHER, mark)) == (1 if authorize == "true" else 0)
        await stop_transaction(s, event.payload["transactionInfo"]["transactionId"])
    finally:
        await set_variables(s, old)


async def test_tc_f_04_cs_remote_start_first_cable_plugin_timeout(station: Station) -> None:
    """TC_F_04_CS Remote start transaction - Remote start first - Cable plugin timeout: without an EV within
    TxCtrlr.EVConnectionTimeOut the remote start lapses; an EV plugged in later starts nothing until a card is
    presented (no remoteStartId in that transaction)."""
    s = station
    old = await set_variables(s, {"TxCtrlr.EVConnectionTimeOut": "1"})
    try:
        log_mark = len(s.log())
        answer = await s.csms.request_start_transaction(CP_ID, OTHER, remote_start_id=204, evse_id=1,
                                                        timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == 1
                         and e.get("status") == "Preparing", since=log_mark, what="remotely authorized")
        await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == 1
                         and e.get("status") == "Available", since=log_mark, what="the authorization lapsed")
        mark = s.mark()
        await plug(s, 1)
        await s.tap(CARD)
        event = await s.wait_call("TransactionEvent", started(), since=mark)
        assert event.payload["idToken"]["idToken"] == CARD
        assert "remoteStartId" not in event.payload["transactionInfo"]
        await stop_transaction(s, event.payload["transactionInfo"]["transactionId"])
    finally:
        await set_variables(s, old)


async def test_tc_f_05_cs_unlock_with_an_ongoing_transaction(station: Station) -> None:
    """TC_F_05_CS Remote unlock Connector - With ongoing transaction: OngoingAuthorizedTransaction, the transaction
    goes on."""
    s = station
    tx_id = await start_transaction(s, 2)
    answer = await s.csms.unlock_connector_201(CP_ID, 2, timeout_s=WAIT_S)
    assert answer["status"] == "OngoingAuthorizedTransaction"
    assert s.cable_locked(2)
    await stop_transaction(s, tx_id)


@pytest.mark.parametrize(("case", "ev"), [("TC_F_06_CS", True), ("TC_F_07_CS", False)])
async def test_unlock_without_a_transaction(station: Station, case: str, ev: bool) -> None:
    """TC_F_06_CS / TC_F_07_CS Remote unlock Connector - Without ongoing transaction - Accepted / No cable
    connected: Unlocked (on the lock's feedback), the lock open."""
    s = station
    if ev:
        await plug(s, 1)
    answer = await s.csms.unlock_connector_201(CP_ID, 1, timeout_s=WAIT_S)
    assert answer["status"] == "Unlocked"
    assert not s.cable_locked(1)


async def test_tc_f_10_cs_unlock_of_an_unknown_connector(station: Station) -> None:
    """TC_F_10_CS Remote unlock Connector - Without ongoing transaction - UnknownConnector: an EVSE or a connector
    the station does not have."""
    s = station
    for evse, connector in ((9, 1), (1, 2)):
        answer = await s.csms.unlock_connector_201(CP_ID, evse, connector, timeout_s=WAIT_S)
        assert answer["status"] == "UnknownConnector", (evse, connector)


@pytest.mark.parametrize(("case", "evse"), [("TC_F_11_CS", 2), ("TC_F_12_CS", None)])
async def test_trigger_meter_values(station: Station, case: str, evse: int | None) -> None:
    """TC_F_11_CS / TC_F_12_CS Trigger message - MeterValues - Specific EVSE / All EVSE: Accepted, then MeterValues
    of that EVSE (of every EVSE) with the AlignedDataCtrlr.Measurands, context Trigger."""
    s = station
    mark = s.mark()
    answer = await s.csms.trigger_message_201(CP_ID, "MeterValues", evse_id=evse, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    wanted = [evse] if evse is not None else list(EVSES)
    for e in wanted:
        values = await s.wait_call("MeterValues", lambda m, e=e: m.payload["evseId"] == e, since=mark)
        samples = values.payload["meterValue"][0]["sampledValue"]
        assert samples and all(v.get("context") == "Trigger" for v in samples)
        assert {v.get("measurand", "Energy.Active.Import.Register") for v in samples} == {
            "Energy.Active.Import.Register"}
    assert sorted(m.payload["evseId"] for m in s.calls("MeterValues", mark)) == wanted


async def test_tc_f_14_cs_trigger_transaction_event_of_all_evses(station: Station) -> None:
    """TC_F_14_CS Trigger message - TransactionEvent - All EVSE: Accepted, then an Updated event with triggerReason
    Trigger for the transaction that runs (on EVSE 2), none for the idle EVSE 1."""
    s = station
    tx_id = await start_transaction(s, 2)
    mark = s.mark()
    answer = await s.csms.trigger_message_201(CP_ID, "TransactionEvent", timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    event = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "Trigger", since=mark)
    assert event.payload["eventType"] == "Updated" and event.payload["transactionInfo"]["transactionId"] == tx_id
    await stop_transaction(s, tx_id)
    assert [e.payload["transactionInfo"]["transactionId"] for e in s.calls("TransactionEvent", mark)
            if e.payload["triggerReason"] == "Trigger"] == [tx_id]


async def test_tc_f_24_cs_trigger_status_notification_occupied(station: Station) -> None:
    """TC_F_24_CS Trigger message - StatusNotification - Specific EVSE - Occupied: the EVSE's status sent again,
    though nothing changed."""
    s = station
    await plug(s, 2)
    mark = s.mark()
    answer = await s.csms.trigger_message_201(CP_ID, "StatusNotification", evse_id=2, connector_id=1,
                                              timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    await s.wait_status(2, "Occupied", since=mark)


# --- E Transactions: local start and stop (the start and stop point cases: tests/test_e2e_ocpp201_transactions.py)


def charging(s: Station, evse: int) -> bool:
    return bool(s.charger.connector_state(evse)["contactor_closed"])


async def test_tc_e_04_cs_authorization_first_then_tc_e_06_cs_local_stop(station: Station) -> None:
    """TC_E_04_CS Local start transaction - Authorization first - Success: a card presented before the EV, then the
    EV plugged in: the transaction starts (TxStartPoint PowerPathClosed) and charges. TC_E_06_CS Local Stop
    Transaction - Accepted: the same card again ends it (triggerReason StopAuthorized, stoppedReason Local)."""
    s = station
    log_mark, mark = len(s.log()), s.mark()
    await s.tap(CARD)
    authorized = await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("status") == "Preparing",
                                  since=log_mark, what="authorized before the EV")
    evse = int(authorized["connector"])
    s.ev(evse).plug()
    event = await s.wait_call("TransactionEvent", started(CARD, evse), since=mark)
    assert event.payload["triggerReason"] == "CablePluggedIn"
    tx_id = event.payload["transactionInfo"]["transactionId"]
    await s.wait_until(lambda: charging(s, evse), what="charging")
    await s.tap(CARD)
    end = (await s.wait_call("TransactionEvent", ended(tx_id), since=mark)).payload
    assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("StopAuthorized", "Local")
    assert not charging(s, evse)


async def test_tc_e_05_cs_authorization_first_cable_plugin_timeout(station: Station) -> None:
    """TC_E_05_CS Local start transaction - Authorization first - Cable plugin timeout: no EV within
    TxCtrlr.EVConnectionTimeOut: the authorization lapses, no transaction (TxStartPoint PowerPathClosed); an EV
    plugged in afterwards starts nothing."""
    s = station
    old = await set_variables(s, {"TxCtrlr.EVConnectionTimeOut": "1"})
    try:
        log_mark, mark = len(s.log()), s.mark()
        await s.tap(CARD)
        authorized = await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("status") == "Preparing",
                                      since=log_mark, what="authorized before the EV")
        evse = int(authorized["connector"])
        await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == evse
                         and e.get("status") == "Available", since=log_mark, what="the authorization lapsed")
        await plug(s, evse)
        await s.quiet(0.5)
        assert not s.calls("TransactionEvent", mark) and not charging(s, evse)
    finally:
        await set_variables(s, old)


async def test_tc_e_08_cs_stop_point_energy_transfer_stop_authorized(station: Station) -> None:
    """TC_E_08_CS Stop transaction options - EnergyTransfer stopped - StopAuthorized: TxStopPoint EnergyTransfer, the
    card presented again: the energy stops and the transaction ends with it (StopAuthorized, Local)."""
    s = station
    old = await set_variables(s, {"TxCtrlr.TxStopPoint": "EnergyTransfer"})
    try:
        tx_id = await start_transaction(s, 1)
        await s.wait_until(lambda: charging(s, 1), what="charging")
        mark = s.mark()
        await s.tap(CARD)
        end = (await s.wait_call("TransactionEvent", ended(tx_id), since=mark)).payload
        assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("StopAuthorized", "Local")
        assert not charging(s, 1)
    finally:
        await set_variables(s, old)


async def test_tc_e_38_cs_local_start_ev_not_ready(station: Station) -> None:
    """TC_E_38_CS Local start transaction - EV not ready: the EV plugged in but not asking for energy, a card: the
    transaction starts with chargingState SuspendedEV (energy offered, not taken); once the EV is ready, Updated
    with ChargingStateChanged and Charging."""
    s = station
    await plug(s, 1)
    s.ev(1).paused = True
    mark = s.mark()
    await s.tap(CARD)
    event = (await s.wait_call("TransactionEvent", started(CARD, 1), since=mark)).payload
    assert event["transactionInfo"]["chargingState"] == "SuspendedEV", event
    s.ev(1).paused = False
    await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "ChargingStateChanged"
                      and e.payload["transactionInfo"].get("chargingState") == "Charging", since=mark)
    await stop_transaction(s, event["transactionInfo"]["transactionId"])


@pytest.mark.parametrize(("case", "unlock"), [("TC_E_24_CS", "true"), ("TC_E_25_CS", "false")])
async def test_ev_side_disconnect_deauthorizes(station: Station, case: str, unlock: str) -> None:
    """TC_E_24_CS / TC_E_25_CS Disconnect cable on EV-side - Deauthorize transaction - UnlockOnEVSideDisconnect true /
    false (StopTxOnEVSideDisconnect true): the EV unplugged while charging ends the transaction (EVCommunicationLost,
    EVDisconnected); the socket's lock opens at once (true) or keeps the cable until its owner's card (false)."""
    s = station
    old = await set_variables(s, {"OCPPCommCtrlr.UnlockOnEVSideDisconnect": unlock})
    try:
        tx_id = await start_transaction(s, 1)
        await s.wait_until(lambda: charging(s, 1) and s.cable_locked(1), what="charging, the cable locked")
        mark = s.mark()
        s.ev(1).unplug()
        end = (await s.wait_call("TransactionEvent", ended(tx_id), since=mark)).payload
        assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("EVCommunicationLost",
                                                                                    "EVDisconnected"), end
        if unlock == "true":
            await s.wait_until(lambda: not s.cable_locked(1), what="the lock opened")
        else:
            await s.quiet(0.5)
            assert s.cable_locked(1)
            await s.tap(CARD)  # the owner takes the cable back
            await s.wait_until(lambda: not s.cable_locked(1), what="the lock opened for its owner")
    finally:
        await set_variables(s, old)


async def test_tc_e_45_cs_stop_offline_with_the_same_group_id(station: Station) -> None:
    """TC_E_45_CS Offline Behaviour - Stop transaction during offline period - Same GroupId: another idToken of the
    transaction's groupIdToken (known from the Authorization Cache) stops it while offline; after the reconnect the
    Ended event (flagged offline) says StopAuthorized, Local, and carries that idToken. (The station's one reader
    serves both EVSEs: a tap goes to an idle EVSE before a group stop — firmware/charger/card_routing.py —, so
    EVSE 2 is made Inoperative here, as on a station with one EVSE.)"""
    s = station
    s.csms.behaviour.id_tags.accept(CARD, OTHER, parent_id_tag="GROUP45")
    old = await set_variables(s, {"AuthCtrlr.LocalAuthorizeOffline": "true"})
    try:
        await cache_accepted(s, 2, OTHER)  # OTHER cached with its groupIdToken
        tx_id = await start_transaction(s, 1, CARD)
        await s.wait_until(lambda: not s.outbox(), what="the Started event answered (its group cached)")
        answer = await s.csms.change_availability_201(CP_ID, "Inoperative", evse_id=2, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.csms.set_online(False)
        await s.csms.wait_disconnected(CP_ID, timeout_s=WAIT_S)
        await s.tap(OTHER)
        await s.wait_until(lambda: not charging(s, 1), what="stopped offline by the other idToken")
        mark = s.mark()
        await s.csms.set_online(True)
        end = (await s.wait_call("TransactionEvent", ended(tx_id), since=mark)).payload
        assert end.get("offline") is True
        assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("StopAuthorized", "Local")
        assert end["idToken"]["idToken"] == OTHER
    finally:
        s.csms.behaviour.id_tags.accept(CARD, OTHER)
        if not s.csms.online:
            await s.csms.set_online(True)
        await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
        await set_variables(s, old)


async def test_tc_j_06_cs_no_clock_aligned_values_during_a_transaction(station: Station) -> None:
    """TC_J_06_CS Clock-aligned Meter Values - No Meter Values during transaction: AlignedDataCtrlr.SendDuringIdle
    true (J01.FR.20): while a transaction runs no clock-aligned values go out at all (no Updated MeterValueClock, no
    MeterValues); false, they do (in the transaction's Updated events); once no transaction runs, MeterValues again."""
    s = station
    old = await set_variables(s, {"AlignedDataCtrlr.Interval": "1", "AlignedDataCtrlr.SendDuringIdle": "false"})
    try:
        mark = s.mark()
        tx_id = await start_transaction(s, 1)
        await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "MeterValueClock", since=mark)
        await set_variables(s, {"AlignedDataCtrlr.SendDuringIdle": "true"})
        quiet = s.mark()
        await s.quiet(2.5)  # two clock ticks and more
        assert not [e for e in s.calls("TransactionEvent", quiet) if e.payload["triggerReason"] == "MeterValueClock"]
        assert not s.calls("MeterValues", quiet)
        await stop_transaction(s, tx_id)
        await s.wait_call("MeterValues", since=quiet)  # idle again: clock-aligned values of the EVSEs
    finally:
        await set_variables(s, old)


# --- G Availability ------------------------------------------------------------------------------------------


async def test_tc_g_01_cs_status_available_to_occupied(station: Station) -> None:
    """TC_G_01_CS Connector status Notification - Available to Occupied: an EV plugged in."""
    s = station
    mark = s.mark()
    s.ev(1).plug()
    status = await s.wait_status(1, "Occupied", since=mark)
    assert status.payload["connectorId"] == 1 and s.statuses(2, mark) == []


async def test_tc_g_02_cs_status_occupied_to_available(station: Station) -> None:
    """TC_G_02_CS Connector status Notification - Occupied to Available: the EV unplugged."""
    s = station
    await plug(s, 2)
    mark = s.mark()
    s.ev(2).unplug()
    await s.wait_status(2, "Available", since=mark)
    assert s.statuses(1, mark) == []


def _target(scope: str) -> dict[str, int]:
    """The ChangeAvailability target of a case: the station, EVSE 2, or connector 1 of EVSE 2."""
    return {"station": {}, "evse": {"evse_id": 2}, "connector": {"evse_id": 2, "connector_id": 1}}[scope]


@pytest.mark.parametrize(("case", "scope"), [("TC_G_03_CS/TC_G_04_CS", "evse"), ("TC_G_05_CS/TC_G_06_CS", "station"),
                                             ("TC_G_07_CS/TC_G_08_CS", "connector")])
async def test_change_availability_operative_to_inoperative_and_back(station: Station, case: str,
                                                                     scope: str) -> None:
    """TC_G_03_CS / TC_G_04_CS (EVSE), TC_G_05_CS / TC_G_06_CS (Charging Station), TC_G_07_CS / TC_G_08_CS
    (Connector) Change Availability - Operative to inoperative, then Inoperative to operative: Accepted, the
    target's connectors Unavailable, then Available; nothing else changes."""
    s = station
    targets = list(EVSES) if scope == "station" else [2]
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Inoperative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Accepted"
    for evse in targets:
        await s.wait_status(evse, "Unavailable", since=mark)
    if scope != "station":
        assert s.statuses(1, mark) == []
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Operative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Accepted"
    for evse in targets:
        await s.wait_status(evse, "Available", since=mark)


@pytest.mark.parametrize(("case", "scope"), [
    ("TC_G_09_CS/TC_G_10_CS", "evse"), ("TC_G_12_CS/TC_G_13_CS", "station"), ("TC_G_15_CS/TC_G_16_CS", "connector")])
async def test_change_availability_to_the_state_it_is_in(station: Station, case: str, scope: str) -> None:
    """TC_G_09_CS / TC_G_10_CS (EVSE), TC_G_12_CS / TC_G_13_CS (Charging Station), TC_G_15_CS / TC_G_16_CS
    (Connector) Change Availability - Operative to operative, Inoperative to inoperative: Accepted, and no status
    change comes of it."""
    s = station
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Operative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Accepted"
    await s.csms.change_availability_201(CP_ID, "Inoperative", timeout_s=WAIT_S, **_target(scope))
    await s.wait_status(2, "Unavailable", since=mark)
    assert [x for x in s.statuses(2, mark)] == ["Unavailable"]  # the Operative one changed nothing
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Inoperative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Accepted"
    await s.csms.change_availability_201(CP_ID, "Operative", timeout_s=WAIT_S, **_target(scope))
    await s.wait_status(2, "Available", since=mark)
    assert s.statuses(2, mark) == ["Available"]  # the second Inoperative changed nothing


@pytest.mark.parametrize(("case", "scope"), [("TC_G_11_CS", "evse"), ("TC_G_14_CS", "station"),
                                             ("TC_G_17_CS", "connector")])
async def test_change_availability_with_an_ongoing_transaction(station: Station, case: str, scope: str) -> None:
    """TC_G_11_CS (EVSE), TC_G_14_CS (Charging Station), TC_G_17_CS (Connector) Change Availability - With ongoing
    transaction: Scheduled; the transaction goes on, and its EVSE becomes Unavailable once it has ended (an idle
    EVSE of the station at once)."""
    s = station
    tx_id = await start_transaction(s, 2)
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Inoperative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Scheduled"
    if scope == "station":
        await s.wait_status(1, "Unavailable", since=mark)
    assert "Unavailable" not in s.statuses(2, mark)
    end = await stop_transaction(s, tx_id)
    assert end.payload["transactionInfo"]["stoppedReason"] == "Remote"
    s.ev(2).unplug()
    await s.wait_status(2, "Unavailable", since=end.seq)


@pytest.mark.parametrize(("case", "scope"), [("TC_G_18_CS", "evse"), ("TC_G_19_CS", "connector"),
                                             ("TC_G_21_CS", "station")])
async def test_availability_persists_across_reboot(station: Station, case: str, scope: str) -> None:
    """TC_G_18_CS (EVSE), TC_G_19_CS (Connector), TC_G_21_CS (Charging Station) Change Availability - state persists
    across reboot: made Inoperative, the agent restarted: after its boot it reports the target Unavailable (EVSE 1
    Available unless the whole station is Inoperative)."""
    s = station
    mark = s.mark()
    answer = await s.csms.change_availability_201(CP_ID, "Inoperative", timeout_s=WAIT_S, **_target(scope))
    assert answer["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=mark)
    await s.stop_agent()
    mark = s.mark()
    await s.start_agent()
    boot = await s.wait_call("BootNotification", since=mark)
    await s.wait_status(2, "Unavailable", since=boot.seq)
    await s.wait_status(1, "Unavailable" if scope == "station" else "Available", since=boot.seq)


async def test_g05_lock_failure_status(station: Station) -> None:
    """G05 Lock Failure, the status side of TC_G_20_CS (its NotifyEvent, ConnectorPlugRetentionLock Problem:
    test_e2e_ocpp201_notify_event.py): the socket's lock does not engage when a transaction is to start: no
    transaction, no energy, the EVSE Faulted (G05.FR.01/02). Once the lock works again an
    UnlockConnector clears the fault."""
    s = station
    s.lock_stuck(1)
    try:
        await plug(s, 1)
        mark = s.mark()
        await s.tap(CARD)
        await s.wait_status(1, "Faulted", since=mark)
        assert not s.calls("TransactionEvent", mark) and not charging(s, 1) and not s.cable_locked(1)
    finally:
        s.lock_stuck(1, False)
    mark = s.mark()
    assert (await s.csms.unlock_connector_201(CP_ID, 1, 1, timeout_s=WAIT_S))["status"] == "Unlocked"
    await s.wait_status(1, "Occupied", since=mark)
