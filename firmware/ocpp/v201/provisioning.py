"""B Provisioning: BootNotification with its reason (B01-B03), Heartbeat (G02), GetVariables (B06) and
SetVariables (B05) on the device model (:mod:`~firmware.ocpp.v201.device_model`).

A Get/SetVariablesRequest is bounded by DeviceDataCtrlr: longer than BytesPerMessage (as compact JSON) it is
refused whole with CALLERROR FormatViolation (B06.FR.17; SetVariables alike: nothing is set); the items beyond
ItemsPerMessage are answered Rejected and not acted on (OCTT TC_B_08_CS allows that or rejecting them all).

BootNotification goes out once per run of the agent (not per reconnect) until Accepted. Pending and Rejected are
honoured with the interval the CSMS gives: nothing else is sent meanwhile, while the CSMS's
own requests are answered. Accepted sets OCPPCommCtrlr.HeartbeatInterval to the interval given.
Heartbeat is sent after HeartbeatInterval without other traffic of ours;
a changed interval applies at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import FormatViolationError
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.session_context import boot_until_accepted
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import GetResult, SetResult, VariableKey, request_size

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Any]
HEARTBEAT = VariableKey("OCPPCommCtrlr", "HeartbeatInterval")


def _key(item: dict[str, Any]) -> VariableKey:
    component, variable = item["component"], item["variable"]
    evse = component.get("evse") or {}
    return VariableKey(component["name"], variable["name"], component.get("instance") or None,
                       variable.get("instance") or None, evse.get("id"), evse.get("connectorId"))


def _echo(item: dict[str, Any]) -> dict[str, Any]:
    """The component and variable of a request item, as its result repeats them."""
    return {"component": item["component"], "variable": item["variable"]}


class Provisioning:
    def __init__(self, ctx: V201Context, boot_reason: str) -> None:
        """``boot_reason``: ``BootReasonEnumType`` of this run (PowerUp, RemoteReset, ...)."""
        self.ctx = ctx
        self.boot_reason = boot_reason
        self.accepted = False  # BootNotification accepted in this run of the agent
        self.registration: str | None = None  # the last BootNotification's answer
        self._heartbeat_wake = asyncio.Event()  # HeartbeatInterval changed: recompute the wait now
        ctx.variables.on_change(lambda key, value: self._heartbeat_wake.set(), {HEARTBEAT})
        # how long a CALL of ours waits for its answer ([ocpp] response_timeout_s): DefaultMessageTimeout
        ctx.variables.provide(VariableKey("OCPPCommCtrlr", "MessageTimeout", None, "Default"),
                              lambda: str(math.ceil(ctx.response_timeout_s)))

    # --- BootNotification and Heartbeat -----------------------------------------------------------

    def boot_payload(self) -> dict[str, Any]:
        ident = self.ctx.config.identity
        station: dict[str, Any] = {"model": ident.model, "vendorName": ident.vendor,
                                   "firmwareVersion": ident.firmware_version}
        if ident.serial_number:
            station["serialNumber"] = ident.serial_number
        return {"reason": self.boot_reason, "chargingStation": station}

    async def boot(self, call: Call) -> None:
        """BootNotification until Accepted (once per run of the agent, not per reconnect)."""
        if self.accepted:
            return
        interval = self.ctx.variables.get_int
        await boot_until_accepted(call, self.boot_payload, answered=self._answered,
                                  heartbeat_interval=lambda: interval("OCPPCommCtrlr", "HeartbeatInterval"))
        self.accepted = True

    def _answered(self, status: str, interval: int) -> None:
        """A BootNotification's answer: Accepted sets HeartbeatInterval to the interval given (if any)."""
        self.registration = status
        log.info("BootNotification answered", extra={"status": status, "interval": interval,
                                                     "reason": self.boot_reason})
        if status == "Accepted" and interval > 0:
            self.ctx.variables.set_variable(HEARTBEAT, str(interval))

    async def heartbeat(self, call: Call) -> None:
        """A connection's Heartbeat worker; HeartbeatInterval 0 turns it off."""
        await self.ctx.heartbeat(call, lambda: self.ctx.variables.get_int("OCPPCommCtrlr", "HeartbeatInterval"),
                                 self._heartbeat_wake)

    # --- GetVariables / SetVariables --------------------------------------------------------------

    def _limit(self, action: str, items: list[dict[str, Any]], field: str) -> int:
        """DeviceDataCtrlr.ItemsPerMessage[action]: the items of one request this station takes on; the ones
        beyond it are answered Rejected, not acted on. A request over BytesPerMessage[action] is refused whole."""
        size, most = request_size({field: items}), self.ctx.variables.get_int("DeviceDataCtrlr", "BytesPerMessage",
                                                                               action)
        if size > most:
            log.warning("request over BytesPerMessage refused", extra={"action": action, "bytes": size,
                                                                        "bytes_per_message": most})
            raise FormatViolationError(description=f"{action} of {size} bytes is over "
                                                   f"DeviceDataCtrlr.BytesPerMessage[{action}] ({most})")
        return self.ctx.variables.get_int("DeviceDataCtrlr", "ItemsPerMessage", action)

    @handles(Action.get_variables)
    async def _get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        items = self._raw(get_variable_data)
        limit = self._limit("GetVariables", items, "getVariableData")
        for n, item in enumerate(items):
            attribute = item.get("attributeType", "Actual")
            got = self.ctx.variables.get_variable(_key(item), attribute) if n < limit else GetResult("Rejected")
            result: dict[str, Any] = {"attributeStatus": got.status, "attributeType": attribute, **_echo(item)}
            if got.value is not None:
                result["attributeValue"] = got.value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @handles(Action.set_variables)
    async def _set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        items = self._raw(set_variable_data)
        limit = self._limit("SetVariables", items, "setVariableData")
        for n, item in enumerate(items):
            attribute = item.get("attributeType", "Actual")
            done = (self.ctx.variables.set_variable(_key(item), str(item["attributeValue"]), attribute) if n < limit
                    else SetResult("Rejected", f"more than ItemsPerMessage ({limit}) items"))
            result: dict[str, Any] = {"attributeStatus": done.status, "attributeType": attribute, **_echo(item)}
            if done.reason:
                code = {"ReadOnly": "ReadOnly"}.get(done.reason, "TooManyElements" if n >= limit else "InvalidValue")
                result["attributeStatusInfo"] = {"reasonCode": code, "additionalInfo": done.reason[:512]}
            results.append(result)
        return call_result.SetVariables(set_variable_result=results)

    @staticmethod
    def _raw(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The library hands the items over with snake_case keys; the wire's camelCase is what we echo."""
        return [snake_to_camel_case(i) for i in items]
