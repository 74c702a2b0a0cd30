"""End to end: Reservation (OCPP 1.6 §3.11, §5.13) — OCTT TC_046_1/_2, TC_047, TC_048_1-4, TC_049, TC_050_1-4,
TC_051, TC_052, and a reservation across a power cut (docs/reservation.md).

The agent runs as a process against the simulated hardware and CSMS; each test names the OCTT steps it checks. The
tests with the default configuration share one station per connector count (``two``, ``one``), put back after each
(tests/station_neutral.py); those with their own configuration or a power cut have their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sim.csms import local_list
from sim.devices.interfaces import BoardFault
from tests.station import CP_ID, Station
from tests.station_neutral import Shared, neutral_after, shared_station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"  # the reserved id
OTHER = "04D5E6F7"  # another valid card
MEMBER = "04112233"  # a card of the reservation's group
LISTED = "04445566"  # a card on the Local Authorization List, of another group


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("reservation2"), connectors=2) as shared:
        yield shared


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("reservation1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def two(shared_two: Shared) -> AsyncIterator[Station]:
    """The shared station with two connectors, put back after the test."""
    async with neutral_after(shared_two) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


def soon(seconds: float = 300) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def refused(entry: dict[str, Any], reason: str = "reserved") -> bool:
    return entry.get("msg") == "session" and entry.get("event") == "IdTokenRefused" and entry.get("reason") == reason


async def test_tc046_1_local_start_on_a_reserved_connector(two: Station) -> None:
    """TC_046_1: another card is refused without an Authorize.req (MicroOcpp #430); the reserved card starts, and
    StartTransaction carries the reservationId."""
    s = two
    s.csms.behaviour.id_tags.accept(CARD, OTHER)
    inoperative = s.mark()
    assert (await s.csms.change_availability(CP_ID, 2, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=inoperative)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 1, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    seen = len(s.log())
    await s.tap(OTHER)
    await s.wait_log(refused, since=seen, what="the other card refused: reserved")
    assert not s.calls("Authorize", mark)  # step 5: no Authorize.req for the other card
    await s.tap(CARD)
    await s.wait_status(1, "Preparing", since=mark)
    assert [e.payload["idTag"] for e in s.calls("Authorize", mark)] == [CARD]
    s.ev(1).plug()
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["idTag"] == CARD and start.payload["reservationId"] == 1
    await s.wait_status(1, "Charging", since=mark)
    assert s.statuses(1, mark)[:2] == ["Reserved", "Preparing"]


async def test_tc046_2_remote_start_uses_the_reservation(two: Station) -> None:
    """TC_046_2: RemoteStartTransaction with the reserved idTag uses the reservation (also without a connectorId:
    it goes to the connector reserved for it); another idTag is Rejected."""
    s = two
    s.csms.behaviour.id_tags.accept(CARD, OTHER)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 2, soon()) == {"status": "Accepted"}
    await s.wait_status(2, "Reserved", since=mark)
    assert await s.csms.remote_start_transaction(CP_ID, OTHER, connector_id=2) == {"status": "Rejected"}
    assert await s.csms.remote_start_transaction(CP_ID, CARD) == {"status": "Accepted"}
    await s.wait_status(2, "Preparing", since=mark)
    s.ev(2).plug()
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 2 and start.payload["idTag"] == CARD
    assert start.payload["reservationId"] == 2
    await s.wait_status(2, "Charging", since=mark)
    assert s.statuses(1, mark) == []


async def test_tc047_reservation_expires_on_time(one: Station) -> None:
    """TC_047: not used in time, the connector goes back to Available at the expiry date; then another id charges
    without a reservationId."""
    s = one
    s.csms.behaviour.id_tags.accept(OTHER)
    mark, seen = s.mark(), len(s.log())
    expiry = soon(3)
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 3, expiry) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    available = await s.wait_status(1, "Available", since=mark)
    assert available.ts >= expiry - timedelta(milliseconds=100)  # not before its time (CSMS hears it after)
    ended = await s.wait_log(lambda e: e.get("event") == "ReservationEnded", since=seen,
                             what="the reservation ended")
    assert ended["reason"] == "expired"
    await s.start_session(1, OTHER)
    start = s.calls("StartTransaction", mark)[-1]
    assert "reservationId" not in start.payload


async def test_tc048_1_2_3_reservation_of_a_connector_not_made(two: Station) -> None:
    """TC_048_1 Faulted, TC_048_2 Occupied (an EV plugged in; a connector already reserved), TC_048_3 Unavailable
    (ChangeAvailability Inoperative). A reservation with the same id replaces the old one."""
    s = two
    mark = s.mark()
    s.inject(1, BoardFault.RCD_TRIP)
    await s.wait_status(1, "Faulted", since=mark)
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 1, soon()) == {"status": "Faulted"}
    s.ev(2).plug()
    await s.wait_status(2, "Preparing", since=mark)
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 2, soon()) == {"status": "Occupied"}
    s.ev(2).unplug()
    await s.wait_status(2, "Available", since=mark)
    assert (await s.csms.change_availability(CP_ID, 2, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=mark)
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 3, soon()) == {"status": "Unavailable"}
    assert (await s.csms.change_availability(CP_ID, 2, "Operative"))["status"] == "Accepted"
    await s.wait_status(2, "Available", since=mark)
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 4, soon()) == {"status": "Accepted"}
    assert await s.csms.reserve_now(CP_ID, 2, OTHER, 5, soon()) == {"status": "Occupied"}  # already reserved
    assert await s.csms.reserve_now(CP_ID, 2, OTHER, 4, soon(600)) == {"status": "Accepted"}  # same id: replaced
    assert await s.csms.cancel_reservation(CP_ID, 5) == {"status": "Rejected"}
    assert await s.csms.cancel_reservation(CP_ID, 4) == {"status": "Accepted"}
    await s.wait_status(2, "Available", since=mark)
    assert s.statuses(2, mark).count("Reserved") == 1  # replacing it reported nothing new


async def test_the_same_reservation_id_replaces_the_old_one_wherever_it_was(two: Station) -> None:
    """§5.13: a ReserveNow with a reservationId the charge point holds replaces that reservation — moved to another
    connector, to the charger as a whole (connector 0) and back; one reservation under that id at any time."""
    s = two
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 60, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 60, soon()) == {"status": "Accepted"}
    await s.wait_status(2, "Reserved", since=mark)
    await s.wait_status(1, "Available", since=mark)
    moved = s.mark()
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 60, soon()) == {"status": "Accepted"}
    await s.wait_status(2, "Available", since=moved)  # two free again: the charger-wide one shows nowhere
    back = s.mark()
    assert await s.csms.reserve_now(CP_ID, 2, CARD, 60, soon()) == {"status": "Accepted"}
    await s.wait_status(2, "Reserved", since=back)
    assert await s.csms.cancel_reservation(CP_ID, 60) == {"status": "Accepted"}
    await s.wait_status(2, "Available", since=back)
    assert await s.csms.cancel_reservation(CP_ID, 60) == {"status": "Rejected"}  # nothing left under that id
    assert s.statuses(1, moved) == []


async def test_tc048_4_reservations_configured_off_are_rejected(tmp_path: Path) -> None:
    """TC_048_4: a Charge Point configured not to accept reservations answers Rejected (and does not offer the
    Reservation profile); CancelReservation is Rejected too."""
    async with Station(tmp_path, connectors=1, ocpp_extra="reservations = false") as s:
        await s.start_agent()
        mark = s.mark()
        assert await s.csms.reserve_now(CP_ID, 1, CARD, 1, soon()) == {"status": "Rejected"}
        assert await s.csms.cancel_reservation(CP_ID, 1) == {"status": "Rejected"}
        keys = {k["key"]: k for k in (await s.csms.get_configuration(
            CP_ID, ["SupportedFeatureProfiles", "ReserveConnectorZeroSupported"]))["configurationKey"]}
        assert "Reservation" not in keys["SupportedFeatureProfiles"]["value"].split(",")
        assert keys["ReserveConnectorZeroSupported"] == {"key": "ReserveConnectorZeroSupported", "readonly": True,
                                                         "value": "false"}
        assert s.statuses(1, mark) == []


async def test_tc049_reservation_of_the_charge_point(two: Station) -> None:
    """TC_049: connectorId 0 with the other connector Unavailable: the one connector left shows Reserved
    (MicroOcpp #434); another card is refused without Authorize, the reserved card charges with the
    reservationId."""
    s = two
    s.csms.behaviour.id_tags.accept(CARD, OTHER)
    keys = (await s.csms.get_configuration(CP_ID, ["ReserveConnectorZeroSupported", "SupportedFeatureProfiles"]))
    values = {k["key"]: k["value"] for k in keys["configurationKey"]}
    assert values["ReserveConnectorZeroSupported"] == "true"
    assert "Reservation" in values["SupportedFeatureProfiles"].split(",")
    inoperative = s.mark()
    assert (await s.csms.change_availability(CP_ID, 2, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=inoperative)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 9, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    seen = len(s.log())
    await s.tap(OTHER)
    await s.wait_log(refused, since=seen, what="the other card refused: reserved")
    assert not s.calls("Authorize", mark)
    await s.tap(CARD)
    await s.wait_status(1, "Preparing", since=mark)
    s.ev(1).plug()
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 1 and start.payload["reservationId"] == 9
    await s.wait_status(1, "Charging", since=mark)


async def test_charge_point_reservation_keeps_one_connector_free(two: Station) -> None:
    """connectorId 0 with two free connectors: both stay Available and anybody may start; once only one is left it
    shows Reserved and refuses other cards; the reserved card uses it (reservationId), and then the reservation
    is gone."""
    s = two
    s.csms.behaviour.id_tags.accept(CARD, OTHER)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 11, soon()) == {"status": "Accepted"}
    await s.start_session(1, OTHER)  # two were free: allowed, without the reservation
    assert "reservationId" not in s.calls("StartTransaction", mark)[-1].payload
    await s.wait_status(2, "Reserved", since=mark)  # the last free one is kept for CARD
    assert "Reserved" not in s.statuses(1, mark)
    assert await s.csms.reserve_now(CP_ID, 0, OTHER, 12, soon()) == {"status": "Occupied"}  # one at a time
    at_reserved = s.mark()
    await s.tap(CARD)
    await s.wait_status(2, "Preparing", since=at_reserved)
    s.ev(2).plug()
    start = await s.wait_call("StartTransaction", lambda e: e.payload["connectorId"] == 2, since=at_reserved)
    assert start.payload["idTag"] == CARD and start.payload["reservationId"] == 11
    assert await s.csms.cancel_reservation(CP_ID, 11) == {"status": "Rejected"}  # used: gone


async def test_charge_point_reservation_used_where_it_was_not_shown(two: Station) -> None:
    """The reserved card starting on another connector than the one showing the reservation uses it: the
    StartTransaction carries it, and the connector that showed it goes back to Available."""
    s = two
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 13, soon()) == {"status": "Accepted"}
    s.ev(1).plug()  # connector 1 busy (Preparing): connector 2 is the last free one
    await s.wait_status(2, "Reserved", since=mark)
    await s.tap(CARD)  # the EV waiting at connector 1 takes the tap (plug-first)
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 1 and start.payload["reservationId"] == 13
    await s.wait_status(2, "Available", since=mark)


async def test_tc050_1_2_3_reservation_of_the_charge_point_not_made(two: Station) -> None:
    """TC_050_2 Occupied (every connector in use), TC_050_3 Unavailable (the charge point Inoperative),
    TC_050_1 Faulted (every connector faulted)."""
    s = two
    mark = s.mark()
    for c in (1, 2):
        s.ev(c).plug()
        await s.wait_status(c, "Preparing", since=mark)
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 1, soon()) == {"status": "Occupied"}
    for c in (1, 2):
        s.ev(c).unplug()
        await s.wait_status(c, "Available", since=mark)
    assert (await s.csms.change_availability(CP_ID, 0, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=mark)
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 2, soon()) == {"status": "Unavailable"}
    assert (await s.csms.change_availability(CP_ID, 0, "Operative"))["status"] == "Accepted"
    await s.wait_status(2, "Available", since=s.mark() - 1)
    for c in (1, 2):
        s.inject(c, BoardFault.RCD_TRIP)
        await s.wait_status(c, "Faulted", since=mark)
    assert await s.csms.reserve_now(CP_ID, 0, CARD, 3, soon()) == {"status": "Faulted"}


async def test_tc050_4_connector_zero_without_reserve_connector_zero_supported(tmp_path: Path) -> None:
    """TC_050_4: ReserveConnectorZeroSupported false (``[ocpp] reserve_connector_zero = false``): connectorId 0
    is Rejected, a connector can still be reserved."""
    async with Station(tmp_path, connectors=1, ocpp_extra="reserve_connector_zero = false") as s:
        await s.start_agent()
        keys = await s.csms.get_configuration(CP_ID, ["ReserveConnectorZeroSupported"])
        assert keys["configurationKey"] == [{"key": "ReserveConnectorZeroSupported", "readonly": True,
                                             "value": "false"}]
        assert (await s.csms.change_configuration(CP_ID, "ReserveConnectorZeroSupported", "true"))["status"] \
            == "Rejected"
        assert await s.csms.reserve_now(CP_ID, 0, CARD, 1, soon()) == {"status": "Rejected"}
        assert await s.csms.reserve_now(CP_ID, 1, CARD, 2, soon()) == {"status": "Accepted"}


async def test_tc051_tc052_cancel_reservation(one: Station) -> None:
    """TC_052: an unknown reservationId is Rejected and nothing is cancelled; TC_051: the right one is Accepted,
    the connector Available, and another id charges without a reservationId."""
    s = one
    s.csms.behaviour.id_tags.accept(OTHER)
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 21, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    assert await s.csms.cancel_reservation(CP_ID, 22) == {"status": "Rejected"}
    assert await s.csms.cancel_reservation(CP_ID, 21) == {"status": "Accepted"}
    await s.wait_status(1, "Available", since=mark)
    assert s.statuses(1, mark) == ["Reserved", "Available"]
    await s.start_session(1, OTHER)
    assert "reservationId" not in s.calls("StartTransaction", mark)[-1].payload


async def test_unavailable_or_faulted_ends_a_reservation_in_one_transition(one: Station) -> None:
    """1.6 §5.13: set Inoperative or Faulted, a reserved connector's reservation ends — Reserved straight to
    Unavailable / Faulted (libocpp #998), Accepted rather than Scheduled — and it does not come back."""
    s = one
    mark = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 31, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=mark)
    assert (await s.csms.change_availability(CP_ID, 1, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(1, "Unavailable", since=mark)
    assert (await s.csms.change_availability(CP_ID, 1, "Operative"))["status"] == "Accepted"
    await s.wait_status(1, "Available", since=mark)
    assert s.statuses(1, mark) == ["Reserved", "Unavailable", "Available"]
    assert await s.csms.cancel_reservation(CP_ID, 31) == {"status": "Rejected"}
    faulted = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 32, soon()) == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=faulted)
    s.inject(1, BoardFault.RCD_TRIP)
    await s.wait_status(1, "Faulted", since=faulted)
    assert s.statuses(1, faulted) == ["Reserved", "Faulted"]
    assert await s.csms.cancel_reservation(CP_ID, 32) == {"status": "Rejected"}


async def test_reservation_with_a_group_asks_the_cache_and_the_list_first(one: Station) -> None:
    """TC_053 (a reserved connector used with the parentIdTag): a reservation with a parentIdTag; a card the
    Authorization Cache or the Local Authorization List places in another group is refused without an
    Authorize.req; a card of the group (unknown here) is authorized and uses the reservation (its reservationId in
    StartTransaction)."""
    s = one
    s.csms.behaviour.id_tags.accept(OTHER, parent_id_tag="VISITORS")
    s.csms.behaviour.id_tags.accept(MEMBER, parent_id_tag="FLEET")
    mark = s.mark()
    await s.tap(OTHER)  # identify-first: authorized (and cached), then a second tap cancels (B1)
    await s.wait_status(1, "Preparing", since=mark)
    await s.tap(OTHER)
    await s.wait_status(1, "Available", since=mark)
    reserved = s.mark()
    assert await s.csms.reserve_now(CP_ID, 1, CARD, 41, soon(), parent_id_tag="FLEET") == {"status": "Accepted"}
    await s.wait_status(1, "Reserved", since=reserved)
    seen = len(s.log())
    await s.tap(OTHER)
    await s.wait_log(refused, since=seen, what="a card of another group (cached) refused")
    assert await s.csms.send_local_list(CP_ID, 1, "Full", [local_list.entry(LISTED, parent_id_tag="VISITORS")]) \
        == {"status": "Accepted"}
    seen = len(s.log())
    await s.tap(LISTED)
    await s.wait_log(refused, since=seen, what="a card of another group (listed) refused")
    assert not s.calls("Authorize", reserved)
    await s.tap(MEMBER)
    await s.wait_status(1, "Preparing", since=reserved)
    assert [e.payload["idTag"] for e in s.calls("Authorize", reserved)] == [MEMBER]
    s.ev(1).plug()
    start = await s.wait_call("StartTransaction", since=reserved)
    assert start.payload["idTag"] == MEMBER and start.payload["reservationId"] == 41


async def test_reservations_survive_a_power_cut_and_expire_on_time(tmp_path: Path) -> None:
    """kill -9 while a connector's and the charge point's reservations hold: after the restart both connectors
    are Reserved again (connector 2 is the last free one for the connectorId 0 reservation), and both expire at
    their expiry dates, not later and not earlier."""
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        mark = s.mark()
        expiry = soon(10)  # room for a restart on a loaded machine (checked below)
        assert await s.csms.reserve_now(CP_ID, 1, CARD, 51, expiry) == {"status": "Accepted"}
        assert await s.csms.reserve_now(CP_ID, 0, OTHER, 52, expiry) == {"status": "Accepted"}
        await s.wait_status(1, "Reserved", since=mark)
        await s.wait_status(2, "Reserved", since=mark)
        await s.kill_agent()
        restart = s.mark()
        await s.start_agent()
        assert s.statuses(1, restart)[:1] == ["Reserved"] and s.statuses(2, restart)[:1] == ["Reserved"]
        assert datetime.now(UTC) < expiry, "the restart took too long to see the reservations still held"
        for c in (1, 2):
            available = await s.wait_status(c, "Available", since=restart)
            assert available.ts >= expiry - timedelta(milliseconds=100)
        assert await s.csms.cancel_reservation(CP_ID, 51) == {"status": "Rejected"}
        assert await s.csms.cancel_reservation(CP_ID, 52) == {"status": "Rejected"}
