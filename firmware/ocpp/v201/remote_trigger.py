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
* FirmwareStatusNotification / LogStatusNotification: the running firmware update's / log upload's status and
  requestId, Idle without one when none runs (:mod:`firmware_management`).
* SignChargingStationCertificate (A02): a SignCertificate for a new charging station certificate
  (``certificates``); Rejected without a certificate to renew or a CSMS root to check one.
* Any other message (SignV2GCertificate, SignCombinedCertificate, PublishFirmwareStatusNotification):
  NotImplemented.
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
from firmware.ocpp.v201.certificates import Certificates
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.firmware_management import FirmwareManagement
from firmware.ocpp.v201.provisioning import Provisioning
from firmware.ocpp.v201.status import StatusReporter
from firmware.ocpp.v201.transactions import Transactions
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

_SUPPORTED = {"BootNotification", "Heartbeat", "MeterValues", "StatusNotification", "TransactionEvent",
              "FirmwareStatusNotification", "LogStatusNotification", "SignChargingStationCertificate"}


class RemoteTrigger:
    def __init__(self, ctx: V201Context, provisioning: Provisioning, statuses: StatusReporter,
                 transactions: Transactions, firmware: FirmwareManagement, certificates: Certificates) -> None:
        self.ctx = ctx
        self.firmware = firmware
        self.certificates = certificates
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
        if requested_message == "SignChargingStationCertificate":
            return call_result.TriggerMessage(status=self.certificates.signing_status())
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
        if requested_message == "SignChargingStationCertificate":
            if self.certificates.signing_status() == "Accepted":
                self.certificates.request_signing("the CSMS asked (TriggerMessage)")
            return
        evses = self._evses(evse)
        if evses is None:
            return
        if requested_message == "Heartbeat":
            self.ctx.spawn(self._send("Heartbeat", {}))
        elif requested_message == "FirmwareStatusNotification":
            self.ctx.spawn(self._send(requested_message, self.firmware.triggered_firmware_status()))
        elif requested_message == "LogStatusNotification":
            self.ctx.spawn(self._send(requested_message, self.firmware.triggered_log_status()))
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

    async def _send(self, action: str, payload: dict[str, Any]) -> None:
        try:
            await self.ctx.call(action, payload)
        except Exception as exc:
            log.warning("triggered message failed", extra={"action": action,
                                                           "error": f"{type(exc).__name__}: {exc}"})
