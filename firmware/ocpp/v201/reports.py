"""B07 Get Base Report: the device model reported in NotifyReport pages (``seqNo`` 0, 1, …, ``tbc`` true on all
but the last), built from the same description the variables are checked against (:mod:`device_model`).

ConfigurationInventory lists the variables the CSMS may set (ReadWrite, WriteOnly); FullInventory every variable;
SummaryInventory is NotSupported (this device model has no availability or problem variables to summarize yet).
The answer goes out first, the pages after it (a page that fails ends the report, logged). GetReport with criteria
is not in this slice.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.timestamps import timestamp
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DataType, Mutability, VariableDefinition
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

#: ReportData items per NotifyReport page.
PAGE_ITEMS = 20
_BASES = {"ConfigurationInventory", "FullInventory"}


def report_data(d: VariableDefinition, value: str | None) -> dict[str, Any]:
    """One ``ReportDataType``: the Actual attribute and the variable's characteristics."""
    component: dict[str, Any] = {"name": d.key.component}
    if d.key.component_instance:
        component["instance"] = d.key.component_instance
    variable: dict[str, Any] = {"name": d.key.variable}
    if d.key.variable_instance:
        variable["instance"] = d.key.variable_instance
    attribute: dict[str, Any] = {"type": "Actual", "mutability": d.mutability.value, "persistent": True,
                                 "constant": d.mutability is Mutability.READ_ONLY}
    if value is not None:
        attribute["value"] = value
    characteristics: dict[str, Any] = {"dataType": d.data_type.value, "supportsMonitoring": False}
    if d.unit:
        characteristics["unit"] = d.unit
    if d.minimum is not None:
        characteristics["minLimit"] = d.minimum
    if d.maximum is not None:
        characteristics["maxLimit"] = d.maximum
    if d.values_list:
        characteristics["valuesList"] = ",".join(d.values_list)
    if d.data_type is DataType.STRING and d.max_length is not None:
        characteristics["maxLimit"] = d.max_length
    return {"component": component, "variable": variable, "variableAttribute": [attribute],
            "variableCharacteristics": characteristics}


class Reports:
    def __init__(self, ctx: V201Context) -> None:
        self.ctx = ctx

    def _items(self, base: str) -> list[dict[str, Any]]:
        model = self.ctx.variables
        out = []
        for d in model.definitions.values():
            if base == "ConfigurationInventory" and d.mutability is Mutability.READ_ONLY:
                continue
            value = None if d.mutability is Mutability.WRITE_ONLY else model.get(
                d.key.component, d.key.variable, d.key.variable_instance)
            out.append(report_data(d, value))
        return out

    @handles(Action.get_base_report)
    async def _get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        if report_base not in _BASES:
            return call_result.GetBaseReport(status="NotSupported")
        return call_result.GetBaseReport(status="Accepted" if self._items(report_base) else "EmptyResultSet")

    @after_answering(Action.get_base_report)
    def _after_get_base_report(self, request_id: int, report_base: str, **_: Any) -> None:
        if report_base in _BASES:
            self.ctx.spawn(self.notify_report(request_id, self._items(report_base)))

    async def notify_report(self, request_id: int, items: list[dict[str, Any]]) -> None:
        pages = [items[i:i + PAGE_ITEMS] for i in range(0, len(items), PAGE_ITEMS)]
        generated_at = timestamp(utcnow())
        for seq_no, page in enumerate(pages):
            payload = {"requestId": request_id, "generatedAt": generated_at, "seqNo": seq_no,
                       "tbc": seq_no < len(pages) - 1, "reportData": page}
            try:
                await self.ctx.call("NotifyReport", payload)
            except Exception as exc:  # the connection went, or the CSMS refused it: the report ends here
                log.warning("NotifyReport not delivered; report ended", extra={
                    "request_id": request_id, "seq_no": seq_no, "error": f"{type(exc).__name__}: {exc}"})
                return
        log.info("base report sent", extra={"request_id": request_id, "pages": len(pages), "items": len(items)})
