"""Plain value types of the hardware layer, importable by pure logic (no asyncio, no I/O).

The session state machine uses these; :mod:`hal.interfaces` re-exports them.
"""

from __future__ import annotations

from enum import StrEnum


class PilotState(StrEnum):
    """Control pilot state as sensed by the EVSE (IEC 61851-1, table A.3)."""

    A = "A"  # +12 V: no EV connected
    B = "B"  # +9 V: EV connected, not ready to charge
    C = "C"  # +6 V: EV ready, charging allowed
    D = "D"  # +3 V: EV ready, ventilation required
    E = "E"  # 0 V: pilot shorted / EVSE supply problem
    F = "F"  # -12 V: EVSE not available (also a failed diode check is reported as a fault)


class FaultCode(StrEnum):
    """Faults a device can raise; the firmware maps them to OCPP error codes."""

    LINK_LOST = "link_lost"  # the device stopped answering (meter, reader, board)
    RCD_TRIP = "rcd_trip"  # residual current device tripped
    OVERTEMPERATURE = "overtemperature"
    DIODE_FAILURE = "diode_failure"  # EV diode check failed (pilot negative half missing)
    CONTACTOR_WELDED = "contactor_welded"  # mirror contact says closed although commanded open
    CONTACTOR_FAILED_TO_CLOSE = "contactor_failed_to_close"  # commanded closed, mirror stays open
    VENTILATION_REQUIRED = "ventilation_required"  # state D on an EVSE without ventilation
    CONNECTOR_LOCK_FAILURE = "connector_lock_failure"  # the cable lock did not reach its commanded position
    DEVICE_ERROR = "device_error"  # anything else the device reports (detail says what)
