"""The TxStartPoint / TxStopPoint rules (E01, E06) on the facts a session machine shows, step by step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from firmware.ocpp.v201.transaction_points import (
    EvseFacts,
    TxPoint,
    parse_points,
    start_point_reached,
    stop_point_reached,
)
from firmware.session import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    CardPresented,
    IdToken,
    IdTokenType,
    PilotChanged,
    SessionConfig,
    SessionMachine,
    TimerExpired,
    TimerName,
)
from hal.types import PilotState

P = TxPoint
IDLE = EvseFacts()
EV = EvseFacts(ev=True)
HELD = EvseFacts(authorized=True)
TX = EvseFacts(ev=True, authorized=True, power_path=True)
CHARGING = EvseFacts(ev=True, authorized=True, power_path=True, energy=True)
ALL = frozenset(TxPoint)


def test_parse_points() -> None:
    assert parse_points(["EVConnected", "Authorized"]) == {P.EV_CONNECTED, P.AUTHORIZED}
    assert parse_points([]) == {P.POWER_PATH_CLOSED}  # an empty list: the default
    assert parse_points(["ParkingBayOccupancy"]) == {P.POWER_PATH_CLOSED}


@pytest.mark.parametrize(("points", "before", "after", "reached"), [
    ({P.EV_CONNECTED}, IDLE, EV, P.EV_CONNECTED),  # E01 S2: plugged in
    ({P.AUTHORIZED}, IDLE, EV, None),
    ({P.AUTHORIZED}, IDLE, HELD, P.AUTHORIZED),  # E01 S3: authorized before the EV came
    ({P.AUTHORIZED}, EV, TX, P.AUTHORIZED),
    ({P.POWER_PATH_CLOSED}, HELD, TX, P.POWER_PATH_CLOSED),  # E01 S5
    ({P.POWER_PATH_CLOSED}, IDLE, HELD, None),
    ({P.ENERGY_TRANSFER}, IDLE, TX, None),
    ({P.ENERGY_TRANSFER}, TX, CHARGING, P.ENERGY_TRANSFER),  # E01 S6
    (ALL, IDLE, TX, P.EV_CONNECTED),  # the first of several
])
def test_start_points(points: set[TxPoint], before: EvseFacts, after: EvseFacts, reached: TxPoint | None) -> None:
    assert start_point_reached(frozenset(points), before, after) is reached


@pytest.mark.parametrize(("points", "before", "after", "reached"), [
    ({P.EV_CONNECTED}, CHARGING, EV, None),  # a local stop: the transaction waits for the unplug
    ({P.EV_CONNECTED}, EV, IDLE, P.EV_CONNECTED),
    ({P.AUTHORIZED}, CHARGING, EV, P.AUTHORIZED),  # E06 S3
    ({P.AUTHORIZED}, CHARGING, HELD, None),  # StopTxOnEVSideDisconnect false: suspended (E10)
    ({P.POWER_PATH_CLOSED}, CHARGING, HELD, P.POWER_PATH_CLOSED),  # E06 S5: either one ends it
    ({P.POWER_PATH_CLOSED}, CHARGING, EV, P.POWER_PATH_CLOSED),
    ({P.ENERGY_TRANSFER}, CHARGING, TX, P.ENERGY_TRANSFER),  # E06 S6: the EV paused
    ({P.EV_CONNECTED}, HELD, IDLE, P.POWER_PATH_CLOSED),  # nothing left that could continue it
    ({P.ENERGY_TRANSFER}, TX, TX, None),
])
def test_stop_points(points: set[TxPoint], before: EvseFacts, after: EvseFacts, reached: TxPoint | None) -> None:
    assert stop_point_reached(frozenset(points), before, after) is reached


def test_facts_of_a_machine_through_identify_first_and_its_timeout() -> None:
    m = SessionMachine(1, SessionConfig(connection_timeout_s=30))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    card = IdToken("CARD1", IdTokenType.ISO14443)
    assert EvseFacts.of(m) == IDLE
    m.handle(CardPresented(card), now)
    m.handle(AuthorizationResult(card, AuthStatus.ACCEPTED, source=AuthSource.ONLINE), now)
    assert EvseFacts.of(m) == HELD
    m.handle(TimerExpired(TimerName.CONNECTION_TIMEOUT), now)
    assert EvseFacts.of(m) == IDLE
    m.handle(PilotChanged(PilotState.B), now)
    assert EvseFacts.of(m) == EV


def test_connector_status_of_a_tethered_cable_without_its_ev_is_available() -> None:
    """E10 (TC_E_27_CS step 3): a transaction an unplug suspended leaves a tethered cable's connector Available; a
    socket may still hold the EV's cable (we cannot sense it): Occupied until the session settles."""
    from firmware.ocpp.v201.mapping import connector_status
    from firmware.session import ConnectorStatus

    assert connector_status(ConnectorStatus.SUSPENDED_EV, False, tethered=True) == "Available"
    assert connector_status(ConnectorStatus.SUSPENDED_EV, False) == "Occupied"
    assert connector_status(ConnectorStatus.SUSPENDED_EV, True, tethered=True) == "Occupied"
    assert connector_status(ConnectorStatus.FAULTED, False, tethered=True) == "Faulted"
