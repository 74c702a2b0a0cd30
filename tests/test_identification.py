"""Routing a tap on a shared reader to the right connector."""

from __future__ import annotations

from firmware.charger.card_routing import ConnectorView, route_card
from firmware.session.status import ConnectorStatus as S


def test_own_transaction_wins_then_waiting_plug_then_idle_then_group() -> None:
    charging = ConnectorView(1, S.CHARGING, True, "AAA", "GROUP")
    waiting = ConnectorView(2, S.PREPARING, True)
    idle = ConnectorView(3, S.AVAILABLE, False)
    assert route_card("aaa", [waiting, charging, idle]) == 1
    assert route_card("BBB", [charging, idle, waiting]) == 2
    assert route_card("BBB", [charging, idle]) == 3
    assert route_card("BBB", [charging]) == 1  # maybe the same group: the machine asks for the parent
    assert route_card("BBB", [ConnectorView(1, S.CHARGING, True, "AAA")]) is None


def test_authorized_connectors_are_not_given_a_second_card() -> None:
    authorized = ConnectorView(1, S.PREPARING, False, authorized_id_token="AAA")
    faulted = ConnectorView(2, S.FAULTED, True)
    assert route_card("BBB", [authorized, faulted]) is None
    assert route_card("CCC", [authorized, ConnectorView(3, S.AVAILABLE, False)]) == 3


def test_a_held_cable_goes_to_its_owner_only() -> None:
    """After a DeAuthorized stop the cable is locked for its owner: their tap releases it; a newcomer's card
    is not offered to that connector even though an EV is still plugged in there."""
    held = ConnectorView(1, S.FINISHING, True, cable_held_for="AAA")
    assert route_card("aaa", [ConnectorView(2, S.AVAILABLE, False), held]) == 1
    assert route_card("BBB", [held]) is None
    assert route_card("BBB", [ConnectorView(1, S.FINISHING, True)]) == 1  # not held: F2, a new session
