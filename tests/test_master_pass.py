"""The master pass across the charger (OCPP 2.0.1 C16; firmware/charger/master_pass.py, card_routing.py): a tap is
routed to a running transaction when a master pass group is configured, and a master pass accepted at one connector
stops the transactions of every other one — real connector controllers on one database, two boards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from firmware.charger.card_routing import ConnectorView, route_card
from firmware.charger.connector import ConnectorController
from firmware.charger.coordinator import Coordinator
from firmware.charger.master_pass import master_pass_used
from firmware.hardware import ConnectorHardware
from firmware.session import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    CardPresented,
    ConnectorStatus,
    IdToken,
    IdTokenRefused,
    IdTokenType,
    PilotChanged,
    RefusalReason,
    SessionConfig,
    StopReason,
    TransactionStopped,
    Trigger,
)
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from hal.interfaces import PilotState
from tests.test_connector_durability import Billing
from tests.test_connector_lock import LockBoard

S = ConnectorStatus
GROUP = IdToken("POLICE", IdTokenType.CENTRAL)
OFFICER = IdToken("0FF1CE01", IdTokenType.ISO14443)


def card(uid: str) -> IdToken:
    return IdToken(uid, IdTokenType.ISO14443)


def test_with_a_master_pass_group_a_stranger_tap_goes_to_a_running_transaction() -> None:
    one = ConnectorView(1, S.CHARGING, True, card("AAA"))
    two = ConnectorView(2, S.SUSPENDED_EV, True, card("CCC"))
    assert route_card(card("BBB"), [two, one]) is None  # 1.6, no group: nobody could act on it
    assert route_card(card("BBB"), [two, one], master_pass=True) == 1  # the machine asks: it may be a master pass
    assert route_card(card("BBB"), [two, one, ConnectorView(3, S.AVAILABLE, False)], master_pass=True) == 3
    held = ConnectorView(1, S.PREPARING, False, authorized_id_token=card("AAA"))  # waiting for its EV
    assert route_card(card("BBB"), [held]) is None
    assert route_card(card("BBB"), [held], master_pass=True) == 1


def test_the_master_pass_a_step_acted_on() -> None:
    stopped = TransactionStopped(1, StopReason.MASTER_PASS, Trigger.STOP_AUTHORIZED, card("AAA"), OFFICER)
    assert master_pass_used([stopped]) == (OFFICER, True)
    assert master_pass_used([IdTokenRefused(OFFICER, RefusalReason.MASTER_PASS)]) == (OFFICER, False)
    assert master_pass_used([IdTokenRefused(OFFICER, RefusalReason.NOT_OWNER),
                             TransactionStopped(1, StopReason.LOCAL, Trigger.STOP_AUTHORIZED, card("A"), card("A"))]) \
        is None


def charger(tmp_path: Path, n: int) -> tuple[Coordinator, Database]:
    db = Database(tmp_path / "agent.db")
    connectors: dict[int, ConnectorController] = {}
    coordinator = Coordinator(connectors, db)
    for cid in range(1, n + 1):
        ctrl = ConnectorController(ConnectorHardware(cid, LockBoard(), None, 32.0, 3),  # type: ignore[arg-type]
                                   SessionConfig(max_current_amps=32.0, master_pass_group=GROUP), db)
        ctrl.observers.append(Billing(db))
        coordinator.master_pass.attach(ctrl)
        connectors[cid] = ctrl
    return coordinator, db


async def charge(ctrl: ConnectorController, token: IdToken) -> None:
    await ctrl.handle(PilotChanged(PilotState.B))
    await ctrl.handle(CardPresented(token))
    await ctrl.handle(AuthorizationResult(token, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    await ctrl.handle(PilotChanged(PilotState.C))
    assert ctrl.machine.status is S.CHARGING


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 2.0
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_a_master_pass_stops_every_transaction(tmp_path: Path) -> None:
    """C16.FR.02 without a UI: tapped on the shared reader while both connectors charge, it is authorized at the
    first; accepted with the master pass group, the first stops (MasterPass) and then the second, each recorded."""
    coordinator, db = charger(tmp_path, 2)
    one, two = coordinator.connectors[1], coordinator.connectors[2]
    await charge(one, card("AAA"))
    await charge(two, card("CCC"))
    assert await coordinator.card_presented(OFFICER, (), "reader1") == 1
    effects = await one.handle(AuthorizationResult(OFFICER, AuthStatus.ACCEPTED, GROUP, AuthSource.ONLINE))
    assert [e.reason for e in effects if isinstance(e, TransactionStopped)] == [StopReason.MASTER_PASS]
    await until(lambda: two.machine.transaction is None, "the second connector's transaction stopped")
    assert two.machine.status is S.FINISHING and not two.machine.power_allowed
    ledger = Ledger(db)
    assert [(r.connector, r.stop_reason) for r in (ledger.get(1, 1), ledger.get(2, 1)) if r is not None] == [
        (1, "MasterPass"), (2, "MasterPass")]
    await coordinator.master_pass.close()
    for ctrl in coordinator.connectors.values():
        await ctrl.close()


async def test_a_master_pass_at_an_idle_connector_starts_nothing_there_and_stops_the_others(tmp_path: Path) -> None:
    """C16.FR.03 and .02 together: routed to the idle connector (identify-first), refused there as a master pass —
    no session —, and the running transaction elsewhere is stopped."""
    coordinator, _ = charger(tmp_path, 2)
    one, two = coordinator.connectors[1], coordinator.connectors[2]
    await charge(two, card("CCC"))
    assert await coordinator.card_presented(OFFICER, (), "reader1") == 1
    effects = await one.handle(AuthorizationResult(OFFICER, AuthStatus.ACCEPTED, GROUP, AuthSource.ONLINE))
    assert effects == [IdTokenRefused(OFFICER, RefusalReason.MASTER_PASS, AuthStatus.ACCEPTED)]
    await until(lambda: two.machine.transaction is None, "the other connector's transaction stopped")
    assert one.machine.status is S.AVAILABLE and one.machine.authorization is None
    await coordinator.master_pass.close()
    for ctrl in coordinator.connectors.values():
        await ctrl.close()


def test_every_stop_reason_is_a_reason_of_each_version() -> None:
    """The machine's StopReason on the wire: 1.6 sends MasterPass, which its Reason lacks, as Local (an id presented
    at the charger to stop), and Timeout as Other; 2.0.1 has both itself. Every value is one the version's schema
    accepts."""
    from ocpp.v16.enums import Reason
    from ocpp.v201.enums import ReasonEnumType

    from firmware.ocpp.v16.mapping import stop_reason
    from firmware.ocpp.v201.mapping import stopped_reason

    assert stop_reason(StopReason.MASTER_PASS) == "Local"
    assert stopped_reason(StopReason.MASTER_PASS, None) == "MasterPass"
    assert stop_reason(StopReason.TIMEOUT) == "Other"
    assert stopped_reason(StopReason.TIMEOUT, None) == "Timeout"
    for reason in StopReason:
        assert stop_reason(reason) in {r.value for r in Reason}, reason
        assert stopped_reason(reason, None) in {r.value for r in ReasonEnumType}, reason
        if reason not in (StopReason.MASTER_PASS, StopReason.TIMEOUT):
            assert stop_reason(reason) == reason.value  # 1.6 unchanged


async def test_a_master_pass_refused_where_an_id_waits_for_its_ev_ends_that_authorization_too(tmp_path: Path) -> None:
    """One connector, an id authorized and waiting for its EV (a 2.0.1 transaction begun at Authorized): the master
    pass is routed there, refused as a start — and the waiting authorization is ended (MasterPass)."""
    coordinator, _ = charger(tmp_path, 1)
    one = coordinator.connectors[1]
    await one.handle(CardPresented(card("AAA")))
    await one.handle(AuthorizationResult(card("AAA"), AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert one.machine.authorization is not None
    assert await coordinator.card_presented(OFFICER, (), "reader1") == 1
    await one.handle(AuthorizationResult(OFFICER, AuthStatus.ACCEPTED, GROUP, AuthSource.ONLINE))
    await until(lambda: one.machine.authorization is None, "the waiting authorization ended")
    assert one.machine.status is S.AVAILABLE and one.machine.transaction is None
    await coordinator.master_pass.close()
    await one.close()
