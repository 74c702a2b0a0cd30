"""A simple electric vehicle on one connector: what lies beyond the charger, so a model is fine here.

The EV presents a pilot state through its resistor network (A unplugged, B connected, C ready to
charge, D with ventilation), reads the offered current from the PWM, and, when the contactor is
closed and it is in C/D, draws min(its own maximum, the offered current) on each of its phases.
It can pause (C -> B) and resume, and it stops by itself when its battery is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.interfaces import PilotState

#: Below this offer an EV does not draw current (IEC 61851-1: 6 A is the smallest valid PWM offer).
MIN_DRAW_A = 6.0


@dataclass
class EvModel:
    max_current_a: float = 32.0
    phases: int = 3  # 1 or 3
    plugged: bool = False
    paused: bool = False  # the EV's own choice to stop drawing (C -> B)
    ventilation: bool = False  # requests state D instead of C
    battery_capacity_wh: float = 60_000.0
    battery_wh: float = 30_000.0

    def plug(self) -> None:
        self.plugged = True

    def unplug(self) -> None:
        self.plugged = False
        self.paused = False

    @property
    def full(self) -> bool:
        return self.battery_wh >= self.battery_capacity_wh

    def pilot(self) -> PilotState:
        if not self.plugged:
            return PilotState.A
        if self.paused or self.full:
            return PilotState.B
        return PilotState.D if self.ventilation else PilotState.C

    def draw(self, offered_a: float, contactor_closed: bool) -> tuple[float, float, float]:
        """Per-phase current (L1, L2, L3) the EV takes now."""
        if not contactor_closed or self.pilot() not in (PilotState.C, PilotState.D) or offered_a < MIN_DRAW_A:
            return (0.0, 0.0, 0.0)
        amps = min(self.max_current_a, offered_a)
        if self.phases == 1:
            return (amps, 0.0, 0.0)
        return (amps, amps, amps)

    def absorb(self, energy_wh: float) -> None:
        self.battery_wh = min(self.battery_capacity_wh, self.battery_wh + energy_wh)
