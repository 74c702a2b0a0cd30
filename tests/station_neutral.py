"""Putting a station shared by the tests of a module (OCPP 1.6 or 2.0.1) back to neutral after each of them.

A Station costs its start (agent process, devices, CSMS) in every test that makes its own; a module's tests that need
the same connectors and presets share one (module-scoped fixture) and each leaves it "neutral" for the next:
:func:`back_to_neutral` (1.6) or :func:`back_to_neutral_201` after every test, :func:`writable_keys` once to know
the configuration to restore, :func:`configure` for a test's own keys. A 1.6 module's fixtures are two lines each
with :func:`shared_station` (module scope) and :func:`neutral_after` (each test).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.csms.behaviour import IdTagDirectory
from sim.csms.transcript import Direction, EntryKind
from sim.devices.interfaces import BoardFault
from tests.station import CP_ID, WAIT_S, Station

#: A heartbeat interval no shared station reaches: a Heartbeat in the middle of a test that asserts that nothing was
#: sent would fail it, and a station living through many tests could see one at the usual 300 s.
NO_HEARTBEAT_S = 86400


@dataclass
class Shared:
    """A running 1.6 station shared by a module's tests, and its writable keys as they were at its start."""

    station: Station
    keys: dict[str, str]


@contextlib.asynccontextmanager
async def shared_station(path: Path, connectors: int, **station: Any) -> AsyncIterator[Shared]:
    """A 1.6 station started for a module's tests (no heartbeat to disturb them: :data:`NO_HEARTBEAT_S`)."""
    async with Station(path, connectors=connectors, heartbeat_interval=NO_HEARTBEAT_S, **station) as s:
        await s.start_agent()
        yield Shared(s, await writable_keys(s))


@contextlib.asynccontextmanager
async def neutral_after(shared: Shared) -> AsyncIterator[Station]:
    """The shared station for one test, put back to neutral after it (what it reserved counted from its start)."""
    mark = shared.station.mark()
    yield shared.station
    await back_to_neutral(shared.station, shared.keys, mark)


async def writable_keys(s: Station) -> dict[str, str]:
    """The values of the agent's writable configuration keys, to restore after each test."""
    keys = (await s.csms.get_configuration(CP_ID, timeout_s=WAIT_S))["configurationKey"]
    return {k["key"]: k.get("value", "") for k in keys if not k["readonly"]}


async def back_to_neutral(s: Station, keys: Mapping[str, str], since: int = 0) -> None:
    """The CSMS online, knowing no idTag and planning no fault; no fault injected, no EV plugged, no transaction
    open, no cable locked; each of ``keys`` at its value (only those that differ are changed); no reservation (of
    those made from transcript position ``since`` on), charging profile, Local Authorization List or cached id;
    every connector Operative and Available without error; whatever the agent queued (offline) delivered, so that
    nothing of the test before arrives during the next one."""
    if not s.csms.online:
        await s.csms.set_online(True)
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    s.csms.behaviour.faults.clear()
    connectors = range(1, s.spec.connectors + 1)
    for c in connectors:
        s.inject(c, BoardFault.RCD_TRIP, False)
        s.lock_stuck(c, False)
        s.meter_silent(c, False)
    for key, value in (await writable_keys(s)).items():
        if key in keys and keys[key] != value:
            answer = await s.csms.change_configuration(CP_ID, key, keys[key], timeout_s=WAIT_S)
            assert answer["status"] == "Accepted", (key, answer)
    for tx in s.csms.state(CP_ID).open_transactions:
        await s.csms.remote_stop_transaction(CP_ID, tx.transaction_id, timeout_s=WAIT_S)
    for c in connectors:
        s.ev(c).unplug()
        # a cable left locked in the socket (a transaction ended without unlocking) keeps the connector Finishing
        await s.csms.unlock_connector(CP_ID, c, timeout_s=WAIT_S)
    reserved = {e.payload["reservationId"] for e in s.csms.transcript.messages(
        CP_ID, action="ReserveNow", direction=Direction.TO_CP, kind=EntryKind.CALL, since=since)}
    for reservation_id in sorted(reserved):
        await s.csms.cancel_reservation(CP_ID, reservation_id, timeout_s=WAIT_S)
    await s.csms.call(CP_ID, "ClearChargingProfile", {}, timeout_s=WAIT_S)
    await s.csms.send_local_list(CP_ID, 1, "Full", timeout_s=WAIT_S)
    await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S)
    for c in (0, *connectors):
        await s.csms.change_availability(CP_ID, c, "Operative", timeout_s=WAIT_S)
    # what the agent queued (offline) has reached the CSMS: nothing of this test arrives during the next one
    await s.wait_until(lambda: not s.outbox(), what="the agent's outbox delivered")
    await s.wait_until(lambda: not s.csms.state(CP_ID).open_transactions, what="every transaction ended")
    for c in connectors:
        await s.wait_until(lambda c=c: _last_status(s, c) == ("Available", "NoError"),
                           what=f"connector {c} Available without error")
    s.csms.behaviour.id_tags = IdTagDirectory()


