"""Pure mappings between the charger's own model and OCPP 1.6 values.

Fault sources are ``"<kind>:<device>"`` strings set by the connector controller (``board:board1``,
``meter:meter1``, ``reader:reader1``) so that a lost link maps to the right 1.6 error code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from firmware.charger.metering import Sample
from firmware.ocpp.timestamps import expiry
from firmware.ocpp.timestamps import timestamp as timestamp  # re-exported: the 1.6 features use mapping.timestamp
from firmware.session.effects import StopReason
from firmware.session.events import AuthStatus
from firmware.session.id_token import IdToken
from firmware.storage.auth_stores import IdTagInfo
from hal.types import FaultCode

log = logging.getLogger(__name__)

_BY_CODE: dict[FaultCode, str] = {
    FaultCode.RCD_TRIP: "GroundFailure",
    FaultCode.OVERTEMPERATURE: "HighTemperature",
    FaultCode.DIODE_FAILURE: "EVCommunicationError",
    FaultCode.CONTACTOR_WELDED: "PowerSwitchFailure",
    FaultCode.CONTACTOR_FAILED_TO_CLOSE: "PowerSwitchFailure",
    FaultCode.VENTILATION_REQUIRED: "OtherError",
    FaultCode.CONNECTOR_LOCK_FAILURE: "ConnectorLockFailure",
    FaultCode.DEVICE_ERROR: "InternalError",
}
_LINK_LOST_BY_KIND = {"meter": "PowerMeterFailure", "reader": "ReaderFailure", "board": "InternalError"}


def error_code(code: FaultCode | None, source: str = "") -> tuple[str, str | None]:
    """``(ChargePointErrorCode, vendorErrorCode)`` for a fault; ``("NoError", None)`` without one.

    The vendor code names our fault precisely (e.g. ``contactor_welded``), since several of ours share
    one 1.6 code.
    """
    if code is None:
        return "NoError", None
    kind = source.split(":", 1)[0]
    if code is FaultCode.DEVICE_ERROR and kind == "meter":
        return "PowerMeterFailure", code.value
    if code is FaultCode.LINK_LOST:
        return _LINK_LOST_BY_KIND.get(kind, "InternalError"), code.value
    return _BY_CODE.get(code, "OtherError"), code.value


def stop_reason(reason: StopReason) -> str:
    """StopTransaction's ``Reason``: the machine's reasons are 1.6's, but for two that arise only under 2.0.1 rules
    (the mapping stays total): MasterPass is Local ("stopped locally on request of the user at the Charge Point ...
    presenting an RFID tag": a master pass is an id presented at the charger to stop), Timeout (E10.FR.02) Other."""
    return _STOP_REASON_16.get(reason, reason.value)


_STOP_REASON_16 = {StopReason.MASTER_PASS: "Local", StopReason.TIMEOUT: "Other"}


def auth_status(value: str) -> AuthStatus:
    """1.6 AuthorizationStatus string to ours (unknown strings are Invalid: never trust them)."""
    try:
        return AuthStatus(value)
    except ValueError:
        return AuthStatus.INVALID


def id_tag_info(info: Mapping[str, Any]) -> IdTagInfo:
    """A 1.6 IdTagInfo object as it comes on the wire. Never raises: an unknown status is Invalid (never trust
    what we cannot read), and an unreadable expiryDate is taken as already passed — an id must not become valid
    forever because its date was garbled."""
    raw_status = str(info.get("status"))
    try:
        status = AuthStatus(raw_status)
    except ValueError:
        status = AuthStatus.INVALID
    if status is AuthStatus.UNKNOWN:  # not a 1.6 AuthorizationStatus
        status = AuthStatus.INVALID
    parent = info.get("parentIdTag")
    return IdTagInfo(status, expiry(info.get("expiryDate"), "expiryDate"),
                     str(parent) if parent is not None else None)


def parent_id_token(parent_id_tag: object) -> IdToken | None:
    """A 1.6 ``parentIdTag`` (IdTagInfo) as the session's group id: the CSMS named it, so Central; absent (or
    not a string) is no group."""
    return IdToken.from_ocpp16(parent_id_tag) if isinstance(parent_id_tag, str) else None


def sampled_values(samples: list[Sample]) -> list[dict[str, Any]]:
    """1.6 SampledValue objects (camelCase, strings as the schema wants)."""
    out = []
    for s in samples:
        value: dict[str, Any] = {"value": s.formatted_value(), "context": s.context.value, "format": "Raw",
                                 "measurand": s.measurand, "location": s.location}
        if s.phase is not None:
            value["phase"] = s.phase
        if s.unit is not None:
            value["unit"] = s.unit
        out.append(value)
    return out


def meter_value(when: datetime, samples: list[Sample]) -> dict[str, Any]:
    return {"timestamp": timestamp(when), "sampledValue": sampled_values(samples)}
