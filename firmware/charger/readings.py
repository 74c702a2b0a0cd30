"""What a connector's meter reading stands for, the same for every OCPP version and for telemetry.

``energy_wh`` is the register as transactions carry it (1.6 meterStart/meterStop, 2.0.1 the Energy sample of
TransactionEvent); ``fresh_reading`` decides whether the latest reading may be stamped with a given time.
"""

from __future__ import annotations

from datetime import datetime

from firmware.charger.connector import ConnectorController
from hal.interfaces import FaultCode, MeterReading

#: A reading older than this does not stand for the meter "now" (a few poll intervals).
STALE_READING_S = 10.0


def fresh_reading(ctrl: ConnectorController, at: datetime) -> MeterReading | None:
    """The connector's latest reading if it can stand for the meter at ``at``. A silent meter leaves its
    last reading behind; sampled values stamped with a time the meter was not read at would be wrong
    data, so none are sent while the meter's link is lost or the reading is old (the connector reports
    PowerMeterFailure meanwhile; start/stop values still use the last reading)."""
    reading = ctrl.latest_reading
    if reading is None or abs((at - reading.taken_at).total_seconds()) > STALE_READING_S:
        return None
    if any(f.code is FaultCode.LINK_LOST and f.source.startswith("meter:") for f in ctrl.machine.faults):
        return None
    return reading


def energy_wh(reading: MeterReading | None) -> int:
    """The energy register in whole Wh, as a transaction's start and stop carry it (0 without a reading)."""
    return 0 if reading is None else round(reading.energy_import_wh)
