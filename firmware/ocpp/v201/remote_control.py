"""F Remote control and G availability, and B Reset, over OCPP 2.0.1: RequestStartTransaction /
RequestStopTransaction, UnlockConnector, ChangeAvailability (the station or one EVSE) and Reset (Immediate,
OnIdle) — each turned into session events through the version-agnostic
:class:`~firmware.charger.coordinator.Coordinator`, as the 1.6 feature does, and the machines' answers back into
2.0.1 statuses.

A remote start's ``remoteStartId`` goes into the transactionInfo of the Started event of the transaction it
begins (:meth:`Transactions.remote_start_requested`); its chargingProfile (a TxProfile, K05) goes with that
transaction (:meth:`SmartCharging.attach_to_remote_start`: installed in the start's commit) or the remote start is
Rejected — without smart charging the profile is ignored (F01.FR.12). A Reset of one EVSE is Rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.coordinator import Coordinator
from firmware.exitcodes import ExitCode
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.smart_charging import SmartCharging
from firmware.ocpp.v201.transactions import Transactions
from firmware.session import RemoteStopRequested, RemoteStopResult, UnlockRequested, UnlockResult, UnlockStatus
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

_SCHEDULED_AVAILABILITY = "v201.availability.scheduled."  # settings: by EVSE, Operative / Inoperative

def _info(reason: str) -> dict[str, Any]:
    return {"reasonCode": reason}


class RemoteControl:
    def __init__(self, ctx: V201Context, coordinator: Coordinator, transactions: Transactions,
                 smart_charging: SmartCharging | None = None) -> None:
        self.ctx = ctx
        self.smart_charging = smart_charging
        self.coordinator = coordinator
        self.transactions = transactions
        self._settings = Settings(ctx.db)
        self._reset_scheduled = False
        self._transaction_ended = asyncio.Event()  # an OnIdle reset waits on it
        transactions.ended_listeners.append(self._ended)

    def _ended(self, evse: int) -> None:
        """A 2.0.1 transaction ended: a change of availability scheduled for its EVSE applies now."""
        self._transaction_ended.set()
        key = _SCHEDULED_AVAILABILITY + str(evse)
        ctrl = self.ctx.connectors.get(evse)
        value = self._settings.get(key)
        if ctrl is None or value is None:
            return
        with self.ctx.db.transaction() as conn:
            conn.execute("DELETE FROM settings WHERE key = ?", (key,))
        log.info("scheduled availability applies", extra={"connector": evse, "operative": value == "Operative"})
        self.ctx.spawn(self.coordinator.set_available([ctrl], value == "Operative"))

    def transaction_ended(self) -> None:
        """A connector's transaction ended (the client's observer tells us, after the commit)."""
        self._transaction_ended.set()

    @handles(Action.request_start_transaction)
    async def _request_start(self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None,
                             charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        token = mapping.parse_id_token({"idToken": id_token.get("id_token"), "type": id_token.get("type")})
        if token is None:
            return call_result.RequestStartTransaction(status="Rejected", status_info=_info("InvalidIdToken"))
        ctrl = self.coordinator.remote_start_connector(evse_id)
        if ctrl is None:
            return call_result.RequestStartTransaction(status="Rejected", status_info=_info("UnknownEvse"))
        smart = self.smart_charging if charging_profile is not None else None
        if charging_profile is not None and smart is None:
            log.info("remote start's chargingProfile ignored: no smart charging", extra={"evse": ctrl.id})
        if smart is not None and charging_profile is not None:
            refused = smart.attach_to_remote_start(ctrl.id, charging_profile)
            if refused is not None:
                log.info("remote start with a charging profile rejected", extra={"evse": ctrl.id,
                                                                                 "reason": refused[1]})
                return call_result.RequestStartTransaction(
                    status="Rejected", status_info={"reasonCode": refused[0], "additionalInfo": refused[1][:512]})
        self.transactions.remote_start_requested(ctrl.id, remote_start_id)
        accepted = await self.coordinator.remote_start(token, ctrl.id)
        if not accepted:
            self.transactions.remote_start_requested(ctrl.id, None)
            if smart is not None:
                smart.cancel_remote_start(ctrl.id)
        return call_result.RequestStartTransaction(status="Accepted" if accepted else "Rejected")

    @handles(Action.request_stop_transaction)
    async def _request_stop(self, transaction_id: str, **_: Any) -> Any:
        """F03 by the station's transaction id: the machine's transaction in it stops (Remote); one begun before the
        machine's (TxStartPoint EVConnected or Authorized) and holding none ends at once (triggerReason
        RemoteStop)."""
        evse = self.transactions.evse_of(transaction_id)
        ctrl = self.ctx.connectors.get(evse) if evse is not None else None
        if ctrl is None:
            return call_result.RequestStopTransaction(status="Rejected", status_info=_info("TxNotFound"))
        if ctrl.machine.transaction is None:
            ended = self.transactions.end_now(ctrl, "RemoteStop", "Remote")
            return call_result.RequestStopTransaction(status="Accepted" if ended else "Rejected")
        effects = await ctrl.handle(RemoteStopRequested())
        result = next((e for e in effects if isinstance(e, RemoteStopResult)), None)
        return call_result.RequestStopTransaction(
            status="Accepted" if result is not None and result.accepted else "Rejected")

    @handles(Action.unlock_connector)
    async def _unlock(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        ctrl = self.ctx.connectors.get(evse_id)
        if ctrl is None or connector_id != 1:
            return call_result.UnlockConnector(status="UnknownConnector")
        effects = await ctrl.handle(UnlockRequested())
        result = next((e for e in effects if isinstance(e, UnlockResult)), None)
        status = "UnlockFailed" if result is None else {
            UnlockStatus.UNLOCKED: "Unlocked",
            UnlockStatus.ONGOING_TRANSACTION: "OngoingAuthorizedTransaction",
            UnlockStatus.NOT_SUPPORTED: "UnknownConnector",  # 2.0.1 has no NotSupported: no lock to open
        }.get(result.status, "UnlockFailed")
        return call_result.UnlockConnector(status=status)

    @handles(Action.change_availability)
    async def _change_availability(self, operational_status: str, evse: dict[str, Any] | None = None,
                                   **_: Any) -> Any:
        operative = operational_status == "Operative"
        if evse is None or evse.get("id", 0) == 0:
            targets = list(self.ctx.connectors.values())
        else:
            ctrl = self.ctx.connectors.get(int(evse["id"]))
            if ctrl is None or evse.get("connector_id", 1) != 1:
                return call_result.ChangeAvailability(status="Rejected", status_info=_info("UnknownEvse"))
            targets = [ctrl]
        # G03/G04: a 2.0.1 transaction begun before the machine's (TxStartPoint EVConnected / Authorized) also
        # defers the change to its end; the machine defers it for its own
        later = [c for c in targets if c.machine.transaction is None and c.machine.operative != operative
                 and self.transactions.open_transaction(c.id) is not None]
        with self.ctx.db.transaction() as conn:
            for c in targets:  # the latest request wins
                conn.execute("DELETE FROM settings WHERE key = ?", (_SCHEDULED_AVAILABILITY + str(c.id),))
            for c in later:
                self._settings.put(_SCHEDULED_AVAILABILITY + str(c.id), operational_status)
        scheduled = await self.coordinator.set_available([c for c in targets if c not in later], operative)
        return call_result.ChangeAvailability(status="Scheduled" if scheduled or later else "Accepted")

    # --- Reset ---------------------------------------------------------------------------------------

    def _busy(self) -> bool:
        """A transaction runs: the machine's, or a 2.0.1 one begun before it (TxStartPoint EVConnected / Authorized)."""
        return any(c.machine.transaction is not None or self.transactions.open_transaction(c.id) is not None
                   for c in self.ctx.connectors.values())

    @handles(Action.reset)
    async def _reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id is not None:
            return call_result.Reset(status="Rejected", status_info=_info("UnsupportedParam"))
        if type == "OnIdle" and self._busy():
            return call_result.Reset(status="Scheduled")
        return call_result.Reset(status="Accepted")

    @after_answering(Action.reset)
    def _after_reset(self, type: str, evse_id: int | None = None, **_: Any) -> None:
        if evse_id is None and not self._reset_scheduled:
            self._reset_scheduled = True
            self.ctx.spawn(self._restart(on_idle=type == "OnIdle"))

    async def _restart(self, *, on_idle: bool) -> None:
        """Immediate: stop the transactions (ImmediateReset) and restart (exit 75) once their Ended events had a
        moment to leave. OnIdle: wait until no transaction runs, then the same."""
        await asyncio.sleep(0)  # let the answer go out first
        while on_idle and self._busy():
            self._transaction_ended.clear()
            with contextlib.suppress(TimeoutError):  # a 2.0.1 transaction may end without the machine's stopping
                await asyncio.wait_for(self._transaction_ended.wait(), 1.0)
        self.ctx.report_security_event("ResetOrReboot", f"{'OnIdle' if on_idle else 'Immediate'} reset requested "
                                       "by the CSMS")  # critical: queued before the transactions end
        for ctrl in self.ctx.connectors.values():
            if ctrl.machine.transaction is None:  # the machines stop theirs; one begun before it ends here
                self.transactions.end_now(ctrl, "ResetCommand", "ImmediateReset")
        outbox, online = self.ctx.outbox, self.ctx.online
        await self.coordinator.reset(hard=False, queue_empty=lambda: outbox.count() == 0 or not online.is_set())
        log.info("restarting for reset", extra={"type": "OnIdle" if on_idle else "Immediate"})
        self.ctx.request_exit(ExitCode.RESTART)
