"""B07 Get Base Report and B08 Get Custom Report: the device model reported in NotifyReport pages (``seqNo`` 0, 1,
…, ``tbc`` true on all but the last), built from the same description the variables are checked against
(:mod:`device_model`). The answer goes out first, the pages after it (a page that fails ends the report, logged).

Each reported variable carries every attribute type it has (B07.FR.11: an unset one without a value) and its
characteristics (dataType, unit, limits, valuesList).

* GetBaseReport: ConfigurationInventory — the variables the CSMS may set (an attribute ReadWrite or WriteOnly);
  FullInventory — all; SummaryInventory (B07.FR.09) — the AvailabilityState of the station and of each EVSE (a
  connector's only where it differs from its EVSE's: never on this charger, one connector per EVSE), and every
  Problem, Tripped, Overload or Fallback variable that is true.
* GetReport: the ``componentVariable`` entries select by component name, and where given its instance, EVSE
  (``evse.id``, ``connectorId``) and the variable (and its instance) — B08.FR.20-25; ``componentCriteria`` keep the
  components that are Active, Available, Enabled (the variable true, or the component without it) or have a
  Problem (true) — any of them (B08.FR.13). Criteria alone report the criterion variables that are true (what
  OCTT TC_B_16_CS checks). Nothing selected: EmptyResultSet (B08.FR.15), no report. More componentVariable entries
  than DeviceDataCtrlr.ItemsPerMessage[GetReport]: CALLERROR OccurrenceConstraintViolation (B08.FR.17, by the RPC
  layer's ``max_items``); a request over BytesPerMessage[GetReport]: CALLERROR FormatViolation (B08.FR.18).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import FormatViolationError
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.timestamps import timestamp
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import (
    DataType,
    DeviceModel,
    Mutability,
    VariableDefinition,
    VariableKey,
    request_size,
)
from firmware.ocpp.v201.dialect import OCPP201
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

#: ReportData items per NotifyReport page.
PAGE_ITEMS = 20
_BASES = {"ConfigurationInventory", "FullInventory", "SummaryInventory"}
#: SummaryInventory: the variables that report an abnormal state when true (B07.FR.09).
_ABNORMAL = ("Problem", "Tripped", "Overload", "Fallback")
#: ``ComponentCriterionEnumType``: each names the variable it judges a component by.
_CRITERIA = ("Active", "Available", "Enabled", "Problem")


def component_data(key: VariableKey) -> dict[str, Any]:
    """A ``ComponentType``: the name, its instance, and on a tier the EVSE (and connector) it belongs to."""
    component: dict[str, Any] = {"name": key.component}
    if key.component_instance:
        component["instance"] = key.component_instance
    if key.evse is not None:
        component["evse"] = {"id": key.evse} | ({"connectorId": key.connector} if key.connector is not None else {})
    return component


def report_data(d: VariableDefinition, values: dict[str, str | None]) -> dict[str, Any]:
    """One ``ReportDataType``: every attribute type of the variable (``values``: attribute -> its value, None where
    it is not to be shown) and the variable's characteristics."""
    variable: dict[str, Any] = {"name": d.key.variable}
    if d.key.variable_instance:
        variable["instance"] = d.key.variable_instance
    attributes = []
    for attribute in d.attribute_types:
        mutability = d.mutability_of(attribute)
        entry: dict[str, Any] = {"type": attribute, "mutability": mutability.value, "persistent": True,
                                 "constant": mutability is Mutability.READ_ONLY and not d.provided}
        value = values.get(attribute)
        if value is not None:
            entry["value"] = value
        attributes.append(entry)
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
    return {"component": component_data(d.key), "variable": variable, "variableAttribute": attributes,
            "variableCharacteristics": characteristics}


def _wanted(entry: dict[str, Any], key: VariableKey) -> bool:
    """Whether a GetReport ``componentVariable`` entry selects ``key`` (B08.FR.20-25: what it leaves out, any)."""
    component, variable = entry["component"], entry.get("variable")
    evse = component.get("evse")
    return (component["name"] == key.component
            and (not component.get("instance") or component["instance"] == key.component_instance)
            and (evse is None or (evse["id"] == key.evse
                                  and (evse.get("connectorId") is None or evse["connectorId"] == key.connector)))
            and (variable is None or (variable["name"] == key.variable
                                      and (not variable.get("instance")
                                           or variable["instance"] == key.variable_instance))))


