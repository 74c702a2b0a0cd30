"""DataTransfer (OCPP 1.6 §4.3, §5.6) of our own vendor id ``evse-agent``: what a CSMS operator can ask for
and what the charge point reports of itself.

* incoming messageId ``Diagnostics``: the devices' link counters, each connector's state, the outbox, the
  security state (profile, certificates; never the key), the tasks (``data`` is JSON); any other messageId is
  UnknownMessageId, another vendor UnknownVendorId;
* outgoing messageId ``Hardware``, once per run of the agent after the first Accepted BootNotification::

      {"chargePointVendor": ..., "chargePointModel": ..., "firmwareVersion": ...,
       "buses": [{"name", "port", "baudrate"}],
       "connectors": [{"connector", "maxCurrentA", "phases",
                       "board": {"name", "driver", "port" | "bus" + "unit"},
                       "meter": {"name", "model", "bus", "unit"} | null}],
       "readers": [{"name", "driver", "port", "connectors"}]}

  so that an operator sees what a site was commissioned with without a technician on site. The CSMS's answer
  does not matter (most answer UnknownVendorId); a lost connection retries it on the next one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import CallErrorReceived, InvalidResponse, handles
from firmware.ocpp.v16.context import VENDOR_ID, V16Context

log = logging.getLogger(__name__)


class DataTransfer:
    def __init__(self, ctx: V16Context, diagnostics: Callable[[], dict[str, Any]] | None,
                 hardware: Callable[[], dict[str, Any]] | None) -> None:
        self.ctx = ctx
        self._diagnostics = diagnostics or (lambda: {})
        self._hardware = hardware
        self.hardware_reported = hardware is None  # the Hardware DataTransfer went out in this run

    @handles(Action.data_transfer)
    async def _data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None,
                             **_: Any) -> Any:
        status, answer = self.incoming(vendor_id, message_id, data)
        return call_result.DataTransfer(status=status, data=answer)

    def incoming(self, vendor_id: str, message_id: str | None, data: str | None) -> tuple[str, str | None]:
        if vendor_id.casefold() != VENDOR_ID.casefold():  # vendorId is a CiString255 (case-insensitive)
            return "UnknownVendorId", None
        if message_id == "Diagnostics":
            return "Accepted", json.dumps(self._diagnostics(), default=str, separators=(",", ":"))
        return "UnknownMessageId", None

    async def send(self, message_id: str, data: str | None = None) -> dict[str, Any] | None:
        """A DataTransfer of our own vendor id (None while offline)."""
        if self.ctx.cp is None or not self.ctx.online.is_set():
            return None
        payload: dict[str, Any] = {"vendorId": VENDOR_ID, "messageId": message_id}
        if data is not None:
            payload["data"] = data
        return await self.ctx.call("DataTransfer", payload)

    async def report_hardware(self, call: Callable[[str, dict[str, Any]], Any]) -> None:
        """The Hardware DataTransfer (module docstring), on one connection."""
        assert self._hardware is not None
        data = json.dumps(self._hardware(), separators=(",", ":"), default=str)
        try:
            answer = await call("DataTransfer", {"vendorId": VENDOR_ID, "messageId": "Hardware", "data": data})
        except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
            log.warning("Hardware DataTransfer not answered", extra={"error": str(exc)})
        else:
            log.info("Hardware DataTransfer answered", extra={"status": answer.get("status")})
        self.hardware_reported = True
