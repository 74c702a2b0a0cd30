"""Meter values for OCPP 1.6: sampled per transaction, clock-aligned per charge point, and the transaction
data a StopTransaction carries.

* **Sampled** (MeterValueSampleInterval, MeterValuesSampledData): every interval after a transaction's start,
  a MeterValues of that transaction.
* **Clock-aligned** (ClockAlignedDataInterval, MeterValuesAlignedData): at every multiple of the interval
  past midnight, one MeterValues per connector — part of the connector's transaction if it has one,
  else of the connector alone (still queued, so that register readings of an offline period are kept).
* **Transaction data** (StopTxnSampledData, StopTxnAlignedData): the same instants (plus begin and end),
  gathered in memory and sent inside the StopTransaction.

All of them go to the durable outbox (:class:`~firmware.storage.outbox.Outbox`); the delivery worker sends them
in order. Each is queued with what a cap on the outbox may do with it (docs/storage.md): periodic values of a
transaction, and every value of no transaction, may be thinned; clock-aligned values of a transaction are kept.
Readings that cannot stand for the meter at the sample's time are not sent (:func:`fresh_reading`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from firmware.charger.connector import ConnectorController
from firmware.charger.metering import ReadingContext, Sample, next_aligned_time, samples_from_reading
from firmware.charger.readings import energy_wh, fresh_reading
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.keys import CSL_MAX_LENGTH, DAY_S, SUPPORTED_MEASURANDS, KeyDefinition, KeyType
from firmware.storage.outbox import Outbox, QueuedMessage
from hal.interfaces import MeterReading, utcnow

if TYPE_CHECKING:
    from firmware.ocpp.v16.configuration import ConfigurationKeys

_M = SUPPORTED_MEASURANDS
KEYS = (
    KeyDefinition("ClockAlignedDataInterval", KeyType.INT, "0", minimum=0, maximum=DAY_S),
    KeyDefinition("MeterValuesAlignedData", KeyType.CSL, "Energy.Active.Import.Register", choices=_M,
                  max_items=CSL_MAX_LENGTH),
    KeyDefinition("MeterValuesAlignedDataMaxLength", KeyType.INT, str(CSL_MAX_LENGTH), readonly=True),
    KeyDefinition("MeterValuesSampledData", KeyType.CSL, "Energy.Active.Import.Register,Power.Active.Import",
                  choices=_M, max_items=CSL_MAX_LENGTH),
    KeyDefinition("MeterValuesSampledDataMaxLength", KeyType.INT, str(CSL_MAX_LENGTH), readonly=True),
    KeyDefinition("MeterValueSampleInterval", KeyType.INT, "60", minimum=0, maximum=DAY_S),
    KeyDefinition("StopTxnAlignedData", KeyType.CSL, "", choices=_M, max_items=CSL_MAX_LENGTH),
    KeyDefinition("StopTxnAlignedDataMaxLength", KeyType.INT, str(CSL_MAX_LENGTH), readonly=True),
    KeyDefinition("StopTxnSampledData", KeyType.CSL, "Energy.Active.Import.Register", choices=_M,
                  max_items=CSL_MAX_LENGTH),
    KeyDefinition("StopTxnSampledDataMaxLength", KeyType.INT, str(CSL_MAX_LENGTH), readonly=True),
)


@dataclass
class _TransactionSamples:
    """Meter data gathered during a transaction for StopTransaction's transactionData."""

    local_id: int
    values: list[dict[str, Any]] = field(default_factory=list)
    next_sample: datetime | None = None


