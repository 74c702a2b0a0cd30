"""What the EV model, the charger assembly and the control API need from a simulated device.

Each simulated device speaks its real wire protocol on the device end of a :class:`sim.devices.serial_wire.SerialWire`
and, on the other side, offers one of these small in-process interfaces to the physics (the EV and
the grid) and to fault injection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from hal.interfaces import PilotState


class BoardFault(StrEnum):
    """Faults that can be injected into a simulated EVSE board."""

    RCD_TRIP = "rcd_trip"  # residual current detected: board opens the contactor and reports it
    OVERTEMPERATURE = "overtemperature"
    DIODE_FAILURE = "diode_failure"  # the EV's pilot diode is missing/shorted
    WELDED = "welded"  # contactor stays closed whatever it is told
    STUCK_OPEN = "stuck_open"  # contactor never closes
    SILENT = "silent"  # the board's microcontroller stops answering on the serial line
    LOCK_STUCK = "lock_stuck"  # the cable lock actuator does not move (jammed, motor or driver broken)


@dataclass
class ElectricalState:
    """What a meter measures. Per-phase tuples are (L1, L2, L3)."""

    voltage_v: tuple[float, float, float] = (230.0, 230.0, 230.0)
    current_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    frequency_hz: float = 50.0
    energy_import_wh: float = 0.0
    energy_export_wh: float = 0.0
    power_factor: float = 1.0

    @property
    def power_w(self) -> float:
        return sum(v * i for v, i in zip(self.voltage_v, self.current_a, strict=True)) * self.power_factor

    def advance(self, dt_s: float) -> None:
        """Integrate the present power over ``dt_s`` seconds into the import register."""
        self.energy_import_wh += self.power_w * dt_s / 3600.0


class SimulatedBoard(Protocol):
    """The EV-facing side of a simulated EVSE board (one connector)."""

    def set_ev_pilot(self, state: PilotState) -> None:
        """The pilot state the EV's resistor network presents (A when unplugged, B, C, D; E = short)."""

    @property
    def offered_current_a(self) -> float:
        """Current the pilot PWM offers now (0.0 with no PWM / state X1 / F)."""

    @property
    def contactor_closed(self) -> bool:
        """Whether the contactor is physically closed (power reaches the EV)."""

    def inject(self, fault: BoardFault, active: bool = True) -> None: ...


class SimulatedMeter(Protocol):
    """A simulated energy meter: reflects ``update()`` in its registers from then on."""

    def update(self, state: ElectricalState) -> None: ...

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) answering requests addressed to this meter."""


class SimulatedReader(Protocol):
    """A simulated identification reader."""

    def present(self, uid: str) -> None:
        """Put a card (upper-case hex UID) on the reader; it stays there until :meth:`remove`."""

    def remove(self) -> None: ...

    def set_silent(self, silent: bool) -> None: ...


@dataclass
class DeviceCounters:
    """Counters a simulated device keeps about what it received (tests assert on them)."""

    requests: int = 0
    bad_frames: int = 0
    extra: dict[str, int] = field(default_factory=dict)
