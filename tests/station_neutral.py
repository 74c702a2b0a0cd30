"""Putting a shared station (OCPP 1.6 or 2.0.1) back to neutral between the tests of a module.

Starting a Station costs a second or more; modules whose tests can share one (module-scoped fixture) call
:func:`back_to_neutral` after each test, so that every test finds the same station whichever ran before it.
"""

from __future__ import annotations

from collections.abc import Mapping

from sim.csms.behaviour import IdTagDirectory
from tests.station import CP_ID, WAIT_S, Station


def last_status(s: Station, connector: int) -> str | None:
    statuses = s.statuses(connector)
    return statuses[-1] if statuses else None


def open_transactions(s: Station) -> list[int]:
    return [t.transaction_id for t in s.csms.state(CP_ID).transactions.values() if t.is_open]


async def back_to_neutral(s: Station, keys: Mapping[str, str] | None = None) -> None:
    """The CSMS online, knowing no card and planning no fault; no EV plugged, no transaction open, the charge
    point Operative and every connector Available; the agent's authorization cache empty; each of ``keys`` at
    its value (only those that differ are changed). Whatever the agent queued offline has reached the CSMS, so
    that nothing of the test before arrives during the next one."""
    if not s.csms.online:
        mark = s.mark()
        await s.csms.set_online(True)
        await s.wait_booted(since=mark)  # reconnected and reported every connector's status
    await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
    s.csms.behaviour.id_tags = IdTagDirectory()
    s.csms.behaviour.faults.clear()
    for connector in range(1, s.spec.connectors + 1):
        s.ev(connector).unplug()
    await s.wait_until(lambda: not s.outbox(), what="the agent's outbox delivered")  # offline transactions too
    for tx_id in open_transactions(s):
        await s.csms.remote_stop_transaction(CP_ID, tx_id, timeout_s=WAIT_S)
    await s.wait_until(lambda: not open_transactions(s), what="every transaction ended")
    if keys:
        got = await s.csms.get_configuration(CP_ID, list(keys), timeout_s=WAIT_S)
        now = {k["key"]: k.get("value") for k in got.get("configurationKey", [])}
        for key, value in keys.items():
            if now.get(key) != value:
                answer = await s.csms.change_configuration(CP_ID, key, value, timeout_s=WAIT_S)
                assert answer["status"] == "Accepted", (key, value, answer)
    for connector in range(s.spec.connectors + 1):  # 0: the charge point
        await s.csms.change_availability(CP_ID, connector, "Operative", timeout_s=WAIT_S)
    assert (await s.csms.clear_cache(CP_ID, timeout_s=WAIT_S))["status"] == "Accepted"
    for connector in range(1, s.spec.connectors + 1):
        await s.wait_until(lambda c=connector: last_status(s, c) == "Available",  # type: ignore[misc]
                           what=f"connector {connector} Available")
    await s.wait_until(lambda: not s.outbox(), what="the agent's outbox delivered")


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
