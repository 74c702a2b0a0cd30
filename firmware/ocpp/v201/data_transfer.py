"""P DataTransfer over OCPP 2.0.1 (P01 from the CSMS, P02 to the CSMS): the messages of the version-agnostic
:class:`~firmware.ocpp.data_transfer.VendorDataTransfer` that 1.6 uses — our vendor id ``evse-agent``, the
Diagnostics request and the Hardware report (its docstring). ``data`` (anyType in 2.0.1) is compact JSON text,
as in 1.6. Another vendor id is UnknownVendorId, an unknown messageId
UnknownMessageId, both without ``data`` (P01.FR.05/06; OCTT TC_P_01_CS).
"""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.data_transfer import VendorDataTransfer
from firmware.ocpp.rpc import handles


class DataTransfer(VendorDataTransfer):
    @handles(Action.data_transfer)
    async def _data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None,
                             **_: Any) -> Any:
        status, answer = self.incoming(vendor_id, message_id)
        return call_result.DataTransfer(status=status, data=answer)
