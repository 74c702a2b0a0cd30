"""IEC 61851-1 control pilot PWM duty cycle <-> maximum current (Annex A, table A.7/A.8).

Pure functions: used by board drivers that generate the PWM on the host side of the protocol
(I/O board) and, mirrored, by the simulated EV that reads the PWM.
"""

from __future__ import annotations

import math

MIN_CURRENT_A = 6.0
MAX_CURRENT_A = 80.0


def current_to_duty(amps: float) -> float | None:
    """Duty cycle in percent that offers ``amps``, or ``None`` when no PWM may be generated.

    6-51 A: duty = A / 0.6; 51-80 A: duty = A / 2.5 + 64. Below 6 A no current can be offered
    (the caller keeps the pilot at a steady +12 V, state X1); above 80 A is clamped to 80 A.
    The EV never reads more than ``amps`` back from the returned duty.
    """
    if amps < MIN_CURRENT_A:
        return None
    amps = min(amps, MAX_CURRENT_A)
    if amps <= 51.0:
        return _floor_hundredth(amps / 0.6)
    # The two ranges do not meet: 85 % reads as 51 A, and (d - 64) * 2.5 only applies above 85 %,
    # i.e. from 52.5 A. Offers in between are signalled as 85 % (51 A): never more than requested.
    return max(85.0, _floor_hundredth(amps / 2.5 + 64.0))


def _floor_hundredth(duty: float) -> float:
    """Round down to 0.01 %: rounding up could offer a hair more than asked."""
    return math.floor(duty * 100.0 + 1e-6) / 100.0


def duty_to_current(duty: float) -> float:
    """Maximum current (A) an EV may draw for a measured duty cycle in percent; 0.0 when not allowed.

    Per IEC 61851-1 the EV side reads: < 3 % not allowed, 3-7 % digital communication (5 % nominal),
    8-10 % -> 6 A, 10-85 % -> duty * 0.6, 85-96 % -> (duty - 64) * 2.5, 96-97 % -> 80 A, > 97 % not allowed.
    """
    if duty < 8.0 or duty > 97.0:
        return 0.0
    if duty < 10.0:
        return 6.0
    if duty <= 85.0:
        return round(duty * 0.6, 2)
    if duty <= 96.0:
        return round((duty - 64.0) * 2.5, 2)
    return 80.0
