"""Reservation over OCPP 1.6 (§3.11, §5.13, §5.1): ReserveNow and CancelReservation, and the key
ReserveConnectorZeroSupported.

What a reservation does is not here: a connector's reservation lives in its session machine, one of the whole
charger (connectorId 0) in :mod:`firmware.charger.reservations` (docs/reservation.md). This feature checks what
only the 1.6 adapter knows — reservations configured off (``[ocpp] reservations``: Rejected, "the Charge Point is
configured not to accept reservations"), connector 0 without ReserveConnectorZeroSupported (Rejected), a connector
that does not exist (Rejected) — and maps the charger's :class:`~firmware.session.ReservationStatus` to the 1.6
ReservationStatus, which has the same names.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.charger.reservations import Reservations
from firmware.config import OcppConfig
from firmware.ocpp.rpc import handles
from firmware.ocpp.timestamps import parse_timestamp
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.session import IdToken, ReservationStatus

log = logging.getLogger(__name__)

KEYS = (KeyDefinition("ReserveConnectorZeroSupported", KeyType.BOOL, "true", readonly=True),)

PROFILE = "Reservation"


def fixed_keys(ocpp: OcppConfig) -> dict[str, str]:
    """The read-only keys ``[ocpp]`` decides: whether connector 0 may be reserved, and whether the Reservation
    profile is offered at all (SupportedFeatureProfiles' default, in :mod:`configuration`, lists it)."""
    from firmware.ocpp.v16.configuration import KEYS as CONFIGURATION_KEYS  # it imports the features: not at load

    fixed = {"ReserveConnectorZeroSupported": "true" if ocpp.reserve_connector_zero and ocpp.reservations
             else "false"}
    if not ocpp.reservations:
        profiles = next(d.default for d in CONFIGURATION_KEYS if d.name == "SupportedFeatureProfiles")
        fixed["SupportedFeatureProfiles"] = ",".join(p for p in profiles.split(",") if p != PROFILE)
    return fixed


_expiry = parse_timestamp  # expiryDate (RFC 3339) in UTC, None if unreadable


class Reservation:
    def __init__(self, ctx: V16Context, reservations: Reservations) -> None:
        self.ctx = ctx
        self.reservations = reservations

    @property
    def enabled(self) -> bool:
        assert self.ctx.config.ocpp is not None
        return self.ctx.config.ocpp.reservations

    @handles(Action.reserve_now)
    async def _reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                           parent_id_tag: str | None = None, **_: Any) -> Any:
        status = await self.reserve_now(connector_id, expiry_date, id_tag, reservation_id, parent_id_tag)
        return call_result.ReserveNow(status=status.value)

    async def reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                          parent_id_tag: str | None = None) -> ReservationStatus:
        expiry = _expiry(expiry_date)
        reason = None
        if not self.enabled:
            reason = "reservations are configured off"
        elif connector_id == 0 and not self.ctx.keys.get_bool("ReserveConnectorZeroSupported"):
            reason = "connector 0 cannot be reserved (ReserveConnectorZeroSupported is false)"
        elif connector_id != 0 and connector_id not in self.ctx.connectors:
            reason = "no such connector"
        elif expiry is None:
            reason = "expiryDate unreadable"
        if reason is not None or expiry is None:
            log.info("ReserveNow rejected", extra={"connector": connector_id, "reservation_id": reservation_id,
                                                   "reason": reason})
            return ReservationStatus.REJECTED
        # the CSMS names the ids, and 1.6 says no more about them: Central
        parent = IdToken.from_ocpp16(parent_id_tag) if parent_id_tag else None
        return await self.reservations.reserve(connector_id, reservation_id, IdToken.from_ocpp16(id_tag), expiry,
                                               parent)

    @handles(Action.cancel_reservation)
    async def _cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        ok = self.enabled and await self.reservations.cancel(reservation_id)
        return call_result.CancelReservation(status="Accepted" if ok else "Rejected")