class MeterValuesReporter:
    """Samples the connectors' meters for OCPP and queues the MeterValues; ``wake`` tells the delivery worker."""

    def __init__(self, connectors: dict[int, ConnectorController], keys: ConfigurationKeys, outbox: Outbox,
                 wake: Callable[[], None]) -> None:
        self.connectors = connectors
        self.keys = keys
        self.outbox = outbox
        self._wake = wake
        self._samples: dict[int, _TransactionSamples] = {}  # connector -> its running transaction's data
        keys.on_change(lambda _key, _value: self.reschedule(), {"MeterValueSampleInterval"})

    # --- transactions (called inside the connector's commit: no I/O but the database) -----------------

    def transaction_started(self, ctrl: ConnectorController, local_id: int, reading: MeterReading | None,
                            now: datetime) -> None:
        samples = _TransactionSamples(local_id)
        self._samples[ctrl.id] = samples
        self._add_stop_txn_samples(samples, reading, ReadingContext.TRANSACTION_BEGIN, now, ctrl)
        self._schedule_sampling(samples, now)

    def transaction_stopped(self, ctrl: ConnectorController, local_id: int, reading: MeterReading | None,
                            now: datetime) -> list[dict[str, Any]]:
        """The transaction's data for its StopTransaction (may be empty)."""
        samples = self._samples.pop(ctrl.id, _TransactionSamples(local_id))
        self._add_stop_txn_samples(samples, reading, ReadingContext.TRANSACTION_END, now, ctrl)
        return samples.values

    def reschedule(self) -> None:
        """MeterValueSampleInterval changed: running transactions sample at the new interval from now."""
        now = utcnow()
        for samples in self._samples.values():
            self._schedule_sampling(samples, now)

    # --- the sampling loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Periodic (per transaction) and clock-aligned meter values, for as long as the agent runs."""
        next_aligned: datetime | None = None
        grid = 0  # the ClockAlignedDataInterval next_aligned was computed for
        while True:
            now = utcnow()
            aligned_interval = self.keys.get_int("ClockAlignedDataInterval")
            if aligned_interval > 0:
                if next_aligned is None or aligned_interval != grid:  # first, or the interval was changed
                    grid = aligned_interval
                    next_aligned = next_aligned_time(now, aligned_interval)
                elif now >= next_aligned:
                    self._clock_tick(next_aligned)
                    next_aligned = next_aligned_time(now, aligned_interval)
            else:
                next_aligned = None
            for cid, samples in list(self._samples.items()):
                if samples.next_sample is not None and now >= samples.next_sample:
                    self._periodic_sample(self.connectors[cid], samples, now)
                    self._schedule_sampling(samples, now)
            deadlines = [s.next_sample for s in self._samples.values() if s.next_sample is not None]
            if next_aligned is not None:
                deadlines.append(next_aligned)
            wait = min(((d - utcnow()).total_seconds() for d in deadlines), default=1.0)
            await asyncio.sleep(min(max(wait, 0.01), 1.0))

    def _schedule_sampling(self, samples: _TransactionSamples, now: datetime) -> None:
        interval = self.keys.get_int("MeterValueSampleInterval")
        samples.next_sample = now + timedelta(seconds=interval) if interval > 0 else None

    def _add_stop_txn_samples(self, samples: _TransactionSamples, reading: MeterReading | None,
                              context: ReadingContext, now: datetime, ctrl: ConnectorController) -> None:
        key = "StopTxnAlignedData" if context is ReadingContext.CLOCK else "StopTxnSampledData"
        if reading is None:
            return
        selected = samples_from_reading(reading, self.keys.get_list(key), context, ctrl.view.offered_amps)
        if selected:
            samples.values.append(mapping.meter_value(now, selected))

    def _periodic_sample(self, ctrl: ConnectorController, samples: _TransactionSamples, now: datetime) -> None:
        reading = fresh_reading(ctrl, now)
        tx = ctrl.machine.transaction
        if reading is None or tx is None or tx.local_id != samples.local_id:
            return
        self._add_stop_txn_samples(samples, reading, ReadingContext.PERIODIC, now, ctrl)
        selected = samples_from_reading(reading, self.keys.get_list("MeterValuesSampledData"),
                                        ReadingContext.PERIODIC, ctrl.view.offered_amps)
        if selected:
            self.outbox.queue_many([_meter_values_message(ctrl.id, samples.local_id, now, selected,
                                                          ReadingContext.PERIODIC)])
            self._wake()

    def _clock_tick(self, at: datetime) -> None:
        """Clock-aligned values of every connector, queued in one commit. A value belongs to a transaction
        only once its StartTransaction is queued (``transaction_started`` ran): before that, and once the stop
        is under way, it is a value of the connector alone — never queued ahead of the StartTransaction it
        needs."""
        batch: list[QueuedMessage] = []
        for ctrl in self.connectors.values():
            reading = fresh_reading(ctrl, at)
            if reading is None:
                continue
            tx = ctrl.machine.transaction
            samples = self._samples.get(ctrl.id)
            local_id = None
            if tx is not None and samples is not None and samples.local_id == tx.local_id:
                local_id = tx.local_id
                self._add_stop_txn_samples(samples, reading, ReadingContext.CLOCK, at, ctrl)
            selected = samples_from_reading(reading, self.keys.get_list("MeterValuesAlignedData"),
                                            ReadingContext.CLOCK, ctrl.view.offered_amps)
            if selected:
                batch.append(_meter_values_message(ctrl.id, local_id, at, selected, ReadingContext.CLOCK))
        if batch:
            self.outbox.queue_many(batch)
            self._wake()


def _meter_values_message(connector: int, local_id: int | None, when: datetime, selected: list[Sample],
                          context: ReadingContext) -> QueuedMessage:
    """A MeterValues for the outbox; one of no transaction is queued without a connector (the payload has it)."""
    payload = {"connectorId": connector, "meterValue": [mapping.meter_value(when, selected)]}
    return QueuedMessage("MeterValues", payload, connector if local_id is not None else None, local_id, when,
                         thinnable=thinnable(local_id, context))


def thinnable(local_id: int | None, context: ReadingContext) -> bool:
    """Whether a cap on the outbox may drop these values: the periodic samples of a transaction (its start, stop
    and clock-aligned values tell the bill), and any values of no transaction (no bill at all)."""
    return local_id is None or context is ReadingContext.PERIODIC


__all__ = ["MeterValuesReporter", "energy_wh", "fresh_reading", "thinnable"]
