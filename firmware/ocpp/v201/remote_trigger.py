"""F06 TriggerMessage over OCPP 2.0.1: the answer first, then the message.

* BootNotification: Rejected once the CSMS accepted this run of the agent (there is nothing to register again);
  before that, the boot worker sends its next one as it would anyway.
* Heartbeat: sent now.
* StatusNotification: the current status of the EVSE given (every EVSE without one), even if it is no news.
* TransactionEvent: an Updated event with triggerReason Trigger for the EVSE's transaction (Rejected without one;
  without an EVSE, one for every transaction).
* MeterValues (OCTT TC_F_11_CS, TC_F_12_CS): a fresh reading of the EVSE's meter (of every EVSE without one), the
  AlignedDataCtrlr.Measurands with context Trigger, in MeterValues for the EVSE — sent at once, not through the
  outbox (current values are of no use minutes later behind a backlog), as the 1.6 feature does. Rejected ("will not
  be sent") when no meter concerned has a recent reading; an EVSE whose meter cannot give one when the message is
  sent sends nothing.
* Any other message (LogStatusNotification, FirmwareStatusNotification, the certificate requests,
  PublishFirmwareStatusNotification): NotImplemented.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.metering import ReadingContext, samples_from_reading
from firmware.charger.readings import fresh_reading
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.provisioning import Provisioning
from firmware.ocpp.v201.status import StatusReporter
from firmware.ocpp.v201.transactions import Transactions
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

_SUPPORTED = {"BootNotification", "Heartbeat", "MeterValues", "StatusNotification", "TransactionEvent"}


class RemoteTrigger:
    def __init__(self, ctx: V201Context, provisioning: Provisioning, statuses: StatusReporter,
                 transactions: Transactions) -> None:
        self.ctx = ctx
        self.provisioning = provisioning
        self.statuses = statuses
        self.transactions = transactions

    def _evses(self, evse: dict[str, Any] | None) -> list[int] | None:
        """The EVSEs a trigger names (all without ``evse``), or None for one this station does not have."""
        if evse is None or evse.get("id", 0) == 0:
            return list(self.ctx.connectors)
        evse_id = int(evse["id"])
        return [evse_id] if evse_id in self.ctx.connectors and evse.get("connector_id", 1) == 1 else None

    @handles(Action.trigger_message)
    async def _trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        if requested_message not in _SUPPORTED:
            return call_result.TriggerMessage(status="NotImplemented")
        evses = self._evses(evse)
        if evses is None or (requested_message == "BootNotification" and self.provisioning.accepted):
            return call_result.TriggerMessage(status="Rejected")
        if requested_message == "TransactionEvent" and not any(
                self.ctx.connectors[e].machine.transaction is not None for e in evses):
            return call_result.TriggerMessage(status="Rejected")
        if requested_message == "MeterValues" and not any(
                fresh_reading(self.ctx.connectors[e], utcnow()) is not None for e in evses):
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after_answering(Action.trigger_message)
    def _after_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> None:
        evses = self._evses(evse)
        if evses is None:
            return
        if requested_message == "Heartbeat":
            self.ctx.spawn(self._heartbeat())
        elif requested_message == "StatusNotification":
            self.statuses.triggered(evses)
        elif requested_message == "TransactionEvent":
            for e in evses:
                self.transactions.triggered(self.ctx.connectors[e])
        elif requested_message == "MeterValues":
            self.ctx.spawn(self._meter_values(evses))

    async def _meter_values(self, evses: list[int]) -> None:
        measurands = self.ctx.variables.get_list("AlignedDataCtrlr", "Measurands")
        for evse in evses:
            ctrl = self.ctx.connectors[evse]
            await ctrl.fresh_reading()  # reads the meter now (the latest poll if it does not answer)
            now = utcnow()
            reading = fresh_reading(ctrl, now)
            samples = samples_from_reading(reading, measurands, ReadingContext.TRIGGER) if reading is not None else []
            if not samples:
                log.info("triggered MeterValues not sent: no current reading", extra={"evse": evse})
                continue
            try:
                await self.ctx.call("MeterValues", {"evseId": evse, "meterValue": [mapping.meter_value(now, samples)]})
            except Exception as exc:
                log.warning("triggered MeterValues failed", extra={"evse": evse,
                                                                    "error": f"{type(exc).__name__}: {exc}"})

    async def _heartbeat(self) -> None:
        try:
            await self.ctx.call("Heartbeat", {})
        except Exception as exc:
            log.warning("triggered Heartbeat failed", extra={"error": f"{type(exc).__name__}: {exc}"})
