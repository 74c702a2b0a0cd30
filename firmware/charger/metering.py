"""Meter values as OCPP defines them, independent of the OCPP version.

Measurand, context, phase, unit and location names are the same strings in OCPP 1.6 and 2.0.1, so a
:class:`Sample` can be turned into either version's sampled value by its adapter. Pure functions:
which samples a reading yields for a configured measurand list, and when the next clock-aligned
interval ends (intervals are evenly spaced from midnight, OCPP 1.6 §9.1 ClockAlignedDataInterval).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from hal.interfaces import MeterReading


class ReadingContext(StrEnum):
    PERIODIC = "Sample.Periodic"
    CLOCK = "Sample.Clock"
    TRANSACTION_BEGIN = "Transaction.Begin"
    TRANSACTION_END = "Transaction.End"
    TRIGGER = "Trigger"
    INTERRUPTION_BEGIN = "Interruption.Begin"
    INTERRUPTION_END = "Interruption.End"


@dataclass(frozen=True)
class Sample:
    measurand: str
    value: float
    unit: str | None  # None where OCPP 1.6 has no unit for it (Frequency)
    context: ReadingContext
    phase: str | None = None
    location: str = "Outlet"

    def formatted_value(self) -> str:
        """OCPP carries values as strings; energy as whole Wh, the rest with at most 3 decimals."""
        if self.measurand.startswith("Energy."):
            return str(round(self.value))
        return f"{self.value:.3f}".rstrip("0").rstrip(".")


_PHASES = ("L1", "L2", "L3")


def samples_from_reading(reading: MeterReading, measurands: list[str], context: ReadingContext,
                         offered_current_a: float | None = None) -> list[Sample]:
    """The samples ``measurands`` ask for that this reading can provide, in the configured order."""
    out: list[Sample] = []
    for m in measurands:
        if m == "Energy.Active.Import.Register":
            out.append(Sample(m, reading.energy_import_wh, "Wh", context))
        elif m == "Energy.Active.Export.Register" and reading.energy_export_wh is not None:
            out.append(Sample(m, reading.energy_export_wh, "Wh", context))
        elif m == "Power.Active.Import":
            out.append(Sample(m, max(0.0, reading.power_w), "W", context))
        elif m == "Current.Import":
            out += [Sample(m, a, "A", context, phase=p) for p, a in zip(_PHASES, reading.current_a, strict=False)]
        elif m == "Voltage":
            out += [Sample(m, v, "V", context, phase=f"{p}-N") for p, v in zip(_PHASES, reading.voltage_v,
                                                                                    strict=False)]
        elif m == "Frequency" and reading.frequency_hz is not None:
            out.append(Sample(m, reading.frequency_hz, None, context))
        elif m == "Current.Offered" and offered_current_a is not None:
            out.append(Sample(m, offered_current_a, "A", context))
    return out


def total_reading(readings: list[MeterReading]) -> MeterReading | None:
    """The whole charger's reading as the sum of its connectors' meters (it has no main meter of its own):
    the energy registers and the power add up; per-phase currents and voltages do not (the connectors' phases
    may be rotated against each other, ConnectorPhaseRotation) and frequency is not a sum, so they are left out.
    Export only if every meter has it; taken at the oldest of the readings. None without readings."""
    if not readings:
        return None
    exports = [r.energy_export_wh for r in readings]
    return MeterReading(
        device="total", taken_at=min(r.taken_at for r in readings),
        energy_import_wh=sum(r.energy_import_wh for r in readings), power_w=sum(max(0.0, r.power_w) for r in readings),
        current_a=(), voltage_v=(),
        energy_export_wh=None if any(e is None for e in exports) else sum(e for e in exports if e is not None))


def next_aligned_time(now: datetime, interval_s: int) -> datetime:
    """The end of the clock-aligned interval ``now`` lies in (strictly after ``now``).

    Intervals start at midnight of ``now``'s own timezone (the controller runs on UTC) and repeat every
    ``interval_s`` seconds; the last one of a day is cut short at the next midnight.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - midnight).total_seconds()
    n = int(elapsed // interval_s) + 1
    candidate = midnight + timedelta(seconds=n * interval_s)
    next_midnight = midnight + timedelta(days=1)
    return min(candidate, next_midnight)
