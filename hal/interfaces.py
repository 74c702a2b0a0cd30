"""The hardware the agent drives, as small typed async interfaces.

Every driver implements one of :class:`EvseBoard`, :class:`EnergyMeter` or :class:`IdReader`.
Drivers translate wire protocols only: they report what the hardware says (pilot state, contactor
mirror contact, readings, card UIDs, faults) and do what they are told (offer a current, allow
power). Sequencing — when to close the contactor, what a pilot change means for a session — is the
firmware's job.

All timestamps of readings and events are timezone-aware UTC ``datetime`` values taken when the
driver received the data from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from hal.events import EventStream


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    DEVICE_ERROR = "device_error"  # anything else the device reports (detail says what)


@dataclass(frozen=True)
class DeviceFault:
    """A fault was raised by ``device``; it stays active until a matching :class:`DeviceRecovered`."""

    device: str
    code: FaultCode
    detail: str = ""
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class DeviceRecovered:
    device: str
    code: FaultCode
    at: datetime = field(default_factory=utcnow)


@dataclass
class LinkStats:
    """Per-link counters, exposed by every driver for diagnostics and the self-test."""

    frames_sent: int = 0
    frames_received: int = 0
    frames_dropped: int = 0  # corrupt, truncated, noisy or unexpected frames thrown away
    timeouts: int = 0  # requests that got no answer in time
    exceptions: int = 0  # protocol-level error answers (e.g. Modbus exception responses)
    requests: int = 0  # requests issued (Modbus transactions, PN532 commands, ...)


# --- EVSE board: control pilot + contactor -------------------------------------------------------


@dataclass(frozen=True)
class PilotChanged:
    device: str
    state: PilotState
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ContactorChanged:
    """The contactor's mirror contact (feedback) changed."""

    device: str
    closed: bool
    at: datetime = field(default_factory=utcnow)


BoardEvent = PilotChanged | ContactorChanged | DeviceFault | DeviceRecovered


@runtime_checkable
class EvseBoard(Protocol):
    """Control pilot generation/sensing and the contactor of one connector."""

    name: str
    events: EventStream[BoardEvent]
    stats: LinkStats

    async def start(self) -> None:
        """Open the link and begin reporting; returns once the board has answered (or raises)."""

    async def close(self) -> None:
        """Stop, leaving the board in its safe state (no PWM, contactor open) where the protocol allows."""

    @property
    def pilot_state(self) -> PilotState | None:
        """Last sensed pilot state, ``None`` before the board first reported."""

    @property
    def contactor_closed(self) -> bool:
        """Last reported mirror-contact state."""

    async def set_offered_current(self, amps: float) -> None:
        """Offer ``amps`` on the pilot: PWM per IEC 61851-1 for >= 6 A, steady +12 V (X1) below."""

    async def set_unavailable(self, unavailable: bool) -> None:
        """Pilot state F (-12 V): the EVSE is not available. Cleared by ``False``."""

    async def allow_power(self, on: bool) -> None:
        """Close (``True``) or open the contactor. The board may refuse to close without state C/D."""


# --- energy meter ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterReading:
    """One consistent reading of a meter. Per-phase tuples are (L1, L2, L3); single-phase meters
    report one element. ``None`` where the meter does not provide the quantity."""

    device: str
    taken_at: datetime
    energy_import_wh: float
    power_w: float
    current_a: tuple[float, ...]
    voltage_v: tuple[float, ...]
    frequency_hz: float | None = None
    energy_export_wh: float | None = None


MeterEvent = MeterReading | DeviceFault | DeviceRecovered


@runtime_checkable
class EnergyMeter(Protocol):
    name: str
    events: EventStream[MeterEvent]
    stats: LinkStats

    async def start(self) -> None:
        """Begin polling; readings and faults are published on ``events``."""

    async def close(self) -> None: ...

    async def read(self) -> MeterReading:
        """Take one reading now (raises :class:`DeviceError` if the meter does not answer)."""

    @property
    def latest(self) -> MeterReading | None:
        """Most recent good reading."""


# --- identification reader ------------------------------------------------------------------------


class CardTechnology(StrEnum):
    ISO14443A = "ISO14443A"
    EM4100 = "EM4100"  # 125 kHz read-only tags


@dataclass(frozen=True)
class CardPresented:
    """A card was put on the reader. Reported once per presentation, not once per poll."""

    device: str
    uid: str  # upper-case hex, no separators
    technology: CardTechnology
    at: datetime = field(default_factory=utcnow)


ReaderEvent = CardPresented | DeviceFault | DeviceRecovered


@runtime_checkable
class IdReader(Protocol):
    name: str
    events: EventStream[ReaderEvent]
    stats: LinkStats

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class DeviceError(Exception):
    """A device did not answer, or answered with an error. The message says which and why."""
