"""The energy a transaction may still draw after the CSMS invalidated its id (1.6 MaxEnergyOnInvalidId, 2.0.1
TxCtrlr.MaxEnergyOnInvalidId): the rejection takes effect once the connector's own meter has counted that much more.

Version-agnostic: the adapter decides when an allowance applies and what the rejection then does. An allowance that
cannot be measured is none: without a meter, with a silent one, or with no recent reading the wait ends at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from firmware.charger.connector import ConnectorController
from hal.interfaces import DeviceFault, MeterReading, utcnow

log = logging.getLogger(__name__)

#: A baseline older than this cannot stand for the register now.
BASELINE_MAX_AGE = timedelta(seconds=10)


async def until_delivered(ctrl: ConnectorController, wh: float, local_id: int) -> None:
    """Return once ``ctrl``'s meter has counted ``wh`` Wh more than its latest reading, or as soon as that cannot
    be told (no meter, no recent reading, a meter fault), or once transaction ``local_id`` is no longer the
    connector's (it ended meanwhile: nothing left to limit)."""
    meter, start = ctrl.hw.meter, ctrl.latest_reading
    if meter is None or start is None or utcnow() - start.taken_at > BASELINE_MAX_AGE:
        log.warning("energy allowance not measurable; none given", extra={"connector": ctrl.id})
        return
    with meter.events.subscribe() as sub:
        async for event in sub:
            tx = ctrl.machine.transaction
            if tx is None or tx.local_id != local_id:
                return
            if isinstance(event, DeviceFault):
                log.warning("meter fault during an energy allowance; it ends", extra={"connector": ctrl.id})
                return
            if isinstance(event, MeterReading) and event.energy_import_wh - start.energy_import_wh >= wh:
                log.info("energy allowance used", extra={"connector": ctrl.id, "wh": wh,
                                                         "delivered_wh": round(event.energy_import_wh
                                                                               - start.energy_import_wh, 1)})
                return
