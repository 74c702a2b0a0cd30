"""The reservation rules that are pure: the charger-wide (connector 0) answer and where it shows
(firmware/charger/reservations.py), its durable form, card routing to reserved connectors, and the 1.6 feature's
fixed keys and expiry parsing. Behaviour end to end: tests/test_e2e_reservation.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.charger.authorization import Authorizer, AuthSettings
from firmware.charger.card_routing import ConnectorView, route_card
from firmware.charger.reservations import (
    ChargerReservation,
    ConnectorState,
    charger_out_of_service,
    charger_wide_answer,
    placement,
)
from firmware.config import OcppConfig
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.reservation import _expiry, fixed_keys
from firmware.session import AuthSource, AuthStatus, ConnectorStatus, IdToken, ReservationStatus, SnapshotError
from firmware.session.id_token import IdTokenType
from firmware.storage import Database
from firmware.storage.auth_stores import IdTagInfo

S = ConnectorStatus
R = ReservationStatus
T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
HELD = ChargerReservation(5, IdToken.from_ocpp16("CARD"), IdToken.from_ocpp16("FLEET"), T0 + timedelta(minutes=10))


def states(*statuses: ConnectorStatus, reserved: dict[int, int] | None = None) -> list[ConnectorState]:
    reserved = reserved or {}
    return [ConnectorState(i, st, reserved.get(i)) for i, st in enumerate(statuses, start=1)]


def test_charger_wide_answer() -> None:
    assert charger_wide_answer(states(S.AVAILABLE, S.CHARGING), None, 1) is R.ACCEPTED
    assert charger_wide_answer(states(S.CHARGING, S.PREPARING), None, 1) is R.OCCUPIED
    assert charger_wide_answer(states(S.RESERVED, S.UNAVAILABLE, reserved={1: 9}), None, 1) is R.OCCUPIED
    assert charger_wide_answer(states(S.UNAVAILABLE, S.UNAVAILABLE), None, 1) is R.UNAVAILABLE
    assert charger_wide_answer(states(S.FAULTED, S.FAULTED), None, 1) is R.FAULTED
    assert charger_wide_answer(states(S.FAULTED, S.UNAVAILABLE), None, 1) is R.FAULTED  # nothing in use
    assert charger_wide_answer([], None, 1) is R.UNAVAILABLE
    # one at a time; the same id replaces it, also where a connector shows it
    assert charger_wide_answer(states(S.AVAILABLE, S.AVAILABLE), HELD, 6) is R.OCCUPIED
    assert charger_wide_answer(states(S.RESERVED, S.CHARGING, reserved={1: 5}), HELD, 5) is R.ACCEPTED
    # a connector's own reservation with this id may be replaced by a charger-wide one
    assert charger_wide_answer(states(S.RESERVED, S.CHARGING, reserved={1: 7}), None, 7) is R.ACCEPTED


def test_placement_shows_on_the_last_free_connector_only() -> None:
    assert placement(states(S.AVAILABLE, S.AVAILABLE), HELD) == (None, None)  # two free: shown nowhere
    assert placement(states(S.CHARGING, S.AVAILABLE), HELD) == (2, None)  # one left: it shows Reserved
    assert placement(states(S.CHARGING, S.RESERVED, reserved={2: 5}), HELD) == (None, None)  # already there
    assert placement(states(S.AVAILABLE, S.RESERVED, reserved={2: 5}), HELD) == (None, 2)  # another free again
    assert placement(states(S.CHARGING, S.FAULTED), HELD) == (None, None)  # none free: nowhere to show it
    # a connector reserved for somebody else is not free
    assert placement(states(S.RESERVED, S.AVAILABLE, reserved={1: 9}), HELD) == (2, None)


def test_charger_out_of_service() -> None:
    assert charger_out_of_service(states(S.UNAVAILABLE, S.FAULTED))
    assert not charger_out_of_service(states(S.UNAVAILABLE, S.CHARGING))


def test_charger_reservation_admits_its_id_or_group() -> None:
    assert HELD.admits(IdToken("card", IdTokenType.ISO14443), None)
    assert HELD.admits(IdToken("OTHER", IdTokenType.ISO14443), IdToken.from_ocpp16("fleet"))
    assert not HELD.admits(IdToken("OTHER", IdTokenType.ISO14443), IdToken.from_ocpp16("VISITORS"))
    alone = ChargerReservation(1, IdToken.from_ocpp16("CARD"), None, T0)
    assert not alone.admits(IdToken("OTHER", IdTokenType.ISO14443), None)


def test_charger_reservation_durable_form() -> None:
    assert ChargerReservation.from_json(HELD.to_json()) == HELD
    for raw in ("{", "[]", '{"reservation_id": 1}', HELD.to_json().replace("+00:00", ""),
                HELD.to_json().replace('"reservation_id": 5', '"reservation_id": true'),
                HELD.to_json().replace('"Central"', '"Bogus"')):
        with pytest.raises(SnapshotError):
            ChargerReservation.from_json(raw)


def test_cards_are_routed_to_the_connector_reserved_for_them() -> None:
    card = IdToken("04AA", IdTokenType.ISO14443)
    mine = ConnectorView(2, S.RESERVED, False, reserved_for=IdToken.from_ocpp16("04aa"))
    theirs = ConnectorView(1, S.RESERVED, False, reserved_for=IdToken.from_ocpp16("04BB"))
    group = ConnectorView(3, S.RESERVED, False, reserved_for=IdToken.from_ocpp16("04CC"),
                          reserved_group=IdToken.from_ocpp16("FLEET"))
    idle = ConnectorView(4, S.AVAILABLE, False)
    waiting = ConnectorView(5, S.PREPARING, True)
    assert route_card(card, [theirs, mine, idle]) == 2
    assert route_card(card, [theirs, mine, waiting]) == 5  # an EV waiting for a card takes it (plug-first)
    other = IdToken("04DD", IdTokenType.ISO14443)
    assert route_card(other, [theirs, group, idle]) == 4  # a free connector before any reserved one
    assert route_card(other, [theirs, group]) == 3  # maybe of the group: the machine asks
    assert route_card(other, [theirs]) == 1  # the machine refuses it (Reserved)


def test_fixed_keys_follow_the_configuration() -> None:
    on = OcppConfig(csms_url="ws://x")
    assert fixed_keys(on) == {"ReserveConnectorZeroSupported": "true"}  # the profiles' default lists Reservation
    no_zero = OcppConfig(csms_url="ws://x", reserve_connector_zero=False)
    assert fixed_keys(no_zero) == {"ReserveConnectorZeroSupported": "false"}
    off = fixed_keys(OcppConfig(csms_url="ws://x", reservations=False))
    assert off["ReserveConnectorZeroSupported"] == "false"
    assert "Reservation" not in off["SupportedFeatureProfiles"].split(",")
    assert {"Core", "SmartCharging"} <= set(off["SupportedFeatureProfiles"].split(","))


def test_fixed_keys_are_read_only_and_refuse_writable_keys(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    keys = ConfigurationKeys(db, 1, fixed={"ReserveConnectorZeroSupported": "False"})
    assert keys.get_bool("ReserveConnectorZeroSupported") is False
    assert keys.change("ReserveConnectorZeroSupported", "true").value == "Rejected"
    with pytest.raises(ValueError):
        ConfigurationKeys(db, 1, fixed={"HeartbeatInterval": "10"})  # writable: the CSMS's to set
    with pytest.raises(ValueError):
        ConfigurationKeys(db, 1, fixed={"ReserveConnectorZeroSupported": "maybe"})


def test_expiry_date_parsing() -> None:
    assert _expiry("2026-01-01T12:00:00Z") == T0
    assert _expiry("2026-01-01T12:00:00.000z") == T0
    assert _expiry("2026-01-01T13:00:00+01:00") == T0
    assert _expiry("2026-01-01T12:00:00") == T0  # no offset: UTC
    assert _expiry("tomorrow") is None
    assert _expiry("9999-12-31T23:59:59-05:00") is None  # beyond what UTC can hold: Rejected, not a crash


def test_authorizer_lookup_list_before_cache(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    settings = AuthSettings()
    auth = Authorizer(db, lambda: settings)
    assert auth.lookup("A", T0) is None
    auth.learn("A", IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="CACHED"), T0)
    assert auth.lookup("A", T0) == (IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="CACHED"), AuthSource.CACHE)
    auth.local_list.replace(1, [("A", IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="LISTED"))])
    assert auth.lookup("A", T0) == (IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="LISTED"), AuthSource.LOCAL_LIST)
    settings = AuthSettings(cache_enabled=False, local_list_enabled=False)
    assert auth.lookup("A", T0) is None  # a disabled store is not looked at
