"""Which connector a card tap belongs to, when one reader serves several connectors.

Pure: :func:`route_card` looks at what each connector is doing. In order of preference:

1. the connector whose transaction this very card started (the tap stops it), where this card is
   authorized and waiting for the EV (identify-first: a second tap cancels, OCPP 1.6 §4.9 B1), or
   whose cable is held locked for this card's owner after a DeAuthorized stop (the tap releases it);
2. a connector with an EV plugged in that is waiting for identification (plug-first);
3. an idle, available connector (identify-first: the EV is plugged in afterwards);
4. a connector in Finishing with the EV still plugged in (§4.9 F2: a tap starts a new session) —
   after the idle ones, so that on a shared reader a newcomer's card does not start someone else's
   EV that has just finished; never one whose cable is held for its owner;
5. a connector whose transaction was started by a card with a parent id (the tap may stop it if it
   belongs to the same group; the session machine asks for the card's parent id).

A tap that fits none is not routed (logged by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.session.status import ConnectorStatus


@dataclass(frozen=True)
class ConnectorView:
    id: int
    status: ConnectorStatus
    ev_connected: bool
    transaction_id_token: str | None = None
    transaction_parent_id_token: str | None = None
    authorized_id_token: str | None = None  # identify-first: an id already accepted, EV not yet plugged
    cable_held_for: str | None = None  # after a DeAuthorized stop the cable is locked for this id's owner


def route_card(uid: str, connectors: list[ConnectorView]) -> int | None:
    ordered = sorted(connectors, key=lambda c: c.id)
    for c in ordered:
        own = c.transaction_id_token or c.authorized_id_token or c.cable_held_for
        if own is not None and own.upper() == uid.upper():
            return c.id
    for c in ordered:
        if (c.status is ConnectorStatus.PREPARING and c.ev_connected and c.transaction_id_token is None
                and c.authorized_id_token is None):
            return c.id
    for c in ordered:
        if c.status in (ConnectorStatus.AVAILABLE, ConnectorStatus.RESERVED) and c.authorized_id_token is None:
            return c.id
    for c in ordered:
        if c.status is ConnectorStatus.FINISHING and c.ev_connected and c.cable_held_for is None:
            return c.id
    for c in ordered:
        if c.transaction_id_token is not None and c.transaction_parent_id_token is not None:
            return c.id
    return None
