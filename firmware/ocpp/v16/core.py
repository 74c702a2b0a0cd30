"""Core: BootNotification and Heartbeat (OCPP 1.6 §4.2, §4.6), and the keys of the connection itself.

BootNotification goes out once per run of the agent (not per reconnect) until Accepted; Pending and Rejected
are honoured with the interval the CSMS gives, and nothing else is sent meanwhile (the CSMS's own requests
are answered, as §4.2 allows; a TriggerMessage for BootNotification sends the next one at once, and after the
acceptance one more: :mod:`remote_trigger`). Heartbeat is sent after HeartbeatInterval without other traffic of ours;
a changed interval applies at once, and so does WebSocketPingInterval (on the open connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from firmware.ocpp.session_context import boot_until_accepted
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import DAY_S, KeyDefinition, KeyType, phase_rotation_items

log = logging.getLogger(__name__)


def keys(number_of_connectors: int) -> list[KeyDefinition]:
    n = number_of_connectors
    return [
        # not known until a technician (or the CSMS) says: Unknown for every connector
        KeyDefinition("ConnectorPhaseRotation", KeyType.CSL, ",".join(f"{c}.Unknown" for c in range(1, n + 1)),
                      max_items=n + 1, items=phase_rotation_items(n)),
        KeyDefinition("ConnectorPhaseRotationMaxLength", KeyType.INT, str(n + 1), readonly=True),
        KeyDefinition("HeartbeatInterval", KeyType.INT, "300", minimum=0, maximum=DAY_S),
        KeyDefinition("NumberOfConnectors", KeyType.INT, str(n), readonly=True),
        KeyDefinition("WebSocketPingInterval", KeyType.INT, "60", minimum=0, maximum=DAY_S),
    ]


class Core:
    def __init__(self, ctx: V16Context, set_ping_interval: Callable[[float], None]) -> None:
        self.ctx = ctx
        self.accepted = False  # BootNotification accepted in this run of the agent
        self._heartbeat_wake = asyncio.Event()  # HeartbeatInterval changed: recompute the wait now
        self._set_ping_interval = set_ping_interval
        self._boot_now = asyncio.Event()  # a TriggerMessage asked for BootNotification while not yet accepted
        ctx.keys.on_change(self._changed, {"HeartbeatInterval", "WebSocketPingInterval"})

    def _changed(self, key: str, value: str) -> None:
        if key == "WebSocketPingInterval":
            self._set_ping_interval(float(value))  # on the live connection too (OcppLink.set_ping_interval)
        else:
            self._heartbeat_wake.set()

    async def boot(self, call: Callable[[str, dict[str, Any]], Any]) -> None:
        """BootNotification until Accepted (once per run of the agent, not per reconnect); a TriggerMessage
        BootNotification cuts a wait short."""
        if self.accepted:
            return
        self._boot_now.clear()
        await boot_until_accepted(call, self._boot_payload, answered=self._answered,
                                  heartbeat_interval=lambda: self.ctx.keys.get_int("HeartbeatInterval"),
                                  wait=self._until_boot_again)
        self.accepted = True

    async def triggered_boot(self, call: Callable[[str, dict[str, Any]], Any]) -> None:
        """TriggerMessage BootNotification (§5.17): before the CSMS accepted us, the boot worker sends it now
        instead of after the interval; once accepted, one BootNotification is sent here (a Pending or Rejected
        answer then changes nothing: the CSMS already accepted this run of the agent)."""
        if not self.accepted:
            self._boot_now.set()
            return
        answer = await call("BootNotification", self._boot_payload())
        self._answered(str(answer["status"]), int(answer["interval"]))

    def _boot_payload(self) -> dict[str, Any]:
        ident = self.ctx.config.identity
        payload: dict[str, Any] = {"chargePointVendor": ident.vendor, "chargePointModel": ident.model,
                                   "firmwareVersion": ident.firmware_version}
        if ident.serial_number:
            payload["chargePointSerialNumber"] = ident.serial_number
        return payload

    def _answered(self, status: str, interval: int) -> None:
        """A BootNotification's answer: Accepted sets HeartbeatInterval to the interval given (if any)."""
        log.info("BootNotification answered", extra={"status": status, "interval": interval})
        if status == "Accepted" and interval > 0:
            self.ctx.keys.change("HeartbeatInterval", str(interval))

    async def _until_boot_again(self, seconds: float) -> None:
        """A wait between BootNotifications, cut short by a TriggerMessage that came during it or the one before."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._boot_now.wait(), seconds)
        self._boot_now.clear()

    async def heartbeat(self, call: Callable[[str, dict[str, Any]], Any]) -> None:
        """A connection's Heartbeat worker; HeartbeatInterval 0 turns it off."""
        await self.ctx.heartbeat(call, lambda: self.ctx.keys.get_int("HeartbeatInterval"), self._heartbeat_wake)
