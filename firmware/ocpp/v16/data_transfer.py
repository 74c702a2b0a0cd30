"""DataTransfer over OCPP 1.6 (§4.3, §5.6): the messages of the version-agnostic
:class:`~firmware.ocpp.data_transfer.VendorDataTransfer` (our vendor id ``evse-agent``, the Diagnostics request and
the Hardware report, in its docstring). ``data`` is a string in 1.6: compact JSON
text.
"""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.data_transfer import VendorDataTransfer
from firmware.ocpp.rpc import handles


class DataTransfer(VendorDataTransfer):
    @handles(Action.data_transfer)
    async def _data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None,
                             **_: Any) -> Any:
        status, answer = self.incoming(vendor_id, message_id)
        return call_result.DataTransfer(status=status, data=answer)
