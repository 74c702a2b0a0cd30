"""What the CSMS may ask of the charge point's sessions (OCPP 1.6 Core §5): RemoteStartTransaction,
RemoteStopTransaction, ChangeAvailability, UnlockConnector and Reset — each turned into session events through
the version-agnostic :class:`~firmware.charger.coordinator.Coordinator`, and the machines' answers back into
1.6 statuses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.charger.coordinator import Coordinator
from firmware.charger.smart_charging import SmartChargingScheduler
from firmware.exitcodes import ExitCode
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.ocpp.v16.smart_charging import NotAProfile, profile_from_16
from firmware.ocpp.v16.status_report import StatusReporter
from firmware.session import (
    IdToken,
    RemoteStopRequested,
    RemoteStopResult,
    UnlockRequested,
    UnlockResult,
    UnlockStatus,
)

log = logging.getLogger(__name__)

#: ResetRetries: how often a Hard reset whose reboot did not happen is asked again (firmware/agent.py)
KEYS = (KeyDefinition("ResetRetries", KeyType.INT, "3", minimum=0, maximum=10),)


class RemoteControl:
    def __init__(self, ctx: V16Context, coordinator: Coordinator, statuses: StatusReporter,
                 smart_charging: SmartChargingScheduler | None = None) -> None:
        self.ctx = ctx
        self.coordinator = coordinator
        self.statuses = statuses
        self.smart_charging = smart_charging

    @handles(Action.remote_start_transaction)
    async def _remote_start(self, id_tag: str, connector_id: int | None = None,
                            charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        # 1.6 gives the string alone; an id for a remote start is the CSMS's: Central
        token = IdToken.from_ocpp16(id_tag)
        if charging_profile is None:
            accepted = await self.coordinator.remote_start(token, connector_id)
            return call_result.RemoteStartTransaction(status="Accepted" if accepted else "Rejected")
        return call_result.RemoteStartTransaction(status=await self._remote_start_with(token, connector_id,
                                                                                        charging_profile))

    async def _remote_start_with(self, token: IdToken, connector_id: int | None, raw: dict[str, Any]) -> str:
        """§5.11: the chargingProfile SHALL be a TxProfile; it goes with the transaction the remote start begins
        (on the connector chosen for it), or the remote start is Rejected."""
        ctrl = self.coordinator.remote_start_connector(connector_id, token)
        smart = self.smart_charging
        reason: str | None
        if smart is None or ctrl is None:
            reason = "Smart Charging is not configured" if smart is None else "no connector to start on"
        else:
            try:
                reason = smart.attach_to_next_transaction(ctrl.id, profile_from_16(raw))
            except NotAProfile as exc:
                reason = str(exc)
        if reason is not None or smart is None or ctrl is None:
            log.info("remote start with a charging profile rejected", extra={"connector": connector_id,
                                                                             "reason": reason})
            return "Rejected"
        if not await self.coordinator.remote_start(token, ctrl.id):
            smart.cancel_pending(ctrl.id)
            return "Rejected"
        return "Accepted"

    @handles(Action.remote_stop_transaction)
    async def _remote_stop(self, transaction_id: int, **_: Any) -> Any:
        return call_result.RemoteStopTransaction(status=await self.remote_stop(transaction_id))

    async def remote_stop(self, transaction_id: int) -> str:
        record = self.ctx.ledger.active_by_transaction_id(str(transaction_id))
        ctrl = self.ctx.connector(record.connector) if record is not None else None
        if record is None or ctrl is None:
            return "Rejected"
        tx = ctrl.machine.transaction
        if tx is None or tx.local_id != record.local_id:
            return "Rejected"
        effects = await ctrl.handle(RemoteStopRequested())
        result = next((e for e in effects if isinstance(e, RemoteStopResult)), None)
        return "Accepted" if result is not None and result.accepted else "Rejected"

    @handles(Action.change_availability)
    async def _change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        return call_result.ChangeAvailability(status=await self.change_availability(connector_id, type))

    async def change_availability(self, connector_id: int, kind: str) -> str:
        operative = kind == "Operative"
        if connector_id == 0:
            targets = list(self.ctx.connectors.values())
            self.statuses.set_charge_point_operative(operative)
        else:
            ctrl = self.ctx.connector(connector_id)
            if ctrl is None:
                return "Rejected"
            targets = [ctrl]
        scheduled = await self.coordinator.set_available(targets, operative)
        self.statuses.charge_point_changed()
        return "Scheduled" if scheduled else "Accepted"

    @handles(Action.unlock_connector)
    async def _unlock(self, connector_id: int, **_: Any) -> Any:
        ctrl = self.ctx.connector(connector_id)
        if ctrl is None:
            return call_result.UnlockConnector(status="NotSupported")
        effects = await ctrl.handle(UnlockRequested())
        result = next((e for e in effects if isinstance(e, UnlockResult)), None)
        # UNLOCKED only once the lock's feedback said so: the connector turns it into UNLOCK_FAILED otherwise
        status = "UnlockFailed" if result is None else {
            UnlockStatus.UNLOCKED: "Unlocked", UnlockStatus.NOT_SUPPORTED: "NotSupported"}.get(result.status,
                                                                                             "UnlockFailed")
        return call_result.UnlockConnector(status=status)

    @handles(Action.reset)
    async def _reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status="Accepted")

    @after_answering(Action.reset)
    def _after_reset(self, type: str, **_: Any) -> None:
        # only now: the Accepted must be on the wire before a hard reset ends the process
        self.ctx.report_security_event("ResetOrReboot", f"{type} reset requested by the CSMS")  # critical: queued
        self.ctx.spawn(self._restart(hard=type == "Hard"))

    async def _restart(self, *, hard: bool) -> None:
        """Stop transactions, give queued StopTransactions a moment (soft), then restart (exit 75)."""
        await asyncio.sleep(0)  # let the confirmation go out first
        outbox, online = self.ctx.outbox, self.ctx.online
        await self.coordinator.reset(hard=hard, queue_empty=lambda: outbox.count() == 0 or not online.is_set())
        log.info("restarting for reset", extra={"type": "Hard" if hard else "Soft"})
        self.ctx.request_exit(ExitCode.RESTART)
