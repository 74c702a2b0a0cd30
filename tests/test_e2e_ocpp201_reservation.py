"""OCPP 2.0.1 H Reservation end to end: the agent process with ``[ocpp] version = "2.0.1"``, simulated devices on
ptys and the simulated 2.0.1 CSMS (every request checked against the library's 2.0.1 schemas).

The same reservation logic as 1.6 (tests/test_e2e_reservation.py covers its rules in depth); these tests check the
2.0.1 translation: ReserveNow with evseId or without (the whole station), CancelReservation, ReservationStatusUpdate
and reservationId in TransactionEvent Started. The OCTT 2.0.1 test cases each test stands for are in its
docstring (ids and names as in the OCTT's H list: TC_H_01_CS "Reserve a specific EVSE - Accepted - Valid idToken"
... TC_H_22_CS "Reserve a specific EVSE - Configured to Reject").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.ocpp.timestamps import timestamp
from sim.devices.interfaces import BoardFault
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"
TOKEN = {"idToken": CARD, "type": "ISO14443"}


def soon(seconds: float = 300) -> str:
    return timestamp(datetime.now(UTC) + timedelta(seconds=seconds))


async def reserve(s: Station, reservation_id: int, expiry: str, evse_id: int | None = None,
                  token: dict[str, Any] | None = None, connector_type: str | None = None,
                  group: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": reservation_id, "expiryDateTime": expiry, "idToken": token or TOKEN}
    if group is not None:
        payload["groupIdToken"] = {"idToken": group, "type": "Central"}
    if evse_id is not None:
        payload["evseId"] = evse_id
    if connector_type is not None:
        payload["connectorType"] = connector_type
    return await s.csms.call(CP_ID, "ReserveNow", payload, timeout_s=WAIT_S)


def updates(s: Station, since: int = 0) -> list[dict[str, Any]]:
    return [e.payload for e in s.calls("ReservationStatusUpdate", since)]


async def test_reserved_evse_used_by_its_id_token(tmp_path: Path) -> None:
    """TC_H_01_CS (reserve a specific EVSE, the reserved idToken starts): ReserveNow with evseId Accepted, the EVSE
    Reserved; TC_H_03_CS (the EVSE reserved: another reservation for it Occupied); TC_H_02_CS (another idToken is
    not let in); the reserved one starts a transaction whose Started event carries the reservationId, and no
    ReservationStatusUpdate is sent for a reservation that was used; TC_H_04_CS (the EVSE occupied by that
    transaction: a new reservation for it Occupied)."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        s.csms.behaviour.id_tags.accept("04D5E6F7")
        await s.start_agent()
        mark = s.mark()
        assert await reserve(s, 11, soon(), evse_id=1) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        other = {"idToken": "04D5E6F7", "type": "ISO14443"}
        assert await reserve(s, 13, soon(), evse_id=1, token=other) == {"status": "Occupied"}  # TC_H_03_CS
        s.ev(1).plug()
        await s.tap("04D5E6F7")  # not the reserved id: no transaction
        await s.tap(CARD)
        started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
        assert started.payload["reservationId"] == 11
        assert started.payload["idToken"] == TOKEN  # the first Started: the other id token did not start one
        assert len([e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Started"]) == 1
        assert await reserve(s, 14, soon(), evse_id=1, token=other) == {"status": "Occupied"}  # TC_H_04_CS
        assert updates(s, mark) == []


async def test_station_wide_reservation_used_by_its_id_token(tmp_path: Path) -> None:
    """TC_H_08_CS (reserve an unspecified EVSE, ReservationCtrlr.NonEvseSpecific) with the station's connectorType
    (TC_H_15_CS, TC_H_16_CS: a connector of a specific type; TC_H_14_CS: as many EVSEs free as reservations): once
    an EV occupies EVSE 1 the last free one (EVSE 2) shows Reserved; the reserved idToken starting on EVSE 1 uses
    it — reservationId in its Started event —, EVSE 2 is Available again, and no ReservationStatusUpdate is sent
    for a reservation used. TC_H_10_CS: an EV in EVSE 2 too, no EVSE left free: a reservation without evseId
    Occupied."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=2) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        assert await reserve(s, 12, soon(), connector_type="sType2") == {"status": "Accepted"}
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
        s.ev(2).plug()  # TC_H_10_CS: no EVSE left free (one charging, one with an EV): Occupied
        await s.wait_status(2, "Occupied", since=plugged)
        assert await reserve(s, 22, soon()) == {"status": "Occupied"}


async def test_expiry_cancel_removal_and_station_wide(tmp_path: Path) -> None:
    """TC_H_07_CS (reservation ended, not used): ReservationStatusUpdate Expired and the EVSE Available;
    TC_H_17_CS (CancelReservation Accepted: the EVSE Available, no update — the CSMS asked), TC_H_18_CS (a second
    cancel of it Rejected); TC_H_19_CS (reserved with a groupIdToken: another idToken of the group uses it); a
    reservation without evseId shows on no EVSE while two are free and expires (Expired);
    TC_H_21_CS (an EVSE made Inoperative: its reservation Removed) with TC_H_06_CS (a reservation of the Unavailable
    EVSE: Unavailable); then a reservation without evseId shows on the last free EVSE (Reserved; another one is
    Occupied, TC_H_09_CS) and expires there;
    an update due while offline is queued (the outbox) and delivered after the reconnect; the station Inoperative: a
    reservation without evseId Unavailable (TC_H_12_CS); a connectorType the EVSE
    has not, an unknown EVSE, and ReservationCtrlr.Enabled false (TC_H_22_CS) are Rejected."""
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
        # TC_H_19_CS: reserved with a groupIdToken: another idToken of that group starts there, using it (EVSE 2
        # Inoperative meanwhile: the one reader serves both, and a tap goes to an idle EVSE first — card_routing.py)
        s.csms.behaviour.id_tags.accept("04D5E6F7", parent_id_tag="G19")
        inoperative = {"operationalStatus": "Inoperative", "evse": {"id": 2}}
        answer = await s.csms.call(CP_ID, "ChangeAvailability", inoperative, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        mark = s.mark()
        assert await reserve(s, 19, soon(), evse_id=1, group="G19") == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        s.ev(1).plug()
        await s.tap("04D5E6F7")
        used = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
        assert used.payload["reservationId"] == 19 and used.payload["idToken"]["idToken"] == "04D5E6F7"
        await s.tap("04D5E6F7")
        await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=used.seq)
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 2}},
                                   timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_status(2, "Available", since=used.seq)
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
        assert await reserve(s, 8, soon(2.5)) == {"status": "Accepted"}
        await s.wait_status(2, "Reserved", since=mark)
        reserved = s.mark()
        other = {"idToken": "04D5E6F7", "type": "ISO14443"}
        assert await reserve(s, 20, soon(), token=other) == {"status": "Occupied"}  # TC_H_09_CS: none left free
        expired = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert expired.payload == {"reservationId": 8, "reservationUpdateStatus": "Expired"}
        await s.wait_status(2, "Available", since=reserved)
        # offline when the reservation expires: its update is queued and delivered after the reconnect
        mark = s.mark()
        assert await reserve(s, 9, soon(2), evse_id=2) == {"status": "Accepted"}
        await s.wait_status(2, "Reserved", since=mark)
        await s.csms.set_online(False)
        await s.wait_until(lambda: any(m[0] == "ReservationStatusUpdate" for m in s.outbox()),
                           what="the update queued while offline")
        await s.csms.set_online(True)
        update = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert update.payload == {"reservationId": 9, "reservationUpdateStatus": "Expired"}
        await s.wait_until(lambda: not s.outbox(), what="the outbox empty")
        # TC_H_12_CS: the whole station Inoperative: a reservation without evseId Unavailable
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Inoperative"}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_status(2, "Unavailable", since=mark)
        assert await reserve(s, 21, soon()) == {"status": "Unavailable"}
        # Rejected: a connector type EVSE 2 has not; an EVSE that does not exist; reservations switched off
        wrong = await reserve(s, 10, soon(), evse_id=2, connector_type="cCCS2")
        assert wrong["status"] == "Rejected" and wrong["statusInfo"]["reasonCode"] == "UnknownConnectorType"
        unknown = await reserve(s, 6, soon(), evse_id=9)
        assert unknown["status"] == "Rejected" and unknown["statusInfo"]["reasonCode"] == "UnknownEvse"
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "ReservationCtrlr"}, "variable": {"name": "Enabled"}, "attributeValue": "false"}]},
            timeout_s=WAIT_S)
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        assert (await reserve(s, 7, soon(), evse_id=2))["status"] == "Rejected"
        assert len(updates(s)) == 5  # 1, 3, 4, 8, 9: each once


async def test_configured_off_reads_in_the_device_model(tmp_path: Path) -> None:
    """ReservationCtrlr.Available and NonEvseSpecific are what the configuration decides (``[ocpp] reservations``,
    ``reserve_connector_zero``), ReadOnly: without NonEvseSpecific a ReserveNow without evseId is Rejected
    (TC_H_13_CS, reserve an unspecified EVSE - Rejected), one with an evseId is Accepted; TC_H_20_CS (the reserved
    EVSE Faulted: ReservationStatusUpdate Removed; a new reservation of it Faulted)."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, ocpp_extra="reserve_connector_zero = false") as s:
        await s.start_agent()
        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            {"component": {"name": "ReservationCtrlr"}, "variable": {"name": name}}
            for name in ("Available", "NonEvseSpecific")]}, timeout_s=WAIT_S)
        assert [r["attributeValue"] for r in answer["getVariableResult"]] == ["true", "false"]
        station_wide = await reserve(s, 1, soon())
        assert station_wide["status"] == "Rejected" and station_wide["statusInfo"]["reasonCode"] == "MissingParam"
        mark = s.mark()
        assert (await reserve(s, 2, soon(), evse_id=1))["status"] == "Accepted"
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "ReservationCtrlr"}, "variable": {"name": "NonEvseSpecific"},
            "attributeValue": "true"}]}, timeout_s=WAIT_S)
        assert answer["setVariableResult"][0]["attributeStatus"] == "Rejected"
        # TC_H_20_CS: the reserved EVSE Faulted: its reservation Removed; a reservation of it now Faulted
        await s.wait_status(1, "Reserved", since=mark)
        s.inject(1, BoardFault.RCD_TRIP)
        removed = await s.wait_call("ReservationStatusUpdate", since=mark)
        assert removed.payload == {"reservationId": 2, "reservationUpdateStatus": "Removed"}
        await s.wait_status(1, "Faulted", since=mark)
        assert (await reserve(s, 3, soon(), evse_id=1))["status"] == "Faulted"
