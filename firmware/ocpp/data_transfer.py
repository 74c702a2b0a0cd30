"""DataTransfer of our own vendor id ``evse-agent`` (OCPP 1.6 §4.3, §5.6; OCPP 2.0.1 P01, P02), version-agnostic:
what a CSMS operator can ask for and what the charge point reports of itself. Each adapter's ``data_transfer.py``
translates the message. ``data`` is compact JSON text in both versions: 1.6 carries a string, and 2.0.1's anyType
takes one too (an object there would have its keys rewritten to camelCase and its nulls dropped by the ``ocpp``
library on the way out).

* incoming messageId ``Diagnostics``: the devices' link counters, each connector's state, the outbox, the security
  state (profile, certificates; never the key), the tasks; any other messageId is UnknownMessageId, another
  vendor UnknownVendorId (without data, as both versions require);
* outgoing messageId ``Hardware``, once per run of the agent after the first accepted BootNotification::

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
from collections.abc import Awaitable, Callable
from typing import Any

from firmware.ocpp.rpc import CallErrorReceived, InvalidResponse

log = logging.getLogger(__name__)

#: Our vendorId: DataTransfer (both versions), and 1.6 StatusNotification's vendorErrorCode.
VENDOR_ID = "evse-agent"

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def as_text(value: Any) -> str:
    """A JSON value as ``data``: compact JSON text (anything JSON cannot say, as its ``str``)."""
    return json.dumps(value, default=str, separators=(",", ":"))


class VendorDataTransfer:
    def __init__(self, diagnostics: Callable[[], dict[str, Any]] | None,
                 hardware: Callable[[], dict[str, Any]] | None) -> None:
        self._diagnostics = diagnostics or (lambda: {})
        self._hardware = hardware
        self.hardware_reported = hardware is None  # the Hardware DataTransfer went out in this run

    def incoming(self, vendor_id: str, message_id: str | None) -> tuple[str, Any]:
        """The status and the ``data`` (None: none) of the answer to a DataTransfer from the CSMS."""
        if vendor_id.casefold() != VENDOR_ID.casefold():  # vendorId is case-insensitive (CiString255 in 1.6)
            return "UnknownVendorId", None
        if message_id == "Diagnostics":
            return "Accepted", as_text(self._diagnostics())
        return "UnknownMessageId", None

    def payload(self, message_id: str, data: Any | None = None) -> dict[str, Any]:
        """A DataTransfer of our own vendor id (``data`` a JSON value, sent as its text)."""
        payload: dict[str, Any] = {"vendorId": VENDOR_ID, "messageId": message_id}
        if data is not None:
            payload["data"] = as_text(data)
        return payload

    async def report_hardware(self, call: Call) -> None:
        """The Hardware DataTransfer (module docstring), on one connection."""
        assert self._hardware is not None
        try:
            answer = await call("DataTransfer", self.payload("Hardware", self._hardware()))
        except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
            log.warning("Hardware DataTransfer not answered", extra={"error": str(exc)})
        else:
            log.info("Hardware DataTransfer answered", extra={"status": answer.get("status")})
        self.hardware_reported = True
