"""End to end: the CSMS starts, stops and resets (RemoteStartTransaction, RemoteStopTransaction, Reset).

Remote start with the cable first, the remote start first (with and without the EV arriving within
ConnectionTimeOut), refused remote starts, AuthorizeRemoteTxRequests, remote stop of known and
unknown transactions, and hard/soft resets with and without a transaction. For the resets the
agent runs supervised: it exits with ExitCode.RESTART and is started again, as systemd would, each on a station of
its own; the other tests share one station per connector count (``one``, ``two``), their keys set at their start and
everything put back after each (tests/station_neutral.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

from firmware.exitcodes import ExitCode
from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import Shared, configure, neutral_after, shared_station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"
NO_REMOTE_AUTH = {"AuthorizeRemoteTxRequests": "false"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("remote1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("remote2"), connectors=2) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def two(shared_two: Shared) -> AsyncIterator[Station]:
    """The shared station with two connectors, put back after the test."""
    async with neutral_after(shared_two) as s:
        yield s


async def test_remote_start_with_the_cable_already_plugged_in(one: Station) -> None:
    s = one
    await configure(s, NO_REMOTE_AUTH)
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    answer = await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1)
    assert answer == {"status": "Accepted"}
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 1 and start.payload["idTag"] == CARD
    await s.wait_status(1, "Charging", since=mark)
    assert not s.calls("Authorize", mark)  # AuthorizeRemoteTxRequests is false
    assert s.statuses(1, mark) == ["Preparing", "SuspendedEV", "Charging"]


async def test_remote_start_first_then_the_ev_is_plugged_in(two: Station) -> None:
    s = two
    await configure(s, {**NO_REMOTE_AUTH, "ConnectionTimeOut": 30})
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=2))["status"] == "Accepted"
    await s.wait_status(2, "Preparing", since=mark)
    assert not s.calls("StartTransaction", mark)
    s.ev(2).plug()
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 2 and start.payload["idTag"] == CARD
    await s.wait_status(2, "Charging", since=mark)
    assert s.statuses(1, mark) == []


async def test_remote_start_first_and_no_ev_within_connection_timeout(one: Station) -> None:
    s = one
    await configure(s, {**NO_REMOTE_AUTH, "ConnectionTimeOut": 2})
    mark, seen = s.mark(), len(s.log())
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Accepted"
    preparing = await s.wait_status(1, "Preparing", since=mark)
    available = await s.wait_status(1, "Available", since=preparing.seq)
    assert (available.ts - preparing.ts).total_seconds() >= 1.5
    # ended by ConnectionTimeOut (2 s), by the agent's clock (the CSMS hears of it later on a loaded machine)
    changes = [e for e in s.log()[seen:] if e.get("msg") == "connector status" and "to" in e]
    began, ended = (next(e for e in changes if e["to"] == to) for to in ("Preparing", "Available"))
    assert ended["trigger"] == "EVConnectTimeout", ended
    assert 1.5 <= (datetime.fromisoformat(ended["ts"]) - datetime.fromisoformat(began["ts"])).total_seconds() <= 4.5
    await s.quiet(0.3)
    assert not s.calls("StartTransaction", mark) and s.statuses(1, mark) == ["Preparing", "Available"]


async def test_remote_start_is_rejected_where_it_cannot_start(two: Station) -> None:
    s = two
    await configure(s, NO_REMOTE_AUTH)
    mark = s.mark()
    # no such connector
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=3))["status"] == "Rejected"
    # busy: a transaction is running on connector 1
    await s.start_session(1, CARD)
    busy = s.mark()
    assert (await s.csms.remote_start_transaction(CP_ID, "0A0B0C0D", connector_id=1))["status"] == "Rejected"
    # unavailable: connector 2 was taken out of service
    assert (await s.csms.change_availability(CP_ID, 2, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=busy)
    assert (await s.csms.remote_start_transaction(CP_ID, "0A0B0C0D", connector_id=2))["status"] == "Rejected"
    await s.quiet(0.5)
    assert len(s.calls("StartTransaction", mark)) == 1
    assert s.statuses(1, busy) == [] and s.statuses(2, busy) == ["Unavailable"]


async def test_authorize_remote_tx_requests_authorizes_before_starting(one: Station) -> None:
    s = one
    await configure(s, {"AuthorizeRemoteTxRequests": "true"})
    s.csms.behaviour.id_tags.accept(CARD)
    s.csms.behaviour.id_tags.block("0BADC0DE")
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    # a blocked id: accepted as a request (§5.11), refused at authorization, nothing starts
    assert (await s.csms.remote_start_transaction(CP_ID, "0BADC0DE", connector_id=1))["status"] == "Accepted"
    await s.csms.wait_for_exchange("Authorize", cp_id=CP_ID, since=mark, timeout_s=WAIT_S)
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", mark)
    # an accepted id: Authorize first, then StartTransaction
    good = s.mark()
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Accepted"
    start = await s.wait_call("StartTransaction", since=good)
    auth = s.calls("Authorize", good)
    assert [e.payload for e in auth] == [{"idTag": CARD}] and auth[0].seq < start.seq
    assert start.payload["idTag"] == CARD
    await s.wait_status(1, "Charging", since=good)


async def test_remote_stop_known_and_unknown_transaction(one: Station) -> None:
    s = one
    tx_id = await s.start_session(1, CARD)
    mark = s.mark()
    assert (await s.csms.remote_stop_transaction(CP_ID, tx_id + 1000))["status"] == "Rejected"
    await s.quiet(0.3)
    assert not s.calls("StopTransaction", mark)
    assert (await s.csms.remote_stop_transaction(CP_ID, tx_id))["status"] == "Accepted"
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Remote"
    assert "idTag" not in stop.payload
    await s.wait_status(1, "Finishing", since=mark)
    # a stopped transaction cannot be stopped again
    assert (await s.csms.remote_stop_transaction(CP_ID, tx_id))["status"] == "Rejected"


async def _reset_during_transaction(tmp_path: Path, kind: str) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent(supervised=True)
        tx_id = await s.start_session(1, CARD)
        mark = s.mark()
        assert (await s.csms.reset(CP_ID, kind))["status"] == "Accepted"
        await s.wait_call("BootNotification", since=mark)
        await s.wait_booted(since=mark)
        stop = await s.wait_call("StopTransaction", since=mark)
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == f"{kind}Reset"
        assert s.exit_codes == [ExitCode.RESTART] and s.starts == 2
        await s.quiet(1.0)
        # exactly one stop, one boot; the EV still plugged in waits for a new card after the restart
        assert len(s.calls("StopTransaction", mark)) == 1 and len(s.calls("BootNotification", mark)) == 1
        assert not s.calls("StartTransaction", mark)
        assert s.csms.state(CP_ID).transactions[tx_id].stop_count == 1
        assert s.csms.state(CP_ID).connector_status(1) in ("Preparing", "Finishing")
        if kind == "Soft":  # §5.14: a soft reset stops transactions gracefully, before restarting
            assert stop.seq < s.calls("BootNotification", mark)[0].seq


async def test_soft_reset_during_a_transaction(tmp_path: Path) -> None:
    await _reset_during_transaction(tmp_path, "Soft")


async def test_hard_reset_during_a_transaction(tmp_path: Path) -> None:
    await _reset_during_transaction(tmp_path, "Hard")


async def test_soft_and_hard_reset_without_a_transaction_reboot_the_agent(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent(supervised=True)
        for n, kind in enumerate(("Soft", "Hard"), start=1):
            mark = s.mark()
            assert (await s.csms.reset(CP_ID, kind))["status"] == "Accepted"
            await s.wait_call("BootNotification", since=mark)
            await s.wait_booted(since=mark)
            assert s.exit_codes == [ExitCode.RESTART] * n and s.starts == n + 1
            assert not s.calls("StopTransaction", mark)
            assert s.statuses(1, mark) == ["Available"]


async def test_remote_start_without_connector_picks_the_waiting_ev(two: Station) -> None:
    s = two
    await configure(s, NO_REMOTE_AUTH)
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    s.ev(2).plug()
    await s.wait_status(2, "Preparing", since=mark)
    assert (await s.csms.remote_start_transaction(CP_ID, CARD))["status"] == "Accepted"
    start = await s.wait_call("StartTransaction", since=mark)
    assert start.payload["connectorId"] == 2 and start.payload["idTag"] == CARD
    await s.wait_status(2, "Charging", since=mark)
    assert s.statuses(1, mark) == []


async def test_remote_start_of_an_id_the_csms_then_rejects_is_deauthorized(one: Station) -> None:
    s = one
    await configure(s, NO_REMOTE_AUTH)
    s.csms.behaviour.id_tags.block(CARD)  # not authorized first, so only StartTransaction.conf says so
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Accepted"
    ex = await s.csms.wait_for_exchange("StartTransaction", cp_id=CP_ID, since=mark, timeout_s=WAIT_S)
    assert ex.response is not None and ex.response.payload["idTagInfo"]["status"] == "Blocked"
    stop = await s.wait_call("StopTransaction", since=mark)
    # StopTransactionOnInvalidId (§9.1, default true): the transaction stops with DeAuthorized
    assert stop.payload["transactionId"] == ex.response.payload["transactionId"]
    assert stop.payload["reason"] == "DeAuthorized" and "idTag" not in stop.payload
    await s.wait_status(1, "Finishing", since=mark)
    await s.wait_until(lambda: not s.charger.connectors[1].board.contactor_closed, what="contactor open")
    await s.quiet(0.5)
    assert len(s.calls("StopTransaction", mark)) == 1 and s.statuses(1, mark)[-1] == "Finishing"


async def test_rejected_id_with_stop_on_invalid_id_off_suspends_energy_only(one: Station) -> None:
    s = one
    await configure(s, {**NO_REMOTE_AUTH, "StopTransactionOnInvalidId": "false"})
    s.csms.behaviour.id_tags.block(CARD)
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Accepted"
    await s.wait_status(1, "SuspendedEVSE", since=mark)
    await s.wait_until(lambda: s.charger.connectors[1].board.offered_current_a == 0, what="no PWM")
    await s.quiet(0.5)
    assert not s.calls("StopTransaction", mark)  # the transaction goes on, without energy
    assert not s.charger.connectors[1].board.contactor_closed
