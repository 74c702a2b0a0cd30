"""OCPP 2.0.1 E Transactions and J Meter values end to end: TxStartPoint / TxStopPoint, EVConnectionTimeOut,
StopTxOnInvalidId / MaxEnergyOnInvalidId, GetTransactionStatus, the retry rule of TransactionEvent, and the values
kept for the Ended event (TxEndedInterval). Each test names the OCTT 2.0.1 cases it stands for; several cases share
one station, the variables changed between them by SetVariables as the OCTT does.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sim.csms.transcript import TranscriptEntry
from sim.devices.interfaces import BoardFault
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"
OTHER = "04D5E6F7"


def _events(s: Station, since: int = 0) -> list[dict[str, Any]]:
    return [e.payload for e in s.calls("TransactionEvent", since)]


async def _set(s: Station, **variables: str) -> None:
    """SetVariables ``Component_Variable="value"`` (Accepted each)."""
    data = [{"component": {"name": k.split("_")[0]}, "variable": {"name": k.split("_")[1]}, "attributeValue": v}
            for k, v in variables.items()]
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": data}, timeout_s=WAIT_S)
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * len(data), answer


async def _set_message_attempts(s: Station, attempts: int) -> None:
    """OCPPCommCtrlr.MessageAttempts[TransactionEvent] (E13)."""
    data = [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "MessageAttempts",
                                                                  "instance": "TransactionEvent"},
             "attributeValue": str(attempts)}]
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": data}, timeout_s=WAIT_S)
    assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted", answer


async def _event(s: Station, since: int, event_type: str, trigger: str | None = None) -> TranscriptEntry:
    return await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == event_type and (
        trigger is None or e.payload["triggerReason"] == trigger), since=since)


async def _charging(s: Station) -> None:
    await s.wait_until(lambda: s.charger.connector_state(1)["contactor_closed"], what="charging")


async def _unplug_after_one_transaction(s: Station, mark: int) -> None:
    """One transaction's events since ``mark``; then the EV leaves and the EVSE is Available again."""
    _one_transaction(s, mark)
    s.ev(1).unplug()
    await s.wait_status(1, "Available", since=mark)


def _queued(s: Station) -> list[tuple[str, bool]]:
    """(triggerReason, thinnable) of each TransactionEvent waiting in the agent's outbox, oldest first."""
    db = sqlite3.connect(f"file:{s.storage_dir / 'agent.db'}?mode=ro", uri=True, timeout=WAIT_S)
    try:
        rows = db.execute("SELECT payload, thinnable FROM outbox WHERE action = 'TransactionEvent' ORDER BY seq")
        return [(json.loads(payload)["triggerReason"], bool(thinnable)) for payload, thinnable in rows.fetchall()]
    finally:
        db.close()


def _one_transaction(s: Station, since: int) -> str:
    """The events since ``since`` are one transaction's, Started ... Ended with seqNo 0, 1, 2, ...: its id."""
    events = _events(s, since)
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    ids = {e["transactionInfo"]["transactionId"] for e in events}
    assert len(ids) == 1
    return str(ids.pop())


