"""OCPP 2.0.1 H Reservation end to end: the agent process with ``[ocpp] version = "2.0.1"``, simulated devices on
ptys and the simulated 2.0.1 CSMS (every request checked against the library's 2.0.1 schemas).

The same reservation logic as 1.6 (tests/test_e2e_reservation.py covers its rules in depth); these tests check the
2.0.1 translation: ReserveNow with evseId or without (the whole station), CancelReservation, ReservationStatusUpdate
and reservationId in TransactionEvent Started. The OCTT 2.0.1 test case each test stands for is in its docstring.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.ocpp.timestamps import timestamp
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"
TOKEN = {"idToken": CARD, "type": "ISO14443"}


def soon(seconds: float = 300) -> str:
    return timestamp(datetime.now(UTC) + timedelta(seconds=seconds))


async def reserve(s: Station, reservation_id: int, expiry: str, evse_id: int | None = None,
                  token: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": reservation_id, "expiryDateTime": expiry, "idToken": token or TOKEN}
    if evse_id is not None:
        payload["evseId"] = evse_id
    return await s.csms.call(CP_ID, "ReserveNow", payload, timeout_s=WAIT_S)


def updates(s: Station, since: int = 0) -> list[dict[str, Any]]:
    return [e.payload for e in s.calls("ReservationStatusUpdate", since)]


async def test_reserved_evse_used_by_its_id_token(tmp_path: Path) -> None:
    """TC_H_07_CS-like (H01 reserve a specific EVSE, the reserved idToken starts): ReserveNow with evseId Accepted,
    the EVSE Reserved; another idToken is not let in; the reserved one starts a transaction whose Started event
    carries the reservationId, and no ReservationStatusUpdate is sent for a reservation that was used."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        s.csms.behaviour.id_tags.accept("04D5E6F7")
        await s.start_agent()
        mark = s.mark()
        assert await reserve(s, 11, soon(), evse_id=1) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        s.ev(1).plug()
        await s.tap("04D5E6F7")  # not the reserved id: no transaction
        await s.tap(CARD)
        started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
        assert started.payload["reservationId"] == 11
        assert started.payload["idToken"] == TOKEN  # the first Started: the other id token did not start one
        assert len([e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Started"]) == 1
        assert updates(s, mark) == []


async def test_station_wide_reservation_used_by_its_id_token(tmp_path: Path) -> None:
    """H01 without evseId (ReservationCtrlr.NonEvseSpecific): once an EV occupies EVSE 1 the last free one (EVSE 2)
    shows Reserved; the reserved idToken starting on EVSE 1 uses it — reservationId in its Started event —, EVSE 2
    is Available again, and no ReservationStatusUpdate is sent for a reservation used."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=2) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        assert await reserve(s, 12, soon()) == {"status": "Accepted"}
        plugged = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Occupied", since=plugged)
        await s.wait_status(2, "Reserved", since=plugged)
        await s.tap(CARD)
        started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
        assert started.payload["reservationId"] == 12 and started.payload["evse"]["id"] == 1
        cancel = await s.csms.call(CP_ID, "CancelReservation", {"reservationId": 12}, timeout_s=WAIT_S)
        assert cancel["status"] == "Rejected"  # used: no longer held
        await s.wait_status(2, "Available", since=plugged)
        assert updates(s, mark) == []


async def test_expiry_cancel_removal_and_station_wide(tmp_path: Path) -> None:
    """H01 / H02 / H03 / H04: a reservation not used by its expiryDateTime ends with ReservationStatusUpdate
    Expired and the EVSE Available (TC_H_15_CS-like); CancelReservation Accepted makes the EVSE Available without an
    update (the CSMS asked), a second cancel of it is Rejected (TC_H_12/13-like); a reservation without evseId
    (ReservationCtrlr.NonEvseSpecific) shows on no EVSE while two are free and expires (Expired); an EVSE made
    Inoperative removes its reservation: Removed; then a reservation without evseId shows on the last free EVSE
    (Reserved) and expires there; an unknown EVSE and ReservationCtrlr.Enabled false are Rejected."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=2) as s:
        await s.start_agent()
        mark = s.mark()
        # H01 + H04: expiry
        assert await reserve(s, 1, soon(1.5), evse_id=1) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        reserved = s.mark()
        update = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert update.payload == {"reservationId": 1, "reservationUpdateStatus": "Expired"}
        await s.wait_status(1, "Available", since=reserved)
        # H02: cancel
        mark = s.mark()
        assert await reserve(s, 2, soon(), evse_id=1) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        reserved = s.mark()
        cancel = await s.csms.call(CP_ID, "CancelReservation", {"reservationId": 2}, timeout_s=WAIT_S)
        assert cancel["status"] == "Accepted"
        await s.wait_status(1, "Available", since=reserved)
        again = await s.csms.call(CP_ID, "CancelReservation", {"reservationId": 2}, timeout_s=WAIT_S)
        assert again["status"] == "Rejected"
        # the station-wide reservation (no evseId) while both EVSEs are free: shown on neither, expires
        cancelled = s.mark()
        assert await reserve(s, 3, soon(1.5)) == {"status": "Accepted"}
        expired = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert expired.payload == {"reservationId": 3, "reservationUpdateStatus": "Expired"}  # none for no. 2
        assert "Reserved" not in s.statuses(1, cancelled) + s.statuses(2, cancelled)
        # EVSE 1 made Inoperative: its reservation Removed
        mark = s.mark()
        assert await reserve(s, 4, soon(), evse_id=1) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                                 "evse": {"id": 1}}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        removed = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert removed.payload == {"reservationId": 4, "reservationUpdateStatus": "Removed"}
        await s.wait_status(1, "Unavailable", since=mark)
        assert (await reserve(s, 5, soon(), evse_id=1))["status"] == "Unavailable"
        # the station-wide reservation with one EVSE left free: EVSE 2 shows it, and it expires there
        mark = s.mark()
        assert await reserve(s, 8, soon(1.5)) == {"status": "Accepted"}
        await s.wait_status(2, "Reserved", since=mark)
        reserved = s.mark()
        expired = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert expired.payload == {"reservationId": 8, "reservationUpdateStatus": "Expired"}
        await s.wait_status(2, "Available", since=reserved)
        # Rejected: an EVSE that does not exist; reservations switched off in the device model
        unknown = await reserve(s, 6, soon(), evse_id=9)
        assert unknown["status"] == "Rejected" and unknown["statusInfo"]["reasonCode"] == "UnknownEvse"
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "ReservationCtrlr"}, "variable": {"name": "Enabled"}, "attributeValue": "false"}]},
            timeout_s=WAIT_S)
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        assert (await reserve(s, 7, soon(), evse_id=2))["status"] == "Rejected"
        assert len(updates(s)) == 4  # 1, 3, 4, 8: each once


async def test_configured_off_reads_in_the_device_model(tmp_path: Path) -> None:
    """ReservationCtrlr.Available and NonEvseSpecific are what the configuration decides (``[ocpp] reservations``,
    ``reserve_connector_zero``), ReadOnly: without NonEvseSpecific a ReserveNow without evseId is Rejected, one
    with an evseId is Accepted."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, ocpp_extra="reserve_connector_zero = false") as s:
        await s.start_agent()
        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            {"component": {"name": "ReservationCtrlr"}, "variable": {"name": name}}
            for name in ("Available", "NonEvseSpecific")]}, timeout_s=WAIT_S)
        assert [r["attributeValue"] for r in answer["getVariableResult"]] == ["true", "false"]
        station_wide = await reserve(s, 1, soon())
        assert station_wide["status"] == "Rejected" and station_wide["statusInfo"]["reasonCode"] == "MissingParam"
        assert (await reserve(s, 2, soon(), evse_id=1))["status"] == "Accepted"
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "ReservationCtrlr"}, "variable": {"name": "NonEvseSpecific"},
            "attributeValue": "true"}]}, timeout_s=WAIT_S)
        assert answer["setVariableResult"][0]["attributeStatus"] == "Rejected"
