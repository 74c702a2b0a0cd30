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
from hal.types import FaultCode, PilotState

__all__ = ["FaultCode", "PilotState"]  # re-exported: defined in hal.types, free of asyncio


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class LockState(StrEnum):
    """What a cable lock actuator's feedback says (docs/ioboard-protocol.md STATE ``lock``)."""

    UNLOCKED = "unlocked"
    LOCKED = "locked"
    MOVING = "moving"  # commanded, the feedback has not reached the commanded position yet
    FAULT = "fault"  # the feedback did not reach the commanded position in time (a stuck or broken lock)


@dataclass(frozen=True)
class LockChanged:
    """The cable lock's feedback changed."""

    device: str
    state: LockState
    at: datetime = field(default_factory=utcnow)


BoardEvent = PilotChanged | ContactorChanged | LockChanged | DeviceFault | DeviceRecovered


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
        """Grant (``True``) or withdraw the permission to energize the connector (IEC 61851 "ready to
        supply", state x2 with PWM).

        With permission, the board closes the contactor while the EV requests energy (pilot C/D) and
        opens it when the EV stops requesting (back to B/A) — this switching belongs on the board side
        (safety microcontroller, or the EVSE-DIN's own firmware) so it reacts in milliseconds. Without
        permission the contactor is open. A board withdraws the permission by itself on a blocking fault
        or when the host falls silent; the host grants it again after the fault has cleared.
        """

    @property
    def lock_supported(self) -> bool:
        """Whether the board drives a cable lock actuator with feedback (a socket-outlet's lock)."""

    @property
    def lock_state(self) -> LockState | None:
        """The lock's last reported feedback; ``None`` without a lock, or before the board first reported."""

    async def set_cable_lock(self, locked: bool) -> LockState:
        """Drive the cable lock to ``locked`` and return the feedback once it has settled: the commanded
        position, or :attr:`LockState.FAULT` (or still :attr:`LockState.MOVING` when the board said nothing
        in time) if the lock did not get there. Raises :class:`LockUnsupportedError` on a board without a
        lock, :class:`DeviceError` when the board does not take the command."""


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


class LockUnsupportedError(DeviceError):
    """The board has no cable lock actuator (e.g. an EVSE-DIN board, or an I/O board built without one)."""
