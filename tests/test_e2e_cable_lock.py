"""End to end: the cable lock, driven through the I/O board protocol with its feedback (OCTT 1.6 TC_017 and
TC_018, their failure cases, UnlockConnectorOnEVSideDisconnect), as the CSMS sees it.

The simulated I/O board has a lock actuator with a position switch (100 ms of travel, T_lock = 1 s) that
can be jammed (``lock_stuck``). Assertions are on the CSMS's transcript and on the lock's physical position. The tests
with a lock share one station (``one``; their keys set at their start), put back after each (tests/station_neutral.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.station import WAIT_S, Station
from tests.station_neutral import Shared, configure, neutral_after, shared_station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD_A = "04A1B2C3"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("lock1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector and a lock, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


async def test_tc_017_1_and_tc_018_1_unlock_without_and_with_a_transaction(one: Station) -> None:
    """TC_017_1: idle, Unlocked. TC_018_1: charging, the cable locked; Unlocked, StopTransaction UnlockCommand,
    Finishing, the lock open; the EV unplugs: Available."""
    s = one
    cp = s.spec.charge_point_id
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    assert not s.cable_locked(1)
    tx_id = await s.start_session(1, CARD_A)
    assert s.cable_locked(1)  # locked before the current was offered
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    assert not s.cable_locked(1)  # the answer came after the feedback said so
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "UnlockCommand"
    await s.wait_status(1, "Finishing", since=mark)
    s.ev(1).unplug()
    await s.wait_status(1, "Available", since=mark)
    assert not [e for e in s.calls("StatusNotification", mark) if e.payload["errorCode"] != "NoError"]


async def test_tc_017_2_and_tc_018_2_tethered_cable_is_not_supported(tmp_path: Path) -> None:
    """A tethered cable has no lock: NotSupported, idle and while charging; the transaction goes on, nothing
    drives the (absent) lock."""
    async with Station(tmp_path, connectors=1, cable="tethered") as s:
        await s.start_agent()
        cp = s.spec.charge_point_id
        assert (await s.csms.unlock_connector(cp, 1))["status"] == "NotSupported"
        await s.start_session(1, CARD_A)
        mark = s.mark()
        assert (await s.csms.unlock_connector(cp, 1))["status"] == "NotSupported"
        await s.quiet(0.5)
        assert not s.calls("StopTransaction", mark) and s.statuses(1, mark) == []
        assert not s.cable_locked(1)
        assert not [e for e in s.log() if e.get("msg") == "cable lock"]


async def test_stuck_lock_unlock_failed_with_connector_lock_failure_then_a_retry_unlocks(one: Station) -> None:
    """TC_018 with a lock that does not open (OCTT TC_030: UnlockFailed): the transaction is finished first
    (UnlockCommand), the answer is UnlockFailed once T_lock has passed, and the CSMS gets ConnectorLockFailure.
    The operator's next UnlockConnector, with the lock free again, unlocks and clears the fault."""
    s = one
    cp = s.spec.charge_point_id
    tx_id = await s.start_session(1, CARD_A)
    s.lock_stuck(1)
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "UnlockFailed"
    assert s.cable_locked(1)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "UnlockCommand"
    failure = await s.wait_status(1, "Faulted", since=mark, error_code="ConnectorLockFailure")
    assert failure.payload["vendorErrorCode"] == "connector_lock_failure"
    s.lock_stuck(1, False)
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    assert not s.cable_locked(1)
    cleared = await s.wait_status(1, "Finishing", since=mark)
    assert cleared.payload["errorCode"] == "NoError"


async def test_tc_024_lock_that_fails_at_the_start_starts_no_transaction(one: Station) -> None:
    """TC_024 (Start Charging Session - Lock Failure), plug-first and with a remote start: the lock does not
    engage, so the connector goes Faulted with ConnectorLockFailure, no transaction is started and no current
    is offered; once the lock works again an UnlockConnector clears the fault and a card starts charging."""
    s = one
    s.csms.behaviour.id_tags.accept(CARD_A)
    cp = s.spec.charge_point_id
    s.lock_stuck(1)
    mark, seen = s.mark(), len(s.log())
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    await s.tap(CARD_A)
    await s.wait_call("Authorize", since=mark)
    await s.wait_status(1, "Faulted", since=mark, error_code="ConnectorLockFailure")
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", mark) and not s.calls("StopTransaction", mark)
    assert s.statuses(1, mark) == ["Preparing", "Faulted"]
    board = s.charger.connectors[1].board
    assert board.offered_current_a == 0.0 and not board.contactor_closed and not s.cable_locked(1)
    assert any(e.get("msg") == "transaction not started: the cable lock failed" for e in s.log()[seen:])
    # a remote start is refused while the connector is Faulted
    assert (await s.csms.remote_start_transaction(cp, CARD_A, connector_id=1))["status"] == "Rejected"
    s.lock_stuck(1, False)
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    await s.wait_status(1, "Preparing", since=mark)
    await s.tap(CARD_A)
    await s.wait_status(1, "Charging", since=mark)
    assert s.cable_locked(1) and len(s.calls("StartTransaction", mark)) == 1


async def test_unlock_connector_on_ev_side_disconnect(one: Station) -> None:
    """UnlockConnectorOnEVSideDisconnect true (default): the EV unplugs, the transaction stops and the lock opens.
    False: the transaction stops (EVDisconnected) but the cable stays locked in the socket, Finishing, until its
    owner's card releases it."""
    s = one
    cp = s.spec.charge_point_id
    await s.start_session(1, CARD_A)
    mark = s.mark()
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["reason"] == "EVDisconnected"
    await s.wait_until(lambda: not s.cable_locked(1), WAIT_S, "the lock opened")
    await s.wait_status(1, "Available", since=mark)

    assert (await s.csms.change_configuration(cp, "UnlockConnectorOnEVSideDisconnect", "false"))["status"] \
        == "Accepted"
    await s.start_session(1, CARD_A)
    mark = s.mark()
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["reason"] == "EVDisconnected"
    await s.wait_status(1, "Finishing", since=mark)
    await s.quiet(1.0)
    assert s.cable_locked(1) and s.statuses(1, mark) == ["Finishing"]
    await s.tap(CARD_A)  # the owner takes the cable back
    await s.wait_status(1, "Available", since=mark)
    assert not s.cable_locked(1)


async def test_tc_024_remote_start_then_the_lock_fails_when_the_ev_plugs_in(one: Station) -> None:
    """TC_024's own order: RemoteStartTransaction accepted (Preparing), then the EV is plugged in and the lock
    does not engage: Faulted with ConnectorLockFailure, no StartTransaction; the EV's plug is still seen (an
    unplug while Faulted is taken in, and the connector is Available once the lock works and is unlocked)."""
    s = one
    await configure(s, {"AuthorizeRemoteTxRequests": "false"})
    cp = s.spec.charge_point_id
    s.lock_stuck(1)
    mark = s.mark()
    assert (await s.csms.remote_start_transaction(cp, CARD_A, connector_id=1))["status"] == "Accepted"
    await s.wait_status(1, "Preparing", since=mark)
    s.ev(1).plug()
    await s.wait_status(1, "Faulted", since=mark, error_code="ConnectorLockFailure")
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", mark)
    board = s.charger.connectors[1].board
    assert board.offered_current_a == 0.0 and not board.contactor_closed
    s.ev(1).unplug()
    s.lock_stuck(1, False)
    await s.quiet(0.3)
    mark = s.mark()
    assert (await s.csms.unlock_connector(cp, 1))["status"] == "Unlocked"
    await s.wait_status(1, "Available", since=mark)