async def test_start_and_stop_points(tmp_path: Path) -> None:
    """TC_E_09_CS (start EVConnected) with TC_E_14_CS / TC_E_20_CS (stop EVConnected: a local stop only ends the
    authorization, the unplug ends the transaction; a second tap or a remote start before the unplug starts nothing
    inside it — one transaction, one billing record); TC_E_10_CS (start Authorized - Local) with TC_E_39_CS
    (Deauthorized - timeout: EVConnectionTimeOut ends it) and TC_E_15_CS (StopAuthorized - Local); TC_E_02_CS (start
    EnergyTransfer) with TC_E_22_CS (stop EnergyTransfer - SuspendedEV); TC_E_37_CS (stop PowerPathClosed - EV side
    disconnect while StopTxOnEVSideDisconnect is false); TC_E_26_CS (EV side disconnect suspends, stop point
    Authorized) ended by a local stop; TC_E_13_CS (start Authorized - Remote) with TC_E_21_CS (StopAuthorized -
    Remote). A fault ends a transaction whatever the stop points. ParkingBayOccupancy and DataSigned are
    Rejected."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        s.csms.behaviour.id_tags.accept(OTHER)
        await s.start_agent()
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [
            {"component": {"name": "TxCtrlr"}, "variable": {"name": name}, "attributeValue": value}
            for name, value in (("TxStartPoint", "ParkingBayOccupancy"), ("TxStopPoint", "EVConnected,DataSigned"))
        ]}, timeout_s=WAIT_S)
        assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Rejected", "Rejected"]

        # TC_E_09_CS + TC_E_14_CS / TC_E_20_CS
        await _set(s, TxCtrlr_TxStartPoint="EVConnected", TxCtrlr_TxStopPoint="EVConnected")
        mark = s.mark()
        s.ev(1).plug()
        started = (await _event(s, mark, "Started")).payload
        assert started["triggerReason"] == "CablePluggedIn" and "idToken" not in started
        assert started["transactionInfo"]["chargingState"] == "EVConnected"
        await s.tap(CARD)
        authorized = (await _event(s, mark, "Updated", "Authorized")).payload
        assert authorized["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        await _charging(s)
        await s.tap(CARD)  # a local stop: the authorization ends, the transaction goes on until the unplug
        stop = (await _event(s, mark, "Updated", "StopAuthorized")).payload
        assert stop["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        assert stop["transactionInfo"]["chargingState"] == "EVConnected"
        await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], what="energy stopped")
        assert [e["eventType"] for e in _events(s, mark)].count("Ended") == 0
        # a second tap before the unplug, the same card or another, starts nothing inside the transaction that goes
        # on until the unplug (E06.FR.02): refused without an Authorize; so is a RequestStartTransaction
        second, lines = s.mark(), len(s.log())

        def refused() -> int:
            return len([e for e in s.log()[lines:] if e.get("msg") == "session" and e.get("event") == "IdTokenRefused"
                        and e.get("reason") == "unplug_first"])

        await s.tap(CARD)
        await s.wait_until(lambda: refused() == 1, what="the same card refused")
        await s.tap(OTHER)
        await s.wait_until(lambda: refused() == 2, what="another card refused")
        answer = await s.csms.call(CP_ID, "RequestStartTransaction", {
            "idToken": {"idToken": OTHER, "type": "ISO14443"}, "remoteStartId": 3, "evseId": 1}, timeout_s=WAIT_S)
        assert answer["status"] == "Rejected"
        assert s.calls("Authorize", second) == [] and _events(s, second) == []
        assert not s.charger.connector_state(1)["contactor_closed"]
        s.ev(1).unplug()
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "EVCommunicationLost"
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        _one_transaction(s, mark)
        await s.wait_status(1, "Available", since=mark)

        # a fault ends the transaction whatever the stop points (here EVConnected, the EV still plugged in)
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        await _event(s, mark, "Updated", "Authorized")
        await _charging(s)
        s.inject(1, BoardFault.RCD_TRIP)
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "AbnormalCondition"
        assert ended["transactionInfo"]["stoppedReason"] == "GroundFault"
        _one_transaction(s, mark)
        s.inject(1, BoardFault.RCD_TRIP, active=False)
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=mark)

        # TC_E_10_CS + TC_E_39_CS
        await _set(s, TxCtrlr_TxStartPoint="Authorized", TxCtrlr_TxStopPoint="Authorized",
                   TxCtrlr_EVConnectionTimeOut="1")
        mark = s.mark()
        await s.tap(CARD)
        started = (await _event(s, mark, "Started")).payload
        assert started["triggerReason"] == "Authorized"
        assert started["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "EVConnectTimeout" and ended["transactionInfo"]["stoppedReason"] == "Timeout"
        _one_transaction(s, mark)
        assert s.statuses(1, mark) == []  # Available throughout: an id waiting for the EV is no occupation

        # TC_E_10_CS with the EV in time, + TC_E_15_CS
        await _set(s, TxCtrlr_EVConnectionTimeOut="60")
        mark = s.mark()
        await s.tap(CARD)
        await _event(s, mark, "Started", "Authorized")
        s.ev(1).plug()
        await _event(s, mark, "Updated", "CablePluggedIn")
        await _charging(s)
        await s.tap(CARD)
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "StopAuthorized" and ended["transactionInfo"]["stoppedReason"] == "Local"
        assert ended["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        await _unplug_after_one_transaction(s, mark)

        # TC_E_02_CS + TC_E_22_CS
        await _set(s, TxCtrlr_TxStartPoint="EnergyTransfer", TxCtrlr_TxStopPoint="EnergyTransfer")
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        started = (await _event(s, mark, "Started")).payload
        assert started["triggerReason"] == "ChargingStateChanged"
        assert started["transactionInfo"]["chargingState"] == "Charging"
        assert started["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        s.ev(1).paused = True  # the EV stops drawing (C -> B)
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "ChargingStateChanged"
        assert ended["transactionInfo"]["stoppedReason"] == "StoppedByEV"
        _one_transaction(s, mark)
        s.ev(1).paused = False  # no energy without a transaction: the session stopped with it
        await s.quiet(1.0)
        assert not s.charger.connector_state(1)["contactor_closed"]
        assert [e["eventType"] for e in _events(s, mark)].count("Started") == 1
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=mark)

        # TC_E_37_CS
        await _set(s, TxCtrlr_TxStartPoint="PowerPathClosed", TxCtrlr_TxStopPoint="PowerPathClosed",
                   TxCtrlr_StopTxOnEVSideDisconnect="false")
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        await _event(s, mark, "Started", "Authorized")
        await _charging(s)
        s.ev(1).unplug()
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "EVCommunicationLost"
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        _one_transaction(s, mark)
        await s.wait_status(1, "Available", since=mark)

        # TC_E_26_CS: stop point Authorized, StopTxOnEVSideDisconnect false: an unplug suspends the transaction
        await _set(s, TxCtrlr_TxStopPoint="Authorized")
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        await _event(s, mark, "Started", "Authorized")
        await _charging(s)
        s.ev(1).unplug()
        lost = (await _event(s, mark, "Updated", "EVCommunicationLost")).payload
        assert lost["transactionInfo"]["chargingState"] == "Idle"  # no connection between EV and EVSE
        s.ev(1).plug()
        await s.wait_until(lambda: s.charger.connector_state(1)["contactor_closed"], what="charging again")
        # TC_E_07_CS-like: the local stop ends it (StopAuthorized)
        await s.tap(CARD)
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "StopAuthorized" and ended["transactionInfo"]["stoppedReason"] == "Local"
        await _unplug_after_one_transaction(s, mark)

        # TC_E_13_CS (start Authorized - Remote) with TC_E_21_CS (StopAuthorized - Remote)
        await _set(s, TxCtrlr_TxStartPoint="Authorized", TxCtrlr_StopTxOnEVSideDisconnect="true")
        mark = s.mark()
        answer = await s.csms.call(CP_ID, "RequestStartTransaction", {
            "idToken": {"idToken": CARD, "type": "ISO14443"}, "remoteStartId": 5, "evseId": 1}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        started = (await _event(s, mark, "Started")).payload
        assert started["triggerReason"] == "RemoteStart" and started["transactionInfo"]["remoteStartId"] == 5
        s.ev(1).plug()
        await _event(s, mark, "Updated", "CablePluggedIn")
        answer = await s.csms.call(CP_ID, "RequestStopTransaction",
                                   {"transactionId": started["transactionInfo"]["transactionId"]}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "RemoteStop" and ended["transactionInfo"]["stoppedReason"] == "Remote"
        await _unplug_after_one_transaction(s, mark)
        assert not [line for line in s.log() if line.get("level") in ("ERROR", "CRITICAL")]


async def test_transaction_status_and_message_retries(tmp_path: Path) -> None:
    """GetTransactionStatus TC_E_28_CS (unknown id), TC_E_29_CS / TC_E_30_CS (ongoing, with / without messages in
    queue), TC_E_31_CS / TC_E_32_CS (ended, with / without), TC_E_33_CS / TC_E_34_CS (without an id); the retry rule
    of TransactionEvent (E13): TC_E_51_CS (a CALLERROR, then accepted before MessageAttempts: sent again after
    MessageAttemptInterval) and TC_E_50_CS (MessageAttempts CALLERRORs: given up, the next message goes); the same
    without a CALLERROR, the CSMS not answering within MessageTimeout (2 s here): TC_E_42_CS (the Started event not
    answered once, then answered) and TC_E_41_CS (the Ended event never answered: sent MessageAttempts times on the
    same connection, then given up); a queued message of no transaction (NotifyEvent) not answered: a failed attempt
    as well, sent again on the same connection (no reconnect)."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, response_timeout_s=2,
                       presets={"OCPPCommCtrlr.MessageAttemptInterval[TransactionEvent]": 1}) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()

        async def status(transaction_id: str | None = None) -> dict[str, Any]:
            payload = {} if transaction_id is None else {"transactionId": transaction_id}
            return await s.csms.call(CP_ID, "GetTransactionStatus", payload, timeout_s=WAIT_S)

        assert await status() == {"messagesInQueue": False}  # TC_E_34_CS
        assert await status("not-a-transaction") == {"messagesInQueue": False, "ongoingIndicator": False}  # 28
        mark = s.mark()
        s.csms.behaviour.faults.fail_next("TransactionEvent", 1)  # TC_E_51_CS
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        started = await _event(s, mark, "Started")
        tx_id = started.payload["transactionInfo"]["transactionId"]
        await s.wait_until(lambda: len([e for e in _events(s, mark) if e["eventType"] == "Started"]) == 2,
                           what="the Started event sent again")
        again = [e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Started"]
        assert again[0].payload == again[1].payload
        assert (again[1].ts - again[0].ts).total_seconds() >= 0.9  # MessageAttemptInterval x 1
        await s.wait_until(lambda: not s.outbox(), what="the outbox empty")
        assert await status(tx_id) == {"messagesInQueue": False, "ongoingIndicator": True}  # TC_E_30_CS

        # what is sent stays queued until answered: answers later than MessageTimeout, retried (E13) meanwhile
        await _set_message_attempts(s, 50)
        s.csms.behaviour.faults.set_delay("TransactionEvent", 3.0)
        s.ev(1).paused = True  # an Updated event (chargingState)
        await s.wait_until(lambda: bool(s.outbox()), what="an Updated event queued")
        assert await status(tx_id) == {"messagesInQueue": True, "ongoingIndicator": True}  # TC_E_29_CS
        assert await status() == {"messagesInQueue": True}  # TC_E_33_CS
        await s.tap(CARD)
        await s.wait_log(lambda e: e.get("msg") == "transaction ended", what="the transaction ended")
        assert await status(tx_id) == {"messagesInQueue": True, "ongoingIndicator": False}  # TC_E_31_CS
        s.csms.behaviour.faults.set_delay("TransactionEvent", 0.0)
        await _event(s, mark, "Ended")
        await s.wait_until(lambda: not s.outbox(), what="the outbox empty")
        assert await status(tx_id) == {"messagesInQueue": False, "ongoingIndicator": False}  # TC_E_32_CS
        await _set_message_attempts(s, 3)

        # TC_E_50_CS: MessageAttempts (3) failures give a message up; the transaction's next one goes
        s.ev(1).paused = False
        mark = s.mark()
        s.csms.behaviour.faults.fail_next("TransactionEvent", 3)
        await s.tap(CARD)  # a new transaction (the EV is still plugged in)
        await s.wait_log(lambda e: e.get("msg") == "CSMS failed to process a queued message; discarded",
                         what="the Started event given up")
        await s.tap(CARD)
        await _event(s, mark, "Ended")
        events = _events(s, mark)
        starts = [e for e in events if e["eventType"] == "Started"]
        assert len(starts) == 3 and starts[0] == starts[2]  # sent 3 times (after 1 s, then 2 s), then given up
        assert events[3]["seqNo"] == 1 and events[-1]["eventType"] == "Ended"
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=mark)

        # TC_E_42_CS: the Started event not answered at all once: sent again after MessageTimeout + the interval
        mark, session = s.mark(), s.csms.session(CP_ID)
        s.csms.behaviour.faults.ignore_next("TransactionEvent", 1)
        s.ev(1).plug()
        await s.tap(CARD)
        await s.wait_until(lambda: len([e for e in _events(s, mark) if e["eventType"] == "Started"]) == 2,
                           what="the Started event sent again")
        again = [e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Started"]
        assert again[0].payload == again[1].payload
        assert (again[1].ts - again[0].ts).total_seconds() >= 2.9  # MessageTimeout, then the interval x 1
        await s.wait_until(lambda: not s.outbox(), what="the Started event delivered")
        # TC_E_41_CS: the Ended event never answered: MessageAttempts (2) sends, then given up
        await _set_message_attempts(s, 2)
        s.csms.behaviour.faults.ignore_next("TransactionEvent", 2)
        await s.tap(CARD)
        await s.wait_log(lambda e: e.get("msg") == "CSMS failed to process a queued message; discarded"
                         and e.get("error") == "no answer within the response timeout", what="the Ended given up")
        ends = [e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Ended"]
        assert len(ends) == 2 and ends[0].payload == ends[1].payload
        assert (ends[1].ts - ends[0].ts).total_seconds() >= 2.9
        assert s.csms.session(CP_ID) is session  # retried on the same connection, no reconnect
        assert not s.outbox()
        # a queued message of no transaction (the NotifyEvent of the connector's AvailabilityState) not answered: a
        # failed attempt too, sent again after MessageTimeout + the interval on the same connection, no reconnect
        mark = s.mark()
        s.csms.behaviour.faults.ignore_next("NotifyEvent", 1)
        s.ev(1).unplug()
        await s.wait_until(lambda: len(s.calls("NotifyEvent", mark)) >= 2, what="the NotifyEvent sent again")
        notified = s.calls("NotifyEvent", mark)
        assert notified[0].payload == notified[1].payload
        assert (notified[1].ts - notified[0].ts).total_seconds() >= 2.9
        await s.wait_until(lambda: not s.outbox(), what="the NotifyEvent delivered")
        assert s.csms.session(CP_ID) is session
        assert not [e for e in s.log() if e.get("msg") == "no answer to a queued message; reconnecting, it will be "
                    "sent again first"]


async def test_invalid_id_stops_the_transaction_or_its_energy(tmp_path: Path) -> None:
    """TC_E_16_CS (Deauthorized - Invalid idToken): the CSMS answers the Started event of a remote start (no
    Authorize: AuthorizeRemoteStart false) with an Invalid idTokenInfo, StopTxOnInvalidId true: Ended, triggerReason
    Deauthorized, stoppedReason DeAuthorized. StopTxOnInvalidId false with MaxEnergyOnInvalidId 20 Wh: the energy
    goes on until the meter has counted 20 Wh more, then stops (Updated, triggerReason EnergyLimitReached,
    SuspendedEVSE) and the transaction stays open."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1,
                       presets={"AuthCtrlr.AuthorizeRemoteStart": "false"}) as s:
        s.csms.behaviour.id_tags.set(CARD, "Invalid")
        await s.start_agent()

        async def remote_start() -> None:
            answer = await s.csms.call(CP_ID, "RequestStartTransaction", {
                "idToken": {"idToken": CARD, "type": "ISO14443"}, "remoteStartId": 7, "evseId": 1}, timeout_s=WAIT_S)
            assert answer["status"] == "Accepted"

        mark = s.mark()
        s.ev(1).plug()
        await remote_start()
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "Deauthorized"
        assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
        s.ev(1).unplug()
        await s.tap(CARD)  # the cable was kept locked for its owner
        await s.wait_status(1, "Available", since=mark)

        await _set(s, TxCtrlr_StopTxOnInvalidId="false", TxCtrlr_MaxEnergyOnInvalidId="20")
        mark = s.mark()
        s.ev(1).plug()
        await remote_start()
        await _event(s, mark, "Started")
        invalidated_wh = s.charger.connector_state(1)["energy_wh"]
        limit = (await _event(s, mark, "Updated", "EnergyLimitReached")).payload
        assert limit["transactionInfo"]["chargingState"] == "SuspendedEVSE"
        await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], what="energy stopped")
        delivered = s.charger.connector_state(1)["energy_wh"] - invalidated_wh
        assert 12 <= delivered <= 45, delivered  # 20 Wh from the meter's last poll (about 1 s at 22 kW either way)
        assert [e["eventType"] for e in _events(s, mark)].count("Ended") == 0


async def test_tx_ended_meter_values_and_tc_e_27_tethered_cable(tmp_path: Path) -> None:
    """TC_J_10_CS (Sampled Meter Values - EventType Ended: SampledDataCtrlr.TxEndedInterval) and TC_J_03_CS
    (Clock-aligned Meter Values - EventType Ended: AlignedDataCtrlr.TxEndedInterval): the values taken during the
    transaction travel in its Ended event, Sample.Periodic and Sample.Clock (on the interval's grid) before the
    Transaction.End value; none of them in an Updated event. On the same station (a tethered cable) TC_E_27_CS
    (Disconnect cable on EV-side - Suspend transaction - Fixed cable connection timeout, E10.FR.02/03): TxStopPoint
    Authorized, StopTxOnEVSideDisconnect and UnlockOnEVSideDisconnect false; the EV unplugged while its energy
    transfer is suspended: Updated EVCommunicationLost (chargingState Idle), the connector Available; the EV not back
    within EVConnectionTimeOut: Ended, triggerReason EVConnectTimeout, stoppedReason Timeout."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, cable="tethered",
                       presets={"SampledDataCtrlr.TxEndedInterval": 1, "AlignedDataCtrlr.TxEndedInterval": 2,
                                "AlignedDataCtrlr.Interval": 0}) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        await _event(s, mark, "Started")
        await _charging(s)
        await s.quiet(4.5)  # TxEndedInterval 1 s and 2 s: a few of each kind
        s.ev(1).unplug()
        ended = (await _event(s, mark, "Ended")).payload
        contexts = [v["sampledValue"][0]["context"] for v in ended["meterValue"]]
        assert contexts[-1] == "Transaction.End"
        assert contexts.count("Sample.Periodic") >= 2 and contexts.count("Sample.Clock") >= 1, contexts
        clock = [v for v in ended["meterValue"] if v["sampledValue"][0]["context"] == "Sample.Clock"]
        assert all(int(v["timestamp"][17:19]) % 2 == 0 for v in clock)
        assert all("meterValue" not in e for e in _events(s, mark) if e["eventType"] == "Updated")
        await s.wait_status(1, "Available", since=mark)

        # TC_E_27_CS
        await _set(s, TxCtrlr_TxStopPoint="Authorized", TxCtrlr_StopTxOnEVSideDisconnect="false",
                   OCPPCommCtrlr_UnlockOnEVSideDisconnect="false", TxCtrlr_EVConnectionTimeOut="1")
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        await _event(s, mark, "Started")
        await _charging(s)
        s.ev(1).paused = True  # State is EnergyTransferSuspended
        await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], what="suspended by the EV")
        s.ev(1).unplug()
        lost = await _event(s, mark, "Updated", "EVCommunicationLost")
        assert lost.payload["transactionInfo"]["chargingState"] == "Idle"
        await s.wait_status(1, "Available", since=lost.seq)  # the fixed cable occupies nothing without its EV
        ended_at = await _event(s, mark, "Ended")
        assert ended_at.payload["triggerReason"] == "EVConnectTimeout"
        assert ended_at.payload["transactionInfo"]["stoppedReason"] == "Timeout"
        assert (ended_at.ts - lost.ts).total_seconds() >= 0.9  # EVConnectionTimeOut
        _one_transaction(s, mark)
        assert not [line for line in s.log() if line.get("level") in ("ERROR", "CRITICAL")]


