"""Which connector a card tap belongs to, when one reader serves several connectors.

Pure: :func:`route_card` looks at what each connector is doing. In order of preference:

1. the connector whose transaction this very card started (the tap stops it), where this card is
   authorized and waiting for the EV (identify-first: a second tap cancels, OCPP 1.6 §4.9 B1),
   or whose cable is held locked for this card's owner after a DeAuthorized stop (the tap releases it);
2. a connector with an EV plugged in that is waiting for identification (plug-first), then one reserved for
   this card (a charger-wide reservation is used wherever its card starts, docs/reservation.md);
3. an idle, available connector (identify-first: the EV is plugged in afterwards), then a reserved one whose
   reservation names a group (the card may belong to it: the session machine asks);
4. a connector in Finishing with the EV still plugged in (§4.9 F2: a tap starts a new session) —
   after the idle ones, so that on a shared reader a newcomer's card does not start someone else's
   EV that has just finished; never one whose cable is held for its owner;
5. a connector whose transaction was started by a card with a parent id (the tap may stop it if it
   belongs to the same group; the session machine asks for the card's parent id) — with ``master_pass`` (a master
   pass group is configured, OCPP 2.0.1 C16) any connector with a transaction or an id authorized and waiting for
   its EV: the card may be a master pass, which ends them all (:mod:`~firmware.charger.master_pass`);
6. a connector reserved for another card (the session machine refuses the tap: Reserved).

A tap that fits none is not routed (logged by the caller). A card matches an id by value, ignoring case and
type (:meth:`~firmware.session.id_token.IdToken.matches`), as the session machine does.

:func:`card_id_token` makes the tap's id: the UID, typed by the reader's technology.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware.session.id_token import IdToken, IdTokenType
from firmware.session.status import ConnectorStatus
from hal.interfaces import CardTechnology

#: The OCPP 2.0.1 ``IdTokenEnumType`` of a card's UID, by the technology the reader read it with.
#: EM4100 (125 kHz, read-only, a 5-byte id) is neither ISO 14443 (4- or 7-byte UID) nor ISO 15693 (8 bytes),
#: and 2.0.1 has no type for proprietary low-frequency tags: it is ``Local``, the one type for an id the
#: station itself produced that claims no format (Central would say the CSMS issued it; KeyCode is a PIN).
CARD_ID_TOKEN_TYPES: Mapping[CardTechnology, IdTokenType] = {
    CardTechnology.ISO14443A: IdTokenType.ISO14443,
    CardTechnology.EM4100: IdTokenType.LOCAL,
}


def card_id_token(uid: str, technology: CardTechnology) -> IdToken:
    """The id a tap presents: the UID as the reader reports it, typed by its technology (Local, claiming no
    format, for a technology this table does not know yet)."""
    return IdToken(uid, CARD_ID_TOKEN_TYPES.get(technology, IdTokenType.LOCAL))


@dataclass(frozen=True)
class ConnectorView:
    id: int
    status: ConnectorStatus
    ev_connected: bool
    transaction_id_token: IdToken | None = None
    transaction_parent_id_token: IdToken | None = None
    authorized_id_token: IdToken | None = None  # identify-first: an id already accepted, EV not yet plugged
    cable_held_for: IdToken | None = None  # after a DeAuthorized stop the cable is locked for this id's owner
    reserved_for: IdToken | None = None  # the id the connector's reservation is for
    reserved_group: IdToken | None = None  # the reservation's parent id, if it names one


def route_card(card: IdToken, connectors: list[ConnectorView], *, master_pass: bool = False) -> int | None:
    ordered = sorted(connectors, key=lambda c: c.id)
    for c in ordered:
        own = c.transaction_id_token or c.authorized_id_token or c.cable_held_for
        if card.matches(own):
            return c.id
    for c in ordered:
        if (c.status is ConnectorStatus.PREPARING and c.ev_connected and c.transaction_id_token is None
                and c.authorized_id_token is None):
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.RESERVED and card.matches(c.reserved_for):
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.AVAILABLE and c.authorized_id_token is None:
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.RESERVED and c.reserved_group is not None:
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.FINISHING and c.ev_connected and c.cable_held_for is None:
            return c.id
    for c in ordered:
        if c.transaction_id_token is not None and c.transaction_parent_id_token is not None:
            return c.id
        if master_pass and (c.transaction_id_token is not None or c.authorized_id_token is not None):
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.RESERVED:
            return c.id
    return None
