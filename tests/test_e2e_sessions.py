"""End to end: how sessions start and end at the charger (cards, cable, EV), as the CSMS sees them.

Identify-first with and without the EV arriving in time, EV-side disconnects with
StopTransactionOnEVSideDisconnect on and off, one reader serving two connectors, refused cards,
stopping by a card of the same group (parentIdTag), and UnlockConnector. Assertions are on the
CSMS's transcript: which messages, in which order, with which contents.

The tests share two stations (agent process, simulated devices and CSMS) per module: one with one connector
(where a tap can only go to that connector) and one with two. Each test finds its station neutral whichever ran
before it: the fixtures ``one`` and ``two`` put it back after the test (tests/station_neutral.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio

from tests.station import WAIT_S, Station
from tests.station_neutral import back_to_neutral

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD_A = "04A1B2C3"
CARD_B = "04D4E5F6"
CARD_C = "0A0B0C0D"
#: the keys tests change, at the value every test starts with
KEYS = {"ConnectionTimeOut": "30", "StopTransactionOnEVSideDisconnect": "true"}


async def _shared(path: Any, connectors: int) -> AsyncIterator[Station]:
    async with Station(path, connectors=connectors, presets={"ConnectionTimeOut": 30}) as s:
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async for s in _shared(tmp_path_factory.mktemp("sessions1"), 1):
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two_station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async for s in _shared(tmp_path_factory.mktemp("sessions2"), 2):
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def one(one_station: Station) -> AsyncIterator[Station]:
    """The one-connector station, put back to neutral after the test."""
    yield one_station
    await back_to_neutral(one_station, KEYS)


@pytest_asyncio.fixture(loop_scope="module")
async def two(two_station: Station) -> AsyncIterator[Station]:
    """The two-connector station, put back to neutral after the test."""
    yield two_station
    await back_to_neutral(two_station, KEYS)


async def _set(s: Station, key: str, value: str) -> None:
    answer = await s.csms.change_configuration(s.spec.charge_point_id, key, value, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted", answer


def _machine_status(s: Station, to: str, since: int) -> dict[str, Any] | None:
    """The session machine's first log line from line ``since`` on that changed the connector's status to ``to``."""
    return next((e for e in s.log()[since:] if e.get("msg") == "connector status" and e.get("to") == to), None)


async def test_identify_first_then_plug_in_starts_the_transaction(one: Station) -> None:
    s = one
    s.csms.behaviour.id_tags.accept(CARD_A)
    mark = s.mark()
    await s.tap(CARD_A)
    auth = await s.wait_call("Authorize", since=mark)
    assert auth.payload == {"idTag": CARD_A}
    await s.wait_status(1, "Preparing", since=mark)
    assert not s.calls("StartTransaction", mark)  # no EV yet: no transaction
    s.ev(1).plug()
    ex = await s.csms.wait_for_exchange("StartTransaction", cp_id=s.spec.charge_point_id, since=mark,
                                        timeout_s=WAIT_S)
    start = ex.request.payload
    assert start["connectorId"] == 1 and start["idTag"] == CARD_A and "reservationId" not in start
    await s.wait_status(1, "Charging", since=mark)
    # one Authorize, before the StartTransaction; the EV is in B when the transaction starts
    assert len(s.calls("Authorize", mark)) == 1 and auth.seq < ex.request.seq
    assert s.statuses(1, mark) == ["Preparing", "SuspendedEV", "Charging"]
    # the card identifies a person: the agent's log shows at most its last four characters
    assert CARD_A not in s.log_path.read_text()


async def test_identified_user_who_never_plugs_in_times_out_to_available(one: Station) -> None:
    s = one
    await _set(s, "ConnectionTimeOut", "2")
    s.csms.behaviour.id_tags.accept(CARD_A)
    mark, seen = s.mark(), len(s.log())
    await s.tap(CARD_A)
    preparing = await s.wait_status(1, "Preparing", since=mark)
    available = await s.wait_status(1, "Available", since=preparing.seq)
    assert (available.ts - preparing.ts).total_seconds() >= 1.5
    # ended by ConnectionTimeOut (2 s), by the agent's clock (the CSMS hears of it later on a loaded machine)
    began, ended = _machine_status(s, "Preparing", seen), _machine_status(s, "Available", seen)
    assert began is not None and ended is not None and ended["trigger"] == "EVConnectTimeout", ended
    waited = (datetime.fromisoformat(ended["ts"]) - datetime.fromisoformat(began["ts"])).total_seconds()
    assert 1.5 <= waited <= 4.5, waited
    await s.quiet(0.5)
    assert s.statuses(1, mark) == ["Preparing", "Available"]
    assert not s.calls("StartTransaction", mark)
    # the EV that comes late finds a connector waiting for a card, not a transaction
    late = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=late)
    await s.quiet(1.0)
    assert not s.calls("StartTransaction", late)


async def test_ev_unplugged_while_charging_stops_with_ev_disconnected(one: Station) -> None:
    s = one
    tx_id = await s.start_session(1, CARD_A)
    mark = s.mark()
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "EVDisconnected"
    assert "idTag" not in stop.payload  # nobody presented an id to stop it
    await s.wait_status(1, "Available", since=mark)
    # a socket reports Finishing (the cable may still be in it), then Available (§4.9 C6/F1)
    assert s.statuses(1, mark) == ["Finishing", "Available"]
    await s.quiet(0.5)
    assert len(s.calls("StopTransaction", mark)) == 1


async def test_ev_unplugged_with_stop_on_ev_side_disconnect_off_keeps_the_transaction(one: Station) -> None:
    s = one
    await _set(s, "StopTransactionOnEVSideDisconnect", "false")
    tx_id = await s.start_session(1, CARD_A)
    mark = s.mark()
    s.ev(1).unplug()
    suspended = await s.wait_status(1, "SuspendedEV", since=mark)
    assert suspended.payload["errorCode"] == "NoError"
    await s.quiet(1.0)
    assert not s.calls("StopTransaction", mark)
    assert s.csms.state(s.spec.charge_point_id).transactions[tx_id].is_open
    # the EV comes back: energy flows again in the same transaction
    back = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Charging", since=back)
    assert not s.calls("StartTransaction", mark)
    await s.tap(CARD_A)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Local"


async def test_one_reader_two_connectors_each_card_goes_to_its_own_connector(two: Station) -> None:
    s = two
    s.csms.behaviour.id_tags.accept(CARD_A, CARD_B)
    mark = s.mark()
    s.ev(1).plug()
    s.ev(2).plug()
    await s.wait_status(1, "Preparing", since=mark)
    await s.wait_status(2, "Preparing", since=mark)
    await s.tap(CARD_A)
    await s.wait_status(1, "Charging", since=mark)
    await s.tap(CARD_B)
    await s.wait_status(2, "Charging", since=mark)
    starts = [e.payload for e in s.calls("StartTransaction", mark)]
    assert [(p["connectorId"], p["idTag"]) for p in starts] == [(1, CARD_A), (2, CARD_B)]
    ids = {}
    for e in s.calls("StartTransaction", mark):
        response = s.csms.transcript.response_to(e)
        assert response is not None
        ids[e.payload["connectorId"]] = response.payload["transactionId"]
    # each card stops its own transaction, whichever connector was started last
    await s.tap(CARD_A)
    first = await s.wait_call("StopTransaction", since=mark)
    assert first.payload["transactionId"] == ids[1] and first.payload["idTag"] == CARD_A
    await s.wait_status(1, "Finishing", since=mark)
    assert s.statuses(2, mark)[-1] == "Charging"
    await s.tap(CARD_B)
    await s.wait_call("StopTransaction", lambda e: e.payload["transactionId"] == ids[2], since=first.seq + 1)
    stops = [e.payload for e in s.calls("StopTransaction", mark)]
    assert [(p["transactionId"], p["idTag"], p["reason"]) for p in stops] == [
        (ids[1], CARD_A, "Local"), (ids[2], CARD_B, "Local")]


async def test_refused_cards_start_nothing(one: Station) -> None:
    s = one
    tags = s.csms.behaviour.id_tags
    tags.invalidate(CARD_A)
    tags.block(CARD_B)
    tags.expire(CARD_C)
    # identify-first: each refused card leaves the connector Available
    mark = s.mark()
    for card in (CARD_A, CARD_B, CARD_C):
        await s.tap(card)
        await s.csms.wait_for_exchange("Authorize", lambda e, c=card: e.payload["idTag"] == c,  # type: ignore[misc]
                                       cp_id=s.spec.charge_point_id, since=mark, timeout_s=WAIT_S)
    answers = [s.csms.transcript.response_to(e) for e in s.calls("Authorize", mark)]
    assert [a.payload["idTagInfo"]["status"] for a in answers if a] == ["Invalid", "Blocked", "Expired"]
    await s.quiet(0.5)
    assert s.statuses(1, mark) == []  # never left Available
    # plug-first: the EV waits in Preparing, refused cards change nothing
    plugged = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=plugged)
    for card in (CARD_A, CARD_B, CARD_C):
        before = s.mark()
        await s.tap(card)
        await s.csms.wait_for_exchange("Authorize", cp_id=s.spec.charge_point_id, since=before, timeout_s=WAIT_S)
    await s.quiet(0.5)
    assert s.statuses(1, plugged) == ["Preparing"]
    assert not s.calls("StartTransaction", mark)
    # and an accepted card still works afterwards
    tags.accept(CARD_A)
    await s.tap(CARD_A)
    start = await s.wait_call("StartTransaction", since=plugged)
    assert start.payload["idTag"] == CARD_A


async def test_card_of_the_same_group_stops_the_transaction_other_groups_do_not(one: Station) -> None:
    s = one
    tags = s.csms.behaviour.id_tags
    tags.accept(CARD_A, parent_id_tag="FLEET-1")
    tags.accept(CARD_B, parent_id_tag="FLEET-1")
    tags.accept(CARD_C, parent_id_tag="FLEET-2")
    tx_id = await s.start_session(1, CARD_A)
    mark = s.mark()
    await s.tap(CARD_C)  # another group: asked about, refused, charging goes on
    await s.csms.wait_for_exchange("Authorize", cp_id=s.spec.charge_point_id, since=mark, timeout_s=WAIT_S)
    await s.quiet(0.5)
    assert not s.calls("StopTransaction", mark)
    assert "Finishing" not in s.statuses(1, mark)
    await s.tap(CARD_B)  # same group: stops it
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id
    assert stop.payload["reason"] == "Local" and stop.payload["idTag"] == CARD_B
    assert [e.payload["idTag"] for e in s.calls("Authorize", mark)] == [CARD_C, CARD_B]
    await s.wait_status(1, "Finishing", since=mark)


async def test_unlock_connector_with_and_without_a_transaction(two: Station) -> None:
    s = two
    cp = s.spec.charge_point_id
    assert (await s.csms.unlock_connector(cp, 2))["status"] == "Unlocked"  # idle: just unlocks
    tx_id = await s.start_session(1, CARD_A)
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "UnlockCommand"
    await s.wait_status(1, "Finishing", since=mark)
    await s.quiet(0.3)
    assert len(s.calls("StopTransaction", mark)) == 1
    assert s.statuses(2, mark) == []


async def test_second_tap_of_the_identified_card_cancels_before_the_ev_arrives(one: Station) -> None:
    s = one
    s.csms.behaviour.id_tags.accept(CARD_A)
    mark = s.mark()
    await s.tap(CARD_A)
    await s.wait_status(1, "Preparing", since=mark)
    await s.tap(CARD_A)  # §4.9 B1: second presentation of the idTag ends the intended usage
    await s.wait_status(1, "Available", since=mark)
    s.ev(1).plug()  # too late: the EV now waits for a card, nothing starts by itself
    await s.quiet(1.0)
    assert s.statuses(1, mark) == ["Preparing", "Available", "Preparing"]
    assert not s.calls("StartTransaction", mark) and len(s.calls("Authorize", mark)) == 1


async def test_tap_in_finishing_starts_a_new_session_on_the_plugged_in_ev(one: Station) -> None:
    s = one
    first = await s.start_session(1, CARD_A)
    mark = s.mark()
    await s.tap(CARD_A)
    await s.wait_status(1, "Finishing", since=mark)
    await s.tap(CARD_A)  # §4.9 F2: the user restarts charging
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 1 and start.payload["idTag"] == CARD_A
    await s.wait_status(1, "Charging", since=mark)
    response = s.csms.transcript.response_to(start)
    assert response is not None and response.payload["transactionId"] != first
    assert s.statuses(1, mark) == ["Finishing", "Preparing", "SuspendedEV", "Charging"]
