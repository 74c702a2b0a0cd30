"""Remote Trigger (OCPP 1.6 §5.17): TriggerMessage, the CSMS asking for a message the charge point would otherwise
send when it chooses to.

* The answer goes first (``Accepted``), then the message (``@after_answering``): BootNotification (before the
  CSMS accepted us the boot worker sends it now; after, one more is sent), DiagnosticsStatusNotification and
  FirmwareStatusNotification (their status now: Idle while nothing is under way — :class:`V16Context` says),
  Heartbeat, MeterValues and StatusNotification.
* "The requested message is leading": a connectorId is only looked at for StatusNotification and MeterValues;
  there, one this charge point does not have is ``Rejected`` (OCTT TC_055), and none at all means connector 0 and
  every connector (for StatusNotification, §5.17's own example). MeterValues are also ``Rejected`` ("will not be
  sent") where no meter concerned has a recent reading.
* A triggered StatusNotification is the current status, sent even if it is no news and without waiting for
  MinimumStatusDuration (:meth:`StatusReporter.triggered`).
* Triggered MeterValues are a fresh reading of each connector's meter, the measurands of MeterValuesSampledData
  with context ``Trigger``, with the transactionId of the connector's transaction once the CSMS gave it one.
  Connector 0 is the whole charger, the sum of its connectors' meters (it has no main meter:
  :func:`~firmware.charger.metering.total_reading`). A connector whose meter cannot give a current reading when
  the message is sent sends nothing (no value is better than an old one presented as now); nor does connector 0.
  They are sent at once, not through the outbox: current values are of no use minutes later behind a backlog.
* A requestedMessage outside the 1.6 list is ``NotImplemented`` ("unknown or not implemented"), not a CALLERROR
  (:meth:`RemoteTrigger.answer_invalid`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.charger.metering import ReadingContext, samples_from_reading, total_reading
from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost, InvalidResponse, after_answering, handles
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.core import Core
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v16.meter_values import fresh_reading
from firmware.ocpp.v16.status_report import StatusReporter
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

#: The messages TriggerMessage may ask for (OCPP 1.6 MessageTrigger); all of them are sent.
TRIGGERABLE = frozenset({"BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
                         "Heartbeat", "MeterValues", "StatusNotification"})
#: Those a connectorId applies to; for the others it is ignored (§5.17: "the requested message is leading").
PER_CONNECTOR = frozenset({"MeterValues", "StatusNotification"})

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class RemoteTrigger:
    def __init__(self, ctx: V16Context, core: Core, statuses: StatusReporter) -> None:
        self.ctx = ctx
        self.core = core
        self.statuses = statuses
        self._accepted: dict[str, None] = {}  # unique ids of the TriggerMessages answered Accepted, until sent

    def decide(self, requested_message: str, connector_id: int | None) -> str:
        if requested_message not in TRIGGERABLE:
            return "NotImplemented"
        if requested_message in PER_CONNECTOR and connector_id not in (None, 0, *self.ctx.connectors):
            return "Rejected"
        if requested_message == "MeterValues" and not self._readable(connector_id):
            return "Rejected"  # "will not be sent": no meter, or none that can say what it reads now
        return "Accepted"

    def _readable(self, connector_id: int | None) -> bool:
        """Whether MeterValues for ``connector_id`` can carry current values: that connector's meter has a recent
        reading; for 0 (the sum) every connector's; without a connectorId, any connector's."""
        now = utcnow()
        fresh = [fresh_reading(ctrl, now) is not None for cid, ctrl in self.ctx.connectors.items()
                 if connector_id in (None, 0, cid)]
        return any(fresh) if connector_id is None else bool(fresh) and all(fresh)

    def answer_invalid(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """§5.17: "If the requested message is unknown or not implemented the Charge Point SHALL return
        NotImplemented". A requestedMessage outside the 1.6 list breaks the request's schema, and would get a
        CALLERROR; if that is all that is wrong with the request, it gets the status the specification asks for."""
        if action != Action.trigger_message:
            return None
        requested = payload.get("requestedMessage")
        if not isinstance(requested, str) or requested in TRIGGERABLE:
            return None
        if OCPP16.schema_violation(action, {**payload, "requestedMessage": "Heartbeat"}) is not None:
            return None
        log.info("TriggerMessage for an unknown message", extra={"requested_message": requested[:64]})
        return {"status": "NotImplemented"}

    @handles(Action.trigger_message)
    async def _trigger(self, requested_message: str, connector_id: int | None = None, *, call_unique_id: str,
                       **_: Any) -> Any:
        status = self.decide(requested_message, connector_id)
        log.info("TriggerMessage", extra={"requested_message": requested_message, "connector": connector_id,
                                          "status": status})
        if status == "Accepted":
            self._accepted[call_unique_id] = None
            while len(self._accepted) > 64:  # answers that never went out (the link dropped) are not kept forever
                del self._accepted[next(iter(self._accepted))]
        return call_result.TriggerMessage(status=status)

    @after_answering(Action.trigger_message)
    def _after_trigger(self, requested_message: str, connector_id: int | None = None, *, call_unique_id: str,
                       **_: Any) -> None:
        if call_unique_id in self._accepted:  # the Accepted is on the wire: now the message
            del self._accepted[call_unique_id]
            self.ctx.spawn(self.send(requested_message, connector_id))

    async def send(self, requested_message: str, connector_id: int | None) -> None:
        """The triggered message(s); a failure to send is logged (the CSMS may ask again)."""
        call: Call = self.ctx.call
        try:
            if requested_message == "BootNotification":
                await self.core.triggered_boot(call)
            elif requested_message == "Heartbeat":
                await call("Heartbeat", {})
            elif requested_message == "FirmwareStatusNotification":
                await call("FirmwareStatusNotification", {"status": self.ctx.firmware_status()})
            elif requested_message == "DiagnosticsStatusNotification":
                await call("DiagnosticsStatusNotification", {"status": self.ctx.diagnostics_status()})
            elif requested_message == "StatusNotification":
                for payload in self.statuses.triggered(self._connectors(connector_id)):
                    await call("StatusNotification", payload)  # boot still pending: no status worker to queue for
            elif requested_message == "MeterValues":
                for payload in await self.meter_values(self._connectors(connector_id)):
                    await call("MeterValues", payload)
        except (CallErrorReceived, InvalidResponse, TimeoutError, ConnectionLost) as exc:
            log.warning("triggered message not delivered", extra={"requested_message": requested_message,
                                                                   "error": str(exc)})

    def _connectors(self, connector_id: int | None) -> list[int]:
        """None: the charge point (0) and every connector."""
        return [0, *self.ctx.connectors] if connector_id is None else [connector_id]

    async def meter_values(self, connector_ids: list[int]) -> list[dict[str, Any]]:
        """MeterValues payloads of the current readings of ``connector_ids`` (0: the whole charger)."""
        measurands = self.ctx.keys.get_list("MeterValuesSampledData")
        wanted = set(connector_ids)
        readings: dict[int, MeterReading | None] = {}
        for cid, ctrl in self.ctx.connectors.items():
            if cid in wanted or 0 in wanted:
                await ctrl.fresh_reading()  # reads the meter now (the latest poll if it does not answer)
                readings[cid] = fresh_reading(ctrl, utcnow())
        payloads = []
        for cid in connector_ids:
            if cid == 0:
                present = [r for r in readings.values() if r is not None]
                reading = total_reading(present) if len(present) == len(self.ctx.connectors) else None
                offered = None
            else:
                reading, offered = readings[cid], self.ctx.connectors[cid].view.offered_amps
            samples = [] if reading is None else samples_from_reading(reading, measurands, ReadingContext.TRIGGER,
                                                                       offered)
            if not samples:
                log.warning("triggered MeterValues: no current reading", extra={"connector": cid})
                continue
            payload: dict[str, Any] = {"connectorId": cid}
            transaction_id = self._transaction_id(cid)
            if transaction_id is not None:
                payload["transactionId"] = transaction_id
            assert reading is not None
            payload["meterValue"] = [mapping.meter_value(reading.taken_at, samples)]
            payloads.append(payload)
        return payloads

    def _transaction_id(self, connector_id: int) -> int | None:
        """The CSMS's id of the connector's running transaction, once its StartTransaction was answered."""
        ctrl = self.ctx.connectors.get(connector_id)
        tx = ctrl.machine.transaction if ctrl is not None else None
        record = self.ctx.ledger.get(connector_id, tx.local_id) if tx is not None else None
        if record is None or record.transaction_id is None:
            return None
        try:
            return int(record.transaction_id)
        except ValueError:
            return None