class Reports:
    def __init__(self, ctx: V201Context) -> None:
        self.ctx = ctx

    @property
    def model(self) -> DeviceModel:
        return self.ctx.variables

    def _report(self, definitions: Iterable[VariableDefinition]) -> list[dict[str, Any]]:
        # values no longer than DeviceDataCtrlr.ReportingValueSize (and ValueSize)
        return [report_data(d, {a: None if d.mutability_of(a) is Mutability.WRITE_ONLY
                                else self.model.reported(self.model.value(d, a))
                                for a in d.attribute_types}) for d in definitions]

    def _actual(self, d: VariableDefinition) -> str | None:
        return None if d.mutability is Mutability.WRITE_ONLY else self.model.value(d)

    # --- GetBaseReport (B07) ----------------------------------------------------------------------------

    def base_selection(self, base: str) -> list[VariableDefinition]:
        definitions = list(self.model.definitions.values())
        if base == "ConfigurationInventory":
            return [d for d in definitions if d.writable]
        if base == "SummaryInventory":
            states = {d.key.component_id: self._actual(d) for d in definitions
                      if d.key.variable == "AvailabilityState"}
            out = []
            for d in definitions:
                k = d.key
                if k.variable == "AvailabilityState":
                    evse_state = states.get(("EVSE", k.component_instance, k.evse, None))
                    if k.component != "Connector" or states[k.component_id] != evse_state:
                        out.append(d)
                elif k.variable in _ABNORMAL and d.data_type is DataType.BOOLEAN and self._actual(d) == "true":
                    out.append(d)
            return out
        return definitions

    @handles(Action.get_base_report)
    async def _get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        if report_base not in _BASES:
            return call_result.GetBaseReport(status="NotSupported")
        return call_result.GetBaseReport(status="Accepted" if self.base_selection(report_base) else "EmptyResultSet")

    @after_answering(Action.get_base_report)
    def _after_get_base_report(self, request_id: int, report_base: str, **_: Any) -> None:
        if report_base in _BASES:
            self.ctx.spawn(self.notify_report(request_id, self._report(self.base_selection(report_base))))

    # --- GetReport (B08) --------------------------------------------------------------------------------

    def max_items(self, action: str) -> int | None:
        """ItemsPerMessage[GetReport] bounds componentVariable (the RPC layer answers a request over it)."""
        if action == Action.get_report:
            return self.model.get_int("DeviceDataCtrlr", "ItemsPerMessage", "GetReport")
        return None

    def custom_selection(self, component_variable: list[dict[str, Any]] | None,
                         component_criteria: list[str] | None) -> list[VariableDefinition]:
        definitions = list(self.model.definitions.values())
        criteria = set(component_criteria or ())
        if not component_variable:
            if not criteria:
                return definitions
            return [d for d in definitions if d.key.variable in criteria and d.data_type is DataType.BOOLEAN
                    and self._actual(d) == "true"]
        selected = [d for d in definitions if any(_wanted(e, d.key) for e in component_variable)]
        if not criteria:
            return selected
        flags: dict[tuple[str, str | None, int | None, int | None], dict[str, bool]] = {}
        for d in definitions:  # each component instance's criterion variables and their values
            if d.key.variable in _CRITERIA and d.data_type is DataType.BOOLEAN:
                flags.setdefault(d.key.component_id, {})[d.key.variable] = self._actual(d) == "true"

        def meets(component: tuple[str, str | None, int | None, int | None]) -> bool:
            has = flags.get(component, {})
            return any(has.get(c, False) if c == "Problem" else has.get(c, True) for c in criteria)

        return [d for d in selected if meets(d.key.component_id)]

    def answer_invalid(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """B08.FR.02: criteria not supported are answered NotSupported. A componentCriteria value outside the
        enumeration breaks the request's schema (a CALLERROR); if that is all that is wrong with it, it gets the
        status the specification asks for (OCTT TC_B_19_CS)."""
        criteria = payload.get("componentCriteria") if action == Action.get_report else None
        if not isinstance(criteria, list) or all(c in _CRITERIA for c in criteria):
            return None
        known = [c if c in _CRITERIA else _CRITERIA[0] for c in criteria]
        if OCPP201.schema_violation(action, {**payload, "componentCriteria": known}) is not None:
            return None
        log.info("GetReport for a criterion not supported", extra={"criteria": [str(c)[:32] for c in criteria]})
        return {"status": "NotSupported", "statusInfo": {"reasonCode": "UnsupportedParam"}}

    @staticmethod
    def _custom_request(payload: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, list[str] | None]:
        entries = payload.get("component_variable")
        return (snake_to_camel_case(entries) if entries else None), payload.get("component_criteria")

    @handles(Action.get_report)
    async def _get_report(self, request_id: int, **payload: Any) -> Any:
        entries, criteria = self._custom_request(payload)
        wire = {"requestId": request_id} | ({"componentVariable": entries} if entries else {}) | (
            {"componentCriteria": criteria} if criteria else {})
        size, most = request_size(wire), self.model.get_int("DeviceDataCtrlr", "BytesPerMessage", "GetReport")
        if size > most:
            log.warning("GetReport over BytesPerMessage refused", extra={"bytes": size, "bytes_per_message": most})
            raise FormatViolationError(description=f"GetReport of {size} bytes is over "
                                                   f"DeviceDataCtrlr.BytesPerMessage[GetReport] ({most})")
        found = self.custom_selection(entries, criteria)
        log.info("GetReport", extra={"request_id": request_id, "criteria": criteria, "entries": len(entries or ()),
                                     "variables": len(found)})
        return call_result.GetReport(status="Accepted" if found else "EmptyResultSet")

    @after_answering(Action.get_report)
    def _after_get_report(self, request_id: int, **payload: Any) -> None:
        entries, criteria = self._custom_request(payload)
        found = self.custom_selection(entries, criteria)
        if found:
            self.ctx.spawn(self.notify_report(request_id, self._report(found)))

    # --- NotifyReport -----------------------------------------------------------------------------------

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
        log.info("report sent", extra={"request_id": request_id, "pages": len(pages), "items": len(items)})
