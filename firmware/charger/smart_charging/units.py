"""Amperes and watts: what the charger's connectors are, and how a limit in one unit becomes the other (pure).

A limit in A is per phase; a limit in W is the total over the phases in use (OCPP 1.6 §3.13.4, 2.0.1 K01).
The phases in use on a connector are its own phases, reduced by the numberPhases of the period in force (default
3); the nominal voltage is configuration (230 V in Europe, 120 V / 240 V elsewhere), never a constant here —
libocpp #426/#839 hard-coded it, open-ocpp #7 got the formula wrong:

    W = A * phases * V        A = W / (phases * V)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from firmware.charger.smart_charging.profiles import RateUnit

#: The nominal line-to-neutral voltage when the configuration does not say otherwise.
DEFAULT_NOMINAL_VOLTAGE = 230.0


@dataclass(frozen=True)
class ConnectorSetup:
    rating_amps: float  # what the connector can offer at most, per phase
    phases: int = 3  # how many phases it is wired with


@dataclass(frozen=True)
class ChargerSetup:
    connectors: Mapping[int, ConnectorSetup]
    nominal_voltage: float = DEFAULT_NOMINAL_VOLTAGE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nominal_voltage) and self.nominal_voltage > 0):
            raise ValueError(f"nominal voltage must be a positive number of volts; got {self.nominal_voltage!r}")
        for cid, c in self.connectors.items():
            if cid < 1:
                raise ValueError(f"connector ids start at 1; got {cid}")
            if c.phases not in (1, 2, 3):
                raise ValueError(f"connector {cid}: phases must be 1, 2 or 3; got {c.phases!r}")
            if not (math.isfinite(c.rating_amps) and c.rating_amps >= 0):
                raise ValueError(f"connector {cid}: rating must be amperes >= 0; got {c.rating_amps!r}")

    @property
    def phases(self) -> int:
        """The charger's phases: the most any connector is wired with (a whole-charger limit in W is turned into
        amperes per phase with it — conservative for a connector wired with fewer)."""
        return max((c.phases for c in self.connectors.values()), default=3)


def to_amps(limit: float, unit: RateUnit, phases: int, voltage: float) -> float:
    """Amperes per phase for ``limit`` in ``unit``, drawn on ``phases`` phases at ``voltage``."""
    return limit if unit is RateUnit.AMPERES else limit / (phases * voltage)


def from_amps(amps: float, unit: RateUnit, phases: int, voltage: float) -> float:
    """``amps`` per phase on ``phases`` phases at ``voltage``, in ``unit``."""
    return amps if unit is RateUnit.AMPERES else amps * phases * voltage
