"""H Reservation over OCPP 2.0.1: ReserveNow, CancelReservation and ReservationStatusUpdate, and the
ReservationCtrlr variables (Enabled, Available, NonEvseSpecific).

A thin translation, as the 1.6 feature is: what a reservation does lives in the session machine (one EVSE's) and
in :mod:`firmware.charger.reservations` (one without an EVSE: the station-wide reservation, 1.6's connector 0).
This module checks what only the 2.0.1 adapter knows — reservations off (ReservationCtrlr.Available false:
``[ocpp] reservations`` off; or Enabled false, set by the CSMS), a reservation without ``evseId`` while
NonEvseSpecific is false (``[ocpp] reserve_connector_zero`` off), an EVSE that does not exist: Rejected with a
reasonCode — and maps the charger's
:class:`~firmware.session.ReservationStatus` to ``ReserveNowStatusEnumType`` (the same names). ``connectorType``
(H01 S3): every EVSE has one connector (Connector.ConnectorType: ``sType2``, ``cType2`` when tethered); a type the
EVSE given does not have, or, without ``evseId``, one not every EVSE has, is Rejected (reasonCode
UnknownConnectorType) — the station-wide reservation of the charger layer keeps any EVSE free, it knows no types.

A reservation that ends unused is reported with ReservationStatusUpdate: Expired at its expiryDateTime, Removed
when the charger removed it (its EVSE, or the whole station, made Unavailable or Faulted). One the CSMS cancelled
is not (the CSMS knows); one that was used shows as ``reservationId`` in the TransactionEvent Started of the
transaction it began (:mod:`transactions`). The update goes through the durable outbox (in order with the
TransactionEvents, like the security events): one due while offline, or while the agent is stopped, is delivered
after the reconnect. It belongs to no transaction: a CALLERROR gives it up at once (the CSMS refused it), no answer
is a stale link (sent again first after the reconnect) — ``firmware/ocpp/delivery.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.reservations import Reservations
from firmware.ocpp.rpc import handles
from firmware.ocpp.timestamps import parse_timestamp
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.inventory import connector_type
from firmware.session import IdToken, ReservationEndReason, ReservationStatus

log = logging.getLogger(__name__)

COMPONENT = "ReservationCtrlr"

#: ReservationEndReason -> ReservationUpdateStatusEnumType (only the ends the charger reports)
_UPDATE_STATUS = {ReservationEndReason.EXPIRED: "Expired", ReservationEndReason.REMOVED: "Removed"}


def _token(raw: dict[str, Any] | None) -> IdToken | None:
    """An ``IdTokenType`` as the ocpp library hands it to a handler (snake_case keys)."""
    if raw is None:
        return None
    return mapping.parse_id_token({"idToken": raw.get("id_token"), "type": raw.get("type")})


class Reservation:
    def __init__(self, ctx: V201Context, reservations: Reservations) -> None:
        self.ctx = ctx
        self.reservations = reservations
        reservations.end_listeners.append(self._ended)
        ocpp = ctx.config.ocpp
        assert ocpp is not None
        # what the station supports is configuration ([ocpp] reservations, reserve_connector_zero), ReadOnly here
        ctx.variables.fix(COMPONENT, "Available", "true" if ocpp.reservations else "false")
        ctx.variables.fix(COMPONENT, "NonEvseSpecific",
                          "true" if ocpp.reservations and ocpp.reserve_connector_zero else "false")

    def _enabled(self) -> bool:
        v = self.ctx.variables
        return v.get_bool(COMPONENT, "Available") and v.get_bool(COMPONENT, "Enabled")

    @handles(Action.reserve_now)
    async def _reserve_now(self, id: int, expiry_date_time: str, id_token: dict[str, Any],
                           evse_id: int | None = None, group_id_token: dict[str, Any] | None = None,
                           connector_type: str | None = None, **_: Any) -> Any:
        expiry = parse_timestamp(expiry_date_time)
        token = _token(id_token)
        group = _token(group_id_token)
        reason = None
        if not self._enabled():
            reason = "UnsupportedRequest"  # reservations configured off
        elif evse_id is None and not self.ctx.variables.get_bool(COMPONENT, "NonEvseSpecific"):
            reason = "MissingParam"  # no evseId, and a reservation of the whole station is not offered
        elif evse_id is not None and evse_id not in self.ctx.connectors:
            reason = "UnknownEvse"
        elif expiry is None or token is None or (group_id_token is not None and group is None):
            reason = "InvalidValue"
        elif connector_type is not None and not self._has_type(evse_id, connector_type):
            reason = "UnknownConnectorType"
        if reason is not None or expiry is None or token is None:
            log.info("ReserveNow rejected", extra={"evse": evse_id, "reservation_id": id, "reason": reason})
            return call_result.ReserveNow(status=ReservationStatus.REJECTED.value,
                                          status_info={"reasonCode": reason})
        # evseId absent: the whole station (the charger layer's connector 0)
        status = await self.reservations.reserve(evse_id or 0, id, token, expiry, group)
        return call_result.ReserveNow(status=status.value)

    def _has_type(self, evse_id: int | None, wanted: str) -> bool:
        """The EVSE's connector (without ``evse_id``: every EVSE's) is of the ``connectorType`` asked for."""
        types = {c.id: connector_type(c) for c in self.ctx.config.connectors}
        return all(t == wanted for evse, t in types.items() if evse_id is None or evse == evse_id)

    @handles(Action.cancel_reservation)
    async def _cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        ok = self._enabled() and await self.reservations.cancel(reservation_id)
        return call_result.CancelReservation(status="Accepted" if ok else "Rejected")

    # --- a reservation ended unused ---------------------------------------------------------------

    def _ended(self, reservation_id: int, reason: ReservationEndReason) -> None:
        status = _UPDATE_STATUS.get(reason)
        if status is None:
            return
        self.ctx.outbox.queue("ReservationStatusUpdate",
                              {"reservationId": reservation_id, "reservationUpdateStatus": status})
        log.info("ReservationStatusUpdate queued", extra={"reservation_id": reservation_id, "status": status})
        self.ctx.wake_delivery()