def _last_status(s: Station, connector: int) -> tuple[str, str] | None:
    last = [e.payload for e in s.calls("StatusNotification") if e.payload["connectorId"] == connector][-1:]
    return (last[0]["status"], last[0]["errorCode"]) if last else None


def last_status(s: Station, connector: int) -> str | None:
    statuses = s.statuses(connector)
    return statuses[-1] if statuses else None


async def configure(s: Station, values: dict[str, str | int]) -> None:
    """ChangeConfiguration of each key (each Accepted): a test's own presets on a shared station, which
    :func:`back_to_neutral` puts back."""
    for key, value in values.items():
        answer = await s.csms.change_configuration(CP_ID, key, str(value), timeout_s=WAIT_S)
        assert answer["status"] == "Accepted", (key, answer)


def open_transactions_201(s: Station) -> list[str]:
    return [t.transaction_id for t in s.csms.state(CP_ID).transactions201.values() if t.is_open]


async def variables_201(s: Station, names: list[str]) -> dict[str, str]:
    """The Actual values of the 2.0.1 variables ``names`` (``Component.Variable[instance]``)."""
    answer = await s.csms.get_variables(CP_ID, names, timeout_s=WAIT_S)
    results = answer["getVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * len(names), answer
    return {n: r["attributeValue"] for n, r in zip(names, results, strict=True)}


async def back_to_neutral_201(s: Station, variables: Mapping[str, str] | None = None) -> None:
    """:func:`back_to_neutral` for OCPP 2.0.1: the CSMS online, knowing no token and planning no fault; no EV
    plugged, no transaction open, the station Operative and every EVSE Available; the authorization cache
    empty; each of ``variables`` (``Component.Variable``) at its value; nothing left in the agent's queue."""
    if not s.csms.online:  # back within OCPPCommCtrlr.OfflineThreshold, only changed statuses are reported
        await s.csms.set_online(True)
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    s.csms.behaviour.id_tags = IdTagDirectory()
    s.csms.behaviour.faults.clear()
    for evse in range(1, s.spec.connectors + 1):
        s.ev(evse).unplug()
    await s.wait_until(lambda: not s.outbox(), what="the agent's queue delivered")  # offline transactions too
    for tx_id in open_transactions_201(s):
        await s.csms.request_stop_transaction(CP_ID, tx_id, timeout_s=WAIT_S)
    await s.wait_until(lambda: not open_transactions_201(s), what="every transaction ended")
    if variables:
        now = await variables_201(s, list(variables))
        changed = {n: v for n, v in variables.items() if now[n] != v}
        if changed:
            answer = await s.csms.set_variables(CP_ID, changed, timeout_s=WAIT_S)
            assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * len(changed), answer
    await s.csms.change_availability_201(CP_ID, "Operative", timeout_s=WAIT_S)
    assert (await s.csms.call(CP_ID, "ClearCache", {}, timeout_s=WAIT_S))["status"] == "Accepted"
    for evse in range(1, s.spec.connectors + 1):
        await s.wait_until(lambda e=evse: last_status(s, e) == "Available",  # type: ignore[misc]
                           what=f"EVSE {evse} Available")
    await s.wait_until(lambda: not s.outbox(), what="the agent's queue delivered")
