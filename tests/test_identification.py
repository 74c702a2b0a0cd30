"""Routing a tap on a shared reader to the right connector, and the id a tap presents."""

from __future__ import annotations

from firmware.charger.card_routing import CARD_ID_TOKEN_TYPES, ConnectorView, card_id_token, route_card
from firmware.session import IdToken, IdTokenType
from firmware.session.status import ConnectorStatus as S
from hal.interfaces import CardTechnology


def card(uid: str) -> IdToken:
    return IdToken(uid, IdTokenType.ISO14443)


def test_own_transaction_wins_then_waiting_plug_then_idle_then_group() -> None:
    charging = ConnectorView(1, S.CHARGING, True, card("AAA"), IdToken.from_ocpp16("GROUP"))
    waiting = ConnectorView(2, S.PREPARING, True)
    idle = ConnectorView(3, S.AVAILABLE, False)
    assert route_card(card("aaa"), [waiting, charging, idle]) == 1
    assert route_card(card("BBB"), [charging, idle, waiting]) == 2
    assert route_card(card("BBB"), [charging, idle]) == 3
    assert route_card(card("BBB"), [charging]) == 1  # maybe the same group: the machine asks for the parent
    assert route_card(card("BBB"), [ConnectorView(1, S.CHARGING, True, card("AAA"))]) is None


def test_a_card_finds_the_transaction_a_remote_start_opened_for_its_uid() -> None:
    """1.6 remote starts carry the string alone (typed Central): the card with that UID still owns it."""
    remote = ConnectorView(2, S.CHARGING, True, IdToken.from_ocpp16("04a1b2c3"))
    assert route_card(card("04A1B2C3"), [ConnectorView(1, S.AVAILABLE, False), remote]) == 2


def test_authorized_connectors_are_not_given_a_second_card() -> None:
    authorized = ConnectorView(1, S.PREPARING, False, authorized_id_token=card("AAA"))
    faulted = ConnectorView(2, S.FAULTED, True)
    assert route_card(card("BBB"), [authorized, faulted]) is None
    assert route_card(card("CCC"), [authorized, ConnectorView(3, S.AVAILABLE, False)]) == 3


def test_a_held_cable_goes_to_its_owner_only() -> None:
    """After a DeAuthorized stop the cable is locked for its owner: their tap releases it; a newcomer's card
    is not offered to that connector even though an EV is still plugged in there."""
    held = ConnectorView(1, S.FINISHING, True, cable_held_for=card("AAA"))
    assert route_card(card("aaa"), [ConnectorView(2, S.AVAILABLE, False), held]) == 1
    assert route_card(card("BBB"), [held]) is None
    assert route_card(card("BBB"), [ConnectorView(1, S.FINISHING, True)]) == 1  # not held: F2, a new session


def test_a_tap_is_typed_by_the_readers_technology() -> None:
    assert card_id_token("04A1B2C3D4E5F6", CardTechnology.ISO14443A) == IdToken("04A1B2C3D4E5F6",
                                                                                 IdTokenType.ISO14443)
    # EM4100 (125 kHz, 5 bytes) is no ISO 14443/15693 card: Local, the type that claims no format
    em = card_id_token("0F00A1B2C3", CardTechnology.EM4100)
    assert em.type is IdTokenType.LOCAL and em.value == "0F00A1B2C3"
    assert set(CARD_ID_TOKEN_TYPES) == set(CardTechnology), "every reader technology needs a deliberate type"


def test_agent_log_lines_mask_typed_tokens_as_before() -> None:
    """``dataclasses.asdict`` would spell an IdToken out as a dict: the agent masks it to the old string."""
    from firmware.event_log import event_fields as _event_fields
    from firmware.session import IdTokenRefused, RefusalReason, TransactionStopped
    from firmware.session.effects import StopReason, Trigger

    who = card("04A1B2C3D4E5F6")
    fields = _event_fields(TransactionStopped(1, StopReason.LOCAL, Trigger.STOP_AUTHORIZED, who, stopped_by=who))
    assert fields["id_token"] == fields["stopped_by"] == "***E5F6"
    assert _event_fields(IdTokenRefused(who, RefusalReason.NOT_OWNER))["id_token"] == "***E5F6"
    assert "04A1B2C3" not in repr(_event_fields(TransactionStopped(1, StopReason.LOCAL, Trigger.STOP_AUTHORIZED, who)))
