"""Typed OCPP 2.0.1 commands of the simulated CSMS (CSMS -> charging station), beside the 1.6 ones of
:class:`~sim.csms.server.SimulatedCsms`, which inherits them.

Each builds the 2.0.1 request from plain values and sends it with :meth:`SimulatedCsms.call` (checked against the
library's 2.0.1 schema before it leaves); the answer is the CALLRESULT payload as received. Where a 1.6 command has
the same name but another payload (Reset, ChangeAvailability, UnlockConnector, TriggerMessage), the 2.0.1 one ends in
``_201``; ClearCache is the same request in both and stays :meth:`SimulatedCsms.clear_cache`.

A device model variable is named ``Component.Variable`` or ``Component.Variable[instance]``
(:func:`variable_ref`), as in ``[ocpp.presets]``.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

from sim.csms.transcript import Direction, EntryKind, Transcript

_VARIABLE = re.compile(r"(?P<component>[^.\[\]]+)\.(?P<variable>[^.\[\]]+)(?:\[(?P<instance>[^\[\]]+)\])?")


def variable_ref(name: str) -> dict[str, Any]:
    """``Component.Variable[instance]`` as a 2.0.1 ComponentVariable (``component`` and ``variable`` objects).
    Raises ValueError for anything else."""
    match = _VARIABLE.fullmatch(name.strip())
    if match is None:
        raise ValueError(f"{name!r}: a variable is named Component.Variable or Component.Variable[instance]")
    variable: dict[str, Any] = {"name": match["variable"]}
    if match["instance"]:
        variable["instance"] = match["instance"]
    return {"component": {"name": match["component"]}, "variable": variable}


def variable_name(item: dict[str, Any]) -> str:
    """The other way round: ``Component.Variable[instance]`` of a Get/SetVariables item or result."""
    variable = item["variable"]
    return f"{item['component']['name']}.{variable['name']}" + (
        f"[{variable['instance']}]" if variable.get("instance") else "")


_request_ids = itertools.count(1)  # remoteStartId / requestId when none is given: unique in this process


def _compact(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class Commands201:
    """The 2.0.1 requests a CSMS sends, typed. Mixed into :class:`~sim.csms.server.SimulatedCsms`."""

    transcript: Transcript

    if TYPE_CHECKING:  # SimulatedCsms's
        async def call(self, cp_id: str, action: str, payload: dict[str, Any] | None = None, *,
                       timeout_s: float | None = None, validate: bool = True) -> dict[str, Any]: ...

    async def request_start_transaction(self, cp_id: str, id_token: str, *, token_type: str = "ISO14443",
                                        remote_start_id: int | None = None, evse_id: int | None = None,
                                        charging_profile: dict[str, Any] | None = None,
                                        timeout_s: float | None = None) -> dict[str, Any]:
        """F01/F02 RequestStartTransaction; ``remote_start_id`` a fresh one when not given."""
        return await self.call(cp_id, "RequestStartTransaction", _compact(
            idToken={"idToken": id_token, "type": token_type},
            remoteStartId=next(_request_ids) if remote_start_id is None else remote_start_id,
            evseId=evse_id, chargingProfile=charging_profile), timeout_s=timeout_s)

    async def request_stop_transaction(self, cp_id: str, transaction_id: str, *,
                                       timeout_s: float | None = None) -> dict[str, Any]:
        """F03 RequestStopTransaction by the station's own transaction id."""
        return await self.call(cp_id, "RequestStopTransaction", {"transactionId": transaction_id},
                               timeout_s=timeout_s)

    async def reset_201(self, cp_id: str, reset_type: str = "Immediate", *, evse_id: int | None = None,
                        timeout_s: float | None = None) -> dict[str, Any]:
        """B11/B12 Reset: ``reset_type`` Immediate or OnIdle; ``evse_id``: that EVSE only."""
        return await self.call(cp_id, "Reset", _compact(type=reset_type, evseId=evse_id), timeout_s=timeout_s)

    async def change_availability_201(self, cp_id: str, operational_status: str, *,
                                      evse_id: int | None = None, connector_id: int | None = None,
                                      timeout_s: float | None = None) -> dict[str, Any]:
        """G03/G04 ChangeAvailability: ``operational_status`` Operative or Inoperative; no ``evse_id``: the whole
        station; ``connector_id`` (with ``evse_id``): that connector of the EVSE."""
        evse = None if evse_id is None else _compact(id=evse_id, connectorId=connector_id)
        return await self.call(cp_id, "ChangeAvailability", _compact(operationalStatus=operational_status, evse=evse),
                               timeout_s=timeout_s)

    async def unlock_connector_201(self, cp_id: str, evse_id: int, connector_id: int = 1, *,
                                   timeout_s: float | None = None) -> dict[str, Any]:
        """F05 UnlockConnector."""
        return await self.call(cp_id, "UnlockConnector", {"evseId": evse_id, "connectorId": connector_id},
                               timeout_s=timeout_s)

    async def trigger_message_201(self, cp_id: str, requested_message: str, *, evse_id: int | None = None,
                                  connector_id: int | None = None,
                                  timeout_s: float | None = None) -> dict[str, Any]:
        """F06 TriggerMessage (``requested_message`` a MessageTriggerEnumType value), for an EVSE (and connector)."""
        evse = None if evse_id is None else _compact(id=evse_id, connectorId=connector_id)
        return await self.call(cp_id, "TriggerMessage", _compact(requestedMessage=requested_message, evse=evse),
                               timeout_s=timeout_s)

    async def get_variables(self, cp_id: str, names: list[str], *,
                            timeout_s: float | None = None) -> dict[str, Any]:
        """B06 GetVariables of the Actual attribute of each ``Component.Variable[instance]``."""
        return await self.call(cp_id, "GetVariables", {"getVariableData": [variable_ref(n) for n in names]},
                               timeout_s=timeout_s)

    async def set_variables(self, cp_id: str, values: dict[str, str], *,
                            timeout_s: float | None = None) -> dict[str, Any]:
        """B05 SetVariables of the Actual attribute: ``{"Component.Variable[instance]": "value"}``."""
        return await self.call(cp_id, "SetVariables", {"setVariableData": [
            {**variable_ref(n), "attributeValue": v} for n, v in values.items()]}, timeout_s=timeout_s)

    async def get_base_report(self, cp_id: str, report_base: str = "FullInventory", *,
                              request_id: int | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """B07 GetBaseReport (ConfigurationInventory, FullInventory, SummaryInventory): the answer only."""
        return await self.call(cp_id, "GetBaseReport", {
            "requestId": next(_request_ids) if request_id is None else request_id, "reportBase": report_base},
            timeout_s=timeout_s)

    async def base_report(self, cp_id: str, report_base: str = "FullInventory", *,
                          request_id: int | None = None, timeout_s: float = 10.0) -> tuple[dict[str, Any],
                                                                                          list[dict[str, Any]]]:
        """GetBaseReport, then the NotifyReport pages of that request until the one without ``tbc``: ``(answer,
        reportData of every page in seqNo order)``; no pages unless the answer is Accepted. Raises TimeoutError
        if a page does not come within ``timeout_s``."""
        request_id = next(_request_ids) if request_id is None else request_id
        mark = self.transcript.mark()
        answer = await self.get_base_report(cp_id, report_base, request_id=request_id, timeout_s=timeout_s)
        if answer.get("status") != "Accepted":
            return answer, []
        pages: dict[int, dict[str, Any]] = {}
        while True:
            page = await self.transcript.wait_for(
                "NotifyReport", lambda e: e.payload.get("requestId") == request_id
                and e.payload.get("seqNo") not in pages, cp_id=cp_id, direction=Direction.FROM_CP,
                kind=EntryKind.CALL, timeout_s=timeout_s, since=mark)
            pages[int(page.payload["seqNo"])] = page.payload
            last = [p for p in pages.values() if not p.get("tbc", False)]
            if last and len(pages) == int(last[0]["seqNo"]) + 1:
                break
        return answer, [item for n in sorted(pages) for item in pages[n].get("reportData", [])]
