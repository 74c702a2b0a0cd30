"""The session machine's values as OCPP 2.0.1 writes them (docs/session.md, "Mapping for the adapters")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from firmware.charger.metering import Sample
from firmware.ocpp.timestamps import expiry, timestamp
from firmware.session import AuthStatus, ConnectorStatus, StopReason
from firmware.session.id_token import IdToken, IdTokenType
from firmware.storage.auth_stores import IdTagInfo
from hal.types import FaultCode

_S = ConnectorStatus


def connector_status(status: ConnectorStatus, ev_connected: bool, tethered: bool = False) -> str:
    """``ConnectorStatusEnumType``: the machine's nine statuses folded into five. A tethered cable without its EV
    occupies nothing, even while a transaction an unplug suspended waits for the EV (E10: Available); a socket may
    still hold the EV's cable, which we cannot sense, so it stays Occupied until the session settles."""
    if status in (_S.FAULTED, _S.UNAVAILABLE, _S.RESERVED):
        return status.value
    if status is _S.AVAILABLE or (not ev_connected and (status is _S.PREPARING or tethered)):
        return "Available"
    return "Occupied"


def charging_state(status: ConnectorStatus, ev_connected: bool) -> str:
    """``ChargingStateEnumType`` of a transaction: Idle whenever no EV is connected ("There is no connection between
    EV and EVSE"; the machine may still say SuspendedEV for a transaction an unplug suspended, E10)."""
    if not ev_connected:
        return "Idle"
    if status in (_S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE):
        return status.value
    return "EVConnected"


def stopped_reason(reason: StopReason, fault: FaultCode | None) -> str:
    """``ReasonEnumType`` for TransactionEvent Ended."""
    if reason in (StopReason.HARD_RESET, StopReason.SOFT_RESET):
        return "ImmediateReset"
    if reason is StopReason.UNLOCK_COMMAND:
        return "Other"
    if reason is StopReason.OTHER:
        return "GroundFault" if fault is FaultCode.RCD_TRIP else "Other"
    return reason.value


def id_token(token: IdToken) -> dict[str, Any]:
    """``IdTokenType``; NoAuthorization carries an empty value."""
    return {"idToken": token.value, "type": token.type.value}


def parse_id_token(raw: object) -> IdToken | None:
    """An ``IdTokenType`` from the wire (already schema-checked), or None."""
    if not isinstance(raw, dict):
        return None
    try:
        return IdToken(str(raw["idToken"]), IdTokenType(str(raw["type"])))
    except (KeyError, ValueError):
        return None


def parent_id_token_of(id_token_info: object) -> IdToken | None:
    """The group (``groupIdToken``) of an IdTokenInfo, the machine's parent id token."""
    return parse_id_token(id_token_info.get("groupIdToken")) if isinstance(id_token_info, dict) else None


_AUTH = {s.value: s for s in AuthStatus}


def auth_status(value: str) -> AuthStatus:
    """``AuthorizationStatusEnumType``: the values 1.6 has too as they are; NoCredit, NotAllowedTypeEVSE,
    NotAtThisLocation and NotAtThisTime as Invalid (docs/session.md)."""
    status = _AUTH.get(value)
    return status if status is not None else AuthStatus.INVALID


def sampled_values(samples: list[Sample]) -> list[dict[str, Any]]:
    """2.0.1 ``SampledValueType``: a number, with its unit in ``unitOfMeasure``."""
    out = []
    for s in samples:
        value: dict[str, Any] = {"value": round(s.value, 3), "context": s.context.value, "measurand": s.measurand,
                                 "location": s.location}
        if s.phase is not None:
            value["phase"] = s.phase
        if s.unit is not None:
            value["unitOfMeasure"] = {"unit": s.unit}
        out.append(value)
    return out


def meter_value(when: datetime, samples: list[Sample]) -> dict[str, Any]:
    return {"timestamp": timestamp(when), "sampledValue": sampled_values(samples)}


def id_token_info(info: Mapping[str, Any]) -> IdTagInfo:
    """A 2.0.1 IdTokenInfo as the stores keep it. Never raises: an unreadable cacheExpiryDateTime is taken as
    already passed (an id must not become valid forever because its date was garbled)."""
    status = auth_status(str(info.get("status")))
    group = parent_id_token_of(info)
    return IdTagInfo(status, expiry(info.get("cacheExpiryDateTime"), "cacheExpiryDateTime"),
                     group.value if group is not None else None)


__all__ = ["auth_status", "charging_state", "connector_status", "id_token", "id_token_info", "meter_value",
           "parent_id_token_of", "parse_id_token", "sampled_values", "stopped_reason", "timestamp"]