async def test_offline_periods_and_power_loss(tmp_path: Path) -> None:
    """TC_E_40_CS (connection loss during a transaction) with TC_E_44_CS (stopped during the offline period): the
    events of the offline period carry ``offline: true`` and follow the ones before it, in order, after the
    reconnect. Power loss of a transaction begun at EVConnected, before any authorization: the agent killed
    (SIGKILL) and started again ends it (Ended, triggerReason AbnormalCondition, stoppedReason PowerLoss, its seqNo
    continuing), and the EV still plugged in begins a new one. E11.FR.05: the periodic Updated events queued
    meanwhile are the ones a cap on the queue may drop (thinnable), not Started, Ended or a change of state."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, presets={"SampledDataCtrlr.TxUpdatedInterval": 1}) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=mark)
        await s.tap(CARD)
        started = (await _event(s, mark, "Started")).payload
        assert "offline" not in started
        await _charging(s)
        await s.csms.set_online(False)
        await s.wait_until(lambda: ("MeterValuePeriodic", True) in _queued(s), what="a periodic event queued")
        await s.tap(CARD)
        await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], what="stopped offline")
        await s.wait_until(lambda: _queued(s)[-1] == ("StopAuthorized", False), what="the Ended event queued")
        assert {thinnable for trigger, thinnable in _queued(s) if trigger != "MeterValuePeriodic"} == {False}
        back = s.mark()
        await s.csms.set_online(True)
        ended = (await _event(s, back, "Ended")).payload
        assert ended["offline"] is True and ended["triggerReason"] == "StopAuthorized"
        assert all(e.get("offline") is True for e in _events(s, back))
        await _unplug_after_one_transaction(s, mark)

        await _set(s, TxCtrlr_TxStartPoint="EVConnected", SampledDataCtrlr_TxUpdatedInterval="0")
        mark = s.mark()
        s.ev(1).plug()
        started = (await _event(s, mark, "Started", "CablePluggedIn")).payload
        tx_id = started["transactionInfo"]["transactionId"]
        await s.wait_until(lambda: not s.outbox(), what="the Started event delivered")
        await s.kill_agent()
        await s.start_agent()
        entry = await _event(s, mark, "Ended")
        ended = entry.payload
        assert ended["transactionInfo"]["transactionId"] == tx_id and ended["seqNo"] == 1
        assert ended["triggerReason"] == "AbnormalCondition"
        assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"
        again = (await _event(s, entry.seq, "Started", "CablePluggedIn")).payload
        assert again["transactionInfo"]["transactionId"] != tx_id
        assert [e["eventType"] for e in _events(s, mark)] == ["Started", "Ended", "Started"]


async def test_availability_and_reset_with_a_transaction_begun_at_ev_connected(tmp_path: Path) -> None:
    """With a transaction the session machine holds none of (TxStartPoint EVConnected, no id yet): TC_G_11_CS-like
    ChangeAvailability of its EVSE to Inoperative is Scheduled and applies once the unplug ended it; B12 Reset
    OnIdle is Scheduled and done once the unplug ended it; B11 Reset Immediate ends it (triggerReason ResetCommand,
    stoppedReason ImmediateReset) before the restart."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, presets={"TxCtrlr.TxStartPoint": "EVConnected"}) as s:
        await s.start_agent(supervised=True)
        mark = s.mark()
        s.ev(1).plug()
        await _event(s, mark, "Started", "CablePluggedIn")
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                                 "evse": {"id": 1}}, timeout_s=WAIT_S)
        assert answer["status"] == "Scheduled"
        s.ev(1).unplug()
        ended = await _event(s, mark, "Ended", "EVCommunicationLost")
        unavailable = await s.wait_status(1, "Unavailable", since=mark)
        assert unavailable.seq > ended.seq  # not while the transaction ran
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Operative"}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_status(1, "Available", since=mark)

        mark = s.mark()
        s.ev(1).plug()
        await _event(s, mark, "Started", "CablePluggedIn")
        answer = await s.csms.call(CP_ID, "Reset", {"type": "OnIdle"}, timeout_s=WAIT_S)
        assert answer["status"] == "Scheduled"
        await s.quiet(1.5)
        assert s.calls("BootNotification", mark) == []
        s.ev(1).unplug()
        await _event(s, mark, "Ended", "EVCommunicationLost")
        boot = await s.wait_call("BootNotification", since=mark)
        assert boot.payload["reason"] == "RemoteReset"

        mark = s.mark()
        s.ev(1).plug()
        await _event(s, mark, "Started", "CablePluggedIn")
        answer = await s.csms.call(CP_ID, "Reset", {"type": "Immediate"}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        ended = (await _event(s, mark, "Ended")).payload
        assert ended["triggerReason"] == "ResetCommand"
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        await s.wait_call("BootNotification", since=mark)
        assert [e["eventType"] for e in _events(s, mark)][:2] == ["Started", "Ended"]
