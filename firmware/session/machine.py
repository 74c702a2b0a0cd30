"""The per-connector session state machine: events in, effects out, nothing else.

One :class:`SessionMachine` per connector. It never reads a clock (``handle`` is given ``now``),
never does I/O and never awaits: timers are ``StartTimer``/``CancelTimer`` effects whose expiry
comes back as a ``TimerExpired`` event. That keeps every charging rule testable in microseconds
and lets the same machine serve the OCPP 1.6 and 2.0.1 adapters, which only translate.

Structure (after EVerest's split of IEC 61851 logic from board support):

* :data:`TRANSITIONS` is the table: status x event type -> handler and the statuses the handler
  may lead to. It is rendered into docs/session.md (a test keeps the two identical). An event with
  no row in the current status is logged and ignored.
* Handlers update the :class:`~firmware.session.context.SessionContext` and name the next status.
* The hardware outputs (offered current, power permission, cable lock) are *derived* from the
  context by one function, :meth:`SessionMachine._sync_outputs`, run before every status report
  and after every event. The power permission (``AllowPower``) is IEC 61851 "ready to supply"
  (state x2, see ``EvseBoard.allow_power``): it is granted exactly while a current of at least
  6 A is offered — a transaction authorized for energy, the EV plugged in (B/C/D), no blocking
  fault, limit at least 6 A — and the *board* closes the contactor while the EV is in C/D. It is
  not tied to C/D here because a real EV only goes to C after it sees PWM, and a board such as the
  EVSE-DIN offers no PWM without the permission. The permission is withdrawn before anything else
  is emitted for the change, so ``AllowPower(False)`` always precedes a status leaving Charging and
  a ``TransactionStopped``; an EV pausing (C -> B) keeps it and only changes the status.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from firmware.session.config import SessionConfig
from firmware.session.context import (
    ActiveFault,
    Authorization,
    PendingAuthorization,
    Reported,
    Reservation,
    SessionContext,
    SnapshotError,
    Transaction,
)
from firmware.session.effects import (
    AllowPower,
    AuthorizationDropped,
    AuthorizationHeld,
    AuthPurpose,
    AvailabilityApplied,
    AvailabilityScheduled,
    CancelTimer,
    Effect,
    IdTokenRefused,
    LockCable,
    OfferCurrent,
    RefusalReason,
    RemoteStartResult,
    RemoteStopResult,
    RequestAuthorization,
    ReservationEnded,
    ReservationEndReason,
    ReservationResult,
    ReservationStatus,
    StartTimer,
    StatusChanged,
    StopReason,
    TimerName,
    TransactionStarted,
    TransactionStopped,
    Trigger,
    UnlockResult,
    UnlockStatus,
)
from firmware.session.events import (
    AuthorizationResult,
    AuthStatus,
    AvailabilityChanged,
    CardPresented,
    ChargingLimitChanged,
    EmergencyStop,
    EmergencyStopReleased,
    Event,
    FaultCleared,
    FaultRaised,
    MasterPassPresented,
    PilotChanged,
    PowerRestored,
    RemoteStartRequested,
    RemoteStopRequested,
    ReservationCancelled,
    ReservationMade,
    ResetRequested,
    TimerExpired,
    TransactionAccepted,
    TransactionRejected,
    UnlockRequested,
)
from firmware.session.id_token import IdToken
from firmware.session.id_token import mask_token as mask_token  # re-exported: the agent and telemetry use it
from firmware.session.id_token import same_token as same_token
from firmware.session.status import TRANSACTION_STATUSES, ConnectorStatus, route
from hal.duty_cycle import MIN_CURRENT_A
from hal.types import FaultCode, PilotState

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2  # 2: id tokens typed ({"value", "type"}); 1 (strings) still restores
_READABLE_VERSIONS = (1, SNAPSHOT_VERSION)
EV_SIDE_DISCONNECTED = "EV side disconnected"
_EV_PRESENT = frozenset({PilotState.B, PilotState.C, PilotState.D})
_EV_READY = frozenset({PilotState.C, PilotState.D})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Handler = Callable[["SessionMachine", Any], None]


@dataclass(frozen=True)
class Transition:
    """One row of the table: what ``handler`` does (``description``) and where it may lead."""

    handler: Handler
    targets: frozenset[ConnectorStatus]
    description: str


def _as_utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _describe(event: object) -> dict[str, Any]:
    if not is_dataclass(event) or isinstance(event, type):
        return {"repr": repr(event)}
    out: dict[str, Any] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        masked = isinstance(value, IdToken) or ("id_token" in f.name and isinstance(value, str))
        out[f.name] = mask_token(value) if masked else str(value)
    return out


class SessionMachine:
    """One connector's charging session (see the module docstring and docs/session.md)."""

    def __init__(self, connector_id: int, config: SessionConfig) -> None:
        self.connector_id = connector_id
        self.config = config
        self._status = ConnectorStatus.AVAILABLE
        self._ctx = SessionContext(limit_amps=config.max_current_amps)
        # the adapter reports the initial status from ``.status`` at boot
        self._ctx.reported = Reported(self._status, False, None)
        #: handler bugs caught by ``handle`` (the connector then fails safe to Faulted)
        self.internal_errors = 0
        # per-event scratch
        self._out: list[Effect] = []
        self._now = _EPOCH
        self._trigger: Trigger | None = None
        self._info = ""

    # --- inspection ---------------------------------------------------------------------------

    @property
    def status(self) -> ConnectorStatus:
        return self._status

    @property
    def transaction(self) -> Transaction | None:
        return self._ctx.transaction

    @property
    def authorization(self) -> Authorization | None:
        """An accepted id waiting for the EV (identify-first), if any."""
        return self._ctx.authorization

    @property
    def reservation(self) -> Reservation | None:
        return self._ctx.reservation

    @property
    def next_local_id(self) -> int:
        """The ``local_id`` the next transaction will have."""
        return self._ctx.next_local_id

    @property
    def faults(self) -> tuple[ActiveFault, ...]:
        return tuple(self._ctx.faults)

    @property
    def emergency_stop_active(self) -> bool:
        return self._ctx.emergency_stop is not None

    @property
    def blocked(self) -> bool:
        """A blocking fault or the emergency stop forbids energy."""
        return self._ctx.emergency_stop is not None or any(f.blocking for f in self._ctx.faults)

    @property
    def pilot(self) -> PilotState:
        return self._ctx.pilot

    @property
    def ev_connected(self) -> bool:
        return self._ctx.pilot in _EV_PRESENT

    @property
    def limit_amps(self) -> float:
        return self._ctx.limit_amps

    @property
    def operative(self) -> bool:
        return self._ctx.operative

    @property
    def scheduled_operative(self) -> bool | None:
        return self._ctx.scheduled_operative

    @property
    def power_allowed(self) -> bool:
        """Whether the board was last given the permission to energize (``AllowPower``)."""
        return self._ctx.power_on

    @property
    def offered_amps(self) -> float:
        return self._ctx.offered_amps

    @property
    def cable_locked(self) -> bool:
        return self._ctx.locked

    @property
    def cable_held_for(self) -> IdToken | None:
        """The owner's id while the cable is kept locked after a DeAuthorized stop (OCPP 1.6 §4.8)."""
        return self._ctx.cable_held_for

    @property
    def timers(self) -> dict[str, datetime]:
        """Running timers and their deadlines."""
        return dict(self._ctx.timers)

    # --- snapshot -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue after a power loss, as plain JSON types."""
        return {"version": SNAPSHOT_VERSION, "connector_id": self.connector_id,
                "status": self._status.value, "context": self._ctx.to_dict()}

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any], config: SessionConfig) -> SessionMachine:
        """Rebuild a machine from :meth:`snapshot` output; feed ``PowerRestored`` next.

        Raises :class:`SnapshotError` when the snapshot is malformed or inconsistent.
        """
        if not isinstance(snapshot, Mapping):
            raise SnapshotError(f"snapshot: expected an object, got {type(snapshot).__name__}")
        version = snapshot.get("version")
        if type(version) is not int or version not in _READABLE_VERSIONS:
            raise SnapshotError(f"snapshot.version: expected one of {_READABLE_VERSIONS}, got {version!r}")
        connector_id = snapshot.get("connector_id")
        if isinstance(connector_id, bool) or not isinstance(connector_id, int):
            raise SnapshotError(f"snapshot.connector_id: expected an integer, got {connector_id!r}")
        raw_status = snapshot.get("status")
        if not isinstance(raw_status, str) or raw_status not in {s.value for s in ConnectorStatus}:
            raise SnapshotError(f"snapshot.status: expected a connector status, got {raw_status!r}")
        status = ConnectorStatus(raw_status)
        ctx = SessionContext.from_dict(snapshot.get("context"), version)
        if (status in TRANSACTION_STATUSES) != (ctx.transaction is not None):
            raise SnapshotError(f"snapshot: status {status} does not match the transaction record")
        machine = cls(connector_id, config)
        machine._status = status
        machine._ctx = ctx
        log.info("session restored", extra={"connector_id": connector_id, "status": status.value,
                                             "transaction_open": ctx.transaction is not None})
        return machine

    # --- the one entry point ------------------------------------------------------------------

    def handle(self, event: Event, now: datetime) -> list[Effect]:
        """Apply ``event`` at time ``now``; returns the effects to perform, in order. Never raises."""
        before = self._status
        row = TRANSITIONS[before].get(type(event))
        if row is None:
            self._ignored(event, "not expected in this status")
            return []
        saved = copy.deepcopy(self._ctx)
        self._out, self._now, self._trigger, self._info = [], _as_utc(now), None, ""
        try:
            row.handler(self, event)
            self._sync_outputs()
            self._report()
        except Exception:
            self.internal_errors += 1
            log.exception("session handler failed; failing safe",
                          extra={"connector_id": self.connector_id, "status": before.value,
                                 "event": type(event).__name__, "fields": _describe(event)})
            self._ctx, self._status = saved, before
            return self._fail_safe()
        effects, self._out = self._out, []
        if self._status != before and self._status not in row.targets:
            log.error("undeclared transition", extra={"connector_id": self.connector_id,
                                                      "from": before.value, "to": self._status.value,
                                                      "event": type(event).__name__})
        log.debug("event handled", extra={"connector_id": self.connector_id, "event": type(event).__name__,
                                          "from": before.value, "to": self._status.value,
                                          "effects": [type(e).__name__ for e in effects]})
        return effects

    # --- plumbing -----------------------------------------------------------------------------

    def _emit(self, effect: Effect) -> None:
        self._out.append(effect)

    def _ignored(self, event: object, why: str) -> None:
        log.info("event ignored", extra={"connector_id": self.connector_id, "status": self._status.value,
                                         "event": type(event).__name__, "why": why, "fields": _describe(event)})

    def _fail_safe(self) -> list[Effect]:
        """After a handler bug: latch an internal fault through the ordinary fault path (power
        off, transaction stopped, Faulted); if even that fails, at least withdraw the power permission."""
        self._out, self._trigger, self._info = [], Trigger.ABNORMAL_CONDITION, "internal error"
        try:
            self._ctx.faults.append(ActiveFault(FaultCode.DEVICE_ERROR, "session", "internal error", True))
            self._enter_faulted(StopReason.OTHER, FaultCode.DEVICE_ERROR)
            self._sync_outputs()
            self._report()
            effects = self._out
        except Exception:
            log.exception("fail-safe path failed", extra={"connector_id": self.connector_id})
            self._ctx.power_on, self._ctx.offered_amps = False, 0.0
            effects = [AllowPower(False), OfferCurrent(0.0)]
        self._out = []
        return effects

    @property
    def _ev_present(self) -> bool:
        return self._ctx.pilot in _EV_PRESENT

    def _unplug_first(self) -> bool:
        """A transaction ended with the EV still here and a new one must wait for it to leave
        (``unplug_before_next_transaction``)."""
        return self.config.unplug_before_next_transaction and self._ctx.finishing and self._ev_present

    @property
    def current_error(self) -> FaultCode | None:
        """The fault a status report names: the latest blocking one, else the latest of any kind."""
        faults = self._ctx.faults
        for f in reversed(faults):
            if f.blocking:
                return f.code
        return faults[-1].code if faults else None

    # --- derived outputs (the power permission rule lives here) -------------------------------

    def _desired_offer(self) -> float:
        """Current to offer on the pilot: min(limit, rating) while energy may flow, else 0."""
        c = self._ctx
        tx = c.transaction
        if tx is None or not tx.energy_allowed or self.blocked or c.pilot not in _EV_PRESENT:
            return 0.0
        if not c.limit_amps >= MIN_CURRENT_A:
            return 0.0
        return min(c.limit_amps, self.config.max_current_amps)

    def _desired_power(self) -> bool:
        """The permission to energize goes with the offer (IEC 61851 x2: PWM and ready to supply);
        the board, not this machine, closes the contactor on C/D and opens it on B."""
        return self._desired_offer() >= MIN_CURRENT_A

    def _sync_power_down(self) -> None:
        c = self._ctx
        if c.power_on and not self._desired_power():
            c.power_on = False
            self._emit(AllowPower(False))
        offer = self._desired_offer()
        if offer < c.offered_amps:
            c.offered_amps = offer
            self._emit(OfferCurrent(offer))

    def _sync_lock(self) -> None:
        c = self._ctx
        want = c.transaction is not None or c.cable_held_for is not None
        if self.config.cable_lock and want != c.locked:
            c.locked = want
            self._emit(LockCable(want))

    def _sync_power_up(self) -> None:
        c = self._ctx
        offer = self._desired_offer()
        if offer > c.offered_amps:
            c.offered_amps = offer
            self._emit(OfferCurrent(offer))
        if not c.power_on and self._desired_power():
            c.power_on = True
            self._emit(AllowPower(True))

    def _sync_outputs(self) -> None:
        """Power off first, then the lock, then current and power up: lock before energy."""
        self._sync_power_down()
        self._sync_lock()
        self._sync_power_up()

    # --- status -------------------------------------------------------------------------------

    def _tx_status(self) -> ConnectorStatus:
        """Status while a transaction is open: Charging while permitted and the EV requests energy
        (C/D); permitted but the EV in B is the EV's pause; no permission is the charger's
        (SuspendedEVSE, which also wins over SuspendedEV when both apply, §4.9 note). An unplugged
        EV (A) with the transaction kept open is SuspendedEV."""
        c = self._ctx
        if self._desired_power():
            return ConnectorStatus.CHARGING if c.pilot in _EV_READY else ConnectorStatus.SUSPENDED_EV
        tx = c.transaction
        evse_holds = (tx is None or not tx.energy_allowed or not c.limit_amps >= MIN_CURRENT_A
                      or self.blocked or c.pilot in (PilotState.E, PilotState.F))
        return ConnectorStatus.SUSPENDED_EVSE if evse_holds else ConnectorStatus.SUSPENDED_EV

    def _idle_status(self) -> ConnectorStatus:
        """Status without a transaction, from what is true now."""
        c = self._ctx
        if self.blocked:
            return ConnectorStatus.FAULTED
        if c.cable_held_for is not None:
            return ConnectorStatus.FINISHING  # the owner's cable still occupies the socket
        if not c.operative:
            return ConnectorStatus.UNAVAILABLE
        if c.reservation is not None:
            return ConnectorStatus.RESERVED
        if self._ev_present:
            return ConnectorStatus.FINISHING if c.finishing else ConnectorStatus.PREPARING
        if c.authorization is not None:
            return ConnectorStatus.PREPARING
        return ConnectorStatus.AVAILABLE

    def _goto(self, target: ConnectorStatus) -> None:
        """Bring the outputs in line with the context, then report the way to ``target``."""
        self._sync_outputs()
        if target not in (ConnectorStatus.FINISHING, ConnectorStatus.FAULTED):
            self._ctx.finishing = False  # "the transaction ended, EV still here" only lasts in those
        for step in route(self._status, target):
            log.info("connector status", extra={"connector_id": self.connector_id, "from": self._status.value,
                                                "to": step.value,
                                                "trigger": None if self._trigger is None else self._trigger.value})
            self._status = step
            self._emit_status()

    def _emit_status(self) -> None:
        rep = Reported(self._status, self._ev_present, self.current_error)
        self._ctx.reported = rep
        self._emit(StatusChanged(rep.status, rep.ev_connected, rep.error, self._info, self._trigger))

    def _report(self) -> None:
        """Report a change of error or plug state that came without a status change."""
        if self._ctx.reported != Reported(self._status, self._ev_present, self.current_error):
            self._emit_status()

    # --- timers -------------------------------------------------------------------------------

    def _start_timer(self, name: TimerName, seconds: float) -> None:
        self._ctx.timers[name.value] = self._now + timedelta(seconds=seconds)
        self._emit(StartTimer(name, seconds))

    def _cancel_timer(self, name: TimerName) -> None:
        if self._ctx.timers.pop(name.value, None) is not None:
            self._emit(CancelTimer(name))

    def _take_timer(self, name: str) -> bool:
        """Consume an expiry: True if that timer was running (a stale expiry is ignored)."""
        return self._ctx.timers.pop(name, None) is not None

    # --- building blocks ----------------------------------------------------------------------

    def _drop_authorization(self) -> None:
        self._ctx.authorization = None
        self._cancel_timer(TimerName.CONNECTION_TIMEOUT)

    def _release_authorization(self, trigger: Trigger, reason: StopReason | None = None) -> None:
        """A held authorization ends without a transaction: say so (``AuthorizationDropped``)."""
        auth = self._ctx.authorization
        self._drop_authorization()
        if auth is not None:
            self._emit(AuthorizationDropped(auth.id_token, trigger, reason))

    def _is_master_pass(self, event: AuthorizationResult) -> bool:
        """An accepted id of the master pass group (``SessionConfig.master_pass_group``, 2.0.1 C16)."""
        group = self.config.master_pass_group
        return (group is not None and event.status is AuthStatus.ACCEPTED
                and same_token(event.parent_id_token, group))

    def _end_reservation(self, reason: ReservationEndReason) -> None:
        res = self._ctx.reservation
        if res is None:
            return
        self._ctx.reservation = None
        self._cancel_timer(TimerName.RESERVATION_EXPIRY)
        self._emit(ReservationEnded(res.reservation_id, reason))

    def _admits(self, id_token: IdToken, parent_id_token: IdToken | None) -> bool:
        """Whether the reservation (if any) lets this id start: the reserved id or its group."""
        res = self._ctx.reservation
        if res is None:
            return True
        return same_token(id_token, res.id_token) or (res.parent_id_token is not None
                                                      and same_token(parent_id_token, res.parent_id_token))

    def _claim_reservation(self, auth: Authorization, charger_reservation: int | None = None) -> Authorization:
        """The connector's own reservation is used by this id; else one of the charger as a whole
        (``charger_reservation``, connector 0 in 1.6) that the charger found this id holds."""
        res = self._ctx.reservation
        if res is None:
            return auth if charger_reservation is None else replace(auth, reservation_id=charger_reservation)
        self._end_reservation(ReservationEndReason.USED)
        return replace(auth, reservation_id=res.reservation_id)

    def _set_operative(self, operative: bool) -> None:
        c = self._ctx
        c.operative = operative
        c.scheduled_operative = None
        if not operative:
            # no new sessions: forget an unfinished one and any reservation
            c.pending = None
            c.finishing = False
            self._release_authorization(Trigger.ABNORMAL_CONDITION)
            self._end_reservation(ReservationEndReason.REMOVED)
        self._emit(AvailabilityApplied(operative))

    def _apply_scheduled_availability(self) -> None:
        if self._ctx.scheduled_operative is not None:
            self._set_operative(self._ctx.scheduled_operative)

    def _end_usage(self) -> None:
        """Use of the connector ended without a transaction: apply what was scheduled, settle."""
        self._apply_scheduled_availability()
        self._goto(self._idle_status())

    def _begin_session(self, auth: Authorization) -> None:
        """An id is authorized here: start now if the EV is plugged in, else wait for it."""
        c = self._ctx
        trigger = Trigger.REMOTE_START if auth.remote_start else Trigger.AUTHORIZED
        self._trigger = trigger
        c.finishing = False
        if self._ev_present:
            self._goto(ConnectorStatus.PREPARING)  # §4.9 A2/F2/G2 then B3-B5
            self._start_transaction(auth, trigger)
            return
        c.authorization = auth
        self._emit(AuthorizationHeld(auth.id_token, trigger, auth.reservation_id))
        self._start_timer(TimerName.CONNECTION_TIMEOUT, self.config.connection_timeout_s)
        self._goto(ConnectorStatus.PREPARING)

    def _start_transaction(self, auth: Authorization, trigger: Trigger) -> None:
        c = self._ctx
        self._drop_authorization()
        c.pending = None
        c.finishing = False
        tx = Transaction(local_id=c.next_local_id, id_token=auth.id_token, parent_id_token=auth.parent_id_token,
                         trigger=trigger, auth_source=auth.source, reservation_id=auth.reservation_id,
                         remote_start=auth.remote_start, started_at=self._now)
        c.next_local_id += 1
        c.transaction = tx
        self._trigger = trigger
        log.info("transaction started", extra={"connector_id": self.connector_id, "local_id": tx.local_id,
                                               "id_token": mask_token(tx.id_token), "trigger": trigger.value})
        self._emit(TransactionStarted(tx.local_id, tx.id_token, trigger, tx.parent_id_token, tx.auth_source,
                                      tx.reservation_id, tx.remote_start))
        self._goto(self._tx_status())

    def _stop_transaction(self, reason: StopReason, trigger: Trigger, stopped_by: IdToken | None = None,
                          fault: FaultCode | None = None) -> None:
        """Close the transaction: power off first, then the record. The caller picks the status."""
        c = self._ctx
        tx = c.transaction
        if tx is None:
            return
        c.transaction = None
        c.pending = None
        self._cancel_timer(TimerName.CONNECTION_TIMEOUT)  # an EV awaited after an unplug (ev_reconnect_timeout)
        self._trigger = trigger
        self._sync_power_down()
        log.info("transaction stopped", extra={"connector_id": self.connector_id, "local_id": tx.local_id,
                                               "reason": reason.value, "trigger": trigger.value})
        self._emit(TransactionStopped(tx.local_id, reason, trigger, tx.id_token, stopped_by, fault))
        c.finishing = self._ev_present
        self._apply_scheduled_availability()

    def _stop_and_settle(self, reason: StopReason, trigger: Trigger, stopped_by: IdToken | None = None) -> None:
        self._stop_transaction(reason, trigger, stopped_by)
        self._goto(self._idle_status())

    def _enter_faulted(self, reason: StopReason, fault: FaultCode | None) -> None:
        """Faulted ends a reservation (1.6 §5.13: "when the connector is set to Faulted"): straight from
        Reserved to Faulted, one status change (libocpp #998)."""
        c = self._ctx
        self._trigger = Trigger.ABNORMAL_CONDITION
        c.pending = None
        self._release_authorization(Trigger.ABNORMAL_CONDITION)
        self._end_reservation(ReservationEndReason.REMOVED)
        self._stop_transaction(reason, Trigger.ABNORMAL_CONDITION, fault=fault)
        self._goto(ConnectorStatus.FAULTED)

    def _leave_faulted(self) -> None:
        """§4.9 I1-I8: back to the status the pilot and the context imply, once nothing blocks."""
        if not self.blocked:
            self._goto(self._idle_status())

    def _add_fault(self, event: FaultRaised) -> ActiveFault | None:
        c = self._ctx
        if any(f.code == event.code and f.source == event.source for f in c.faults):
            self._ignored(event, "fault already active")
            return None
        blocking = event.blocking if event.blocking is not None else event.code in self.config.blocking_faults
        fault = ActiveFault(event.code, event.source, event.detail, blocking)
        c.faults.append(fault)
        log.warning("fault raised", extra={"connector_id": self.connector_id, "code": event.code.value,
                                           "source": event.source, "detail": event.detail, "blocking": blocking})
        self._info = event.detail
        return fault

    # --- handlers: pilot ----------------------------------------------------------------------

    def _on_plug_in(self, event: PilotChanged) -> None:
        self._ctx.pilot = event.state
        if not self._ev_present:
            return
        self._trigger = Trigger.CABLE_PLUGGED_IN
        free = self.config.free_vend_id_token
        if free is not None:
            self._start_transaction(Authorization(free, None, None, False), Trigger.CABLE_PLUGGED_IN)
            return
        self._ctx.finishing = False
        self._goto(ConnectorStatus.PREPARING)

    def _on_pilot_preparing(self, event: PilotChanged) -> None:
        c = self._ctx
        c.pilot = event.state
        auth = c.authorization
        if auth is not None:
            if self._ev_present:
                self._start_transaction(auth, Trigger.CABLE_PLUGGED_IN)
            return  # still waiting for the EV
        if event.state is PilotState.A:
            self._trigger = Trigger.EV_COMMUNICATION_LOST
            self._end_usage()

    def _on_pilot_transaction(self, event: PilotChanged) -> None:
        c = self._ctx
        was_present = self._ev_present
        c.pilot = event.state
        if event.state is PilotState.A:
            self._trigger = Trigger.EV_COMMUNICATION_LOST
            self._info = EV_SIDE_DISCONNECTED
            if not self.config.stop_transaction_on_ev_side_disconnect:
                self._goto(self._tx_status())  # transaction goes on, suspended, cable stays locked
                if self.config.tethered_cable and self.config.ev_reconnect_timeout:
                    # nothing of the session stays at a tethered station: the EV has the connection timeout to
                    # come back (2.0.1 E10.FR.02)
                    self._start_timer(TimerName.CONNECTION_TIMEOUT, self.config.connection_timeout_s)
                return
            owner = c.transaction.id_token if c.transaction is not None else None
            self._stop_transaction(StopReason.EV_DISCONNECTED, Trigger.EV_COMMUNICATION_LOST)
            if self.config.cable_lock and not self.config.unlock_on_ev_side_disconnect:
                # UnlockConnectorOnEVSideDisconnect false: the cable stays locked in the socket until its owner's
                # id (or an unlock command) releases it, as after a DeAuthorized stop (Finishing until then)
                c.cable_held_for = owner
            if self.config.cable_lock:
                # our socket may still hold the cable: §4.9 says report Finishing; we cannot sense
                # the plug, so the user action counts as done at once (F1)
                self._goto(ConnectorStatus.FINISHING)
            self._goto(self._idle_status())
            return
        self._trigger = (Trigger.CABLE_PLUGGED_IN if self._ev_present and not was_present
                         else Trigger.CHARGING_STATE_CHANGED)
        if self._ev_present:
            self._cancel_timer(TimerName.CONNECTION_TIMEOUT)  # back in time
        self._goto(self._tx_status())

    def _on_pilot_finishing(self, event: PilotChanged) -> None:
        self._ctx.pilot = event.state
        if event.state is PilotState.A:
            self._ctx.finishing = False
            self._trigger = Trigger.EV_COMMUNICATION_LOST
            self._end_usage()

    def _on_pilot_record(self, event: PilotChanged) -> None:
        self._ctx.pilot = event.state
        if event.state is PilotState.A:
            self._ctx.finishing = False

    # --- handlers: id tokens ------------------------------------------------------------------

    def _on_tap_to_start(self, event: CardPresented) -> None:
        c = self._ctx
        if c.pending is not None and same_token(c.pending.id_token, event.id_token):
            self._ignored(event, "authorization of this id already pending")
            return
        c.pending = PendingAuthorization(event.id_token, AuthPurpose.START)
        self._emit(RequestAuthorization(event.id_token, AuthPurpose.START))

    def _on_tap_reserved(self, event: CardPresented) -> None:
        """G2: the reserved id is authorized as usual. Another id may only use the reservation through its
        group: without a group in the reservation it is refused at once, never sent to the CSMS (OCTT
        TC_046_1: no Authorize.req for another card); with one, its parent id is asked for (``group``)."""
        res = self._ctx.reservation
        assert res is not None
        if same_token(event.id_token, res.id_token):
            self._on_tap_to_start(event)
            return
        if res.parent_id_token is None:
            self._emit(IdTokenRefused(event.id_token, RefusalReason.RESERVED))
            return
        c = self._ctx
        if c.pending is not None and same_token(c.pending.id_token, event.id_token):
            self._ignored(event, "authorization of this id already pending")
            return
        c.pending = PendingAuthorization(event.id_token, AuthPurpose.START)
        self._emit(RequestAuthorization(event.id_token, AuthPurpose.START, group=res.parent_id_token))

    def _on_tap_preparing(self, event: CardPresented) -> None:
        c = self._ctx
        if c.authorization is not None and same_token(c.authorization.id_token, event.id_token):
            c.pending = None  # B1: second presentation of the id ends the intended usage
            self._trigger = Trigger.STOP_AUTHORIZED
            self._release_authorization(Trigger.STOP_AUTHORIZED)
            self._end_usage()
            return
        self._on_tap_to_start(event)

    def _on_tap_transaction(self, event: CardPresented) -> None:
        c = self._ctx
        tx = c.transaction
        assert tx is not None
        if same_token(event.id_token, tx.id_token):
            self._stop_and_settle(StopReason.LOCAL, Trigger.STOP_AUTHORIZED, stopped_by=event.id_token)
        elif tx.parent_id_token is not None or self.config.master_pass_group is not None:
            # another id may stop it if it belongs to the same group, or is a master pass: ask for its parent id
            c.pending = PendingAuthorization(event.id_token, AuthPurpose.STOP)
            self._emit(RequestAuthorization(event.id_token, AuthPurpose.STOP))
        else:
            self._emit(IdTokenRefused(event.id_token, RefusalReason.NOT_OWNER))

    def _on_tap_finishing(self, event: CardPresented) -> None:
        c = self._ctx
        owner = c.cable_held_for
        if owner is None and self._unplug_first():
            self._emit(IdTokenRefused(event.id_token, RefusalReason.UNPLUG_FIRST))
        elif owner is None:
            self._on_tap_to_start(event)
        elif same_token(event.id_token, owner):
            c.cable_held_for = None  # the owner takes the cable back: no authorization needed
            self._trigger = Trigger.STOP_AUTHORIZED
            log.info("held cable released to its owner", extra={"connector_id": self.connector_id})
            self._end_usage()
        else:
            self._emit(IdTokenRefused(event.id_token, RefusalReason.NOT_OWNER))

    def _on_tap_refused(self, event: CardPresented) -> None:
        reason = (RefusalReason.FAULTED if self._status is ConnectorStatus.FAULTED
                  else RefusalReason.UNAVAILABLE)
        self._emit(IdTokenRefused(event.id_token, reason))

    def _on_auth_to_start(self, event: AuthorizationResult) -> None:
        c = self._ctx
        pending = c.pending
        if pending is None or not same_token(pending.id_token, event.id_token) or pending.purpose is AuthPurpose.STOP:
            self._ignored(event, "no matching authorization pending")
            return
        c.pending = None
        if event.status is not AuthStatus.ACCEPTED:
            self._emit(IdTokenRefused(event.id_token, RefusalReason.NOT_AUTHORIZED, event.status))
            return
        if self._is_master_pass(event):  # C16.FR.03: a master pass cannot start a transaction
            self._emit(IdTokenRefused(event.id_token, RefusalReason.MASTER_PASS, event.status))
            return
        if not self._admits(event.id_token, event.parent_id_token):
            self._emit(IdTokenRefused(event.id_token, RefusalReason.RESERVED, event.status))
            return
        auth = Authorization(event.id_token, event.parent_id_token, event.source,
                             remote_start=pending.purpose is AuthPurpose.REMOTE_START)
        self._begin_session(self._claim_reservation(auth, event.reservation_id))

    def _on_auth_to_stop(self, event: AuthorizationResult) -> None:
        c = self._ctx
        pending = c.pending
        tx = c.transaction
        assert tx is not None
        if (pending is None or not same_token(pending.id_token, event.id_token)
                or pending.purpose is not AuthPurpose.STOP):
            self._ignored(event, "no matching authorization pending")
            return
        c.pending = None
        if event.status is not AuthStatus.ACCEPTED:  # of the group or not, an id not valid stops nothing (C09)
            self._emit(IdTokenRefused(event.id_token, RefusalReason.NOT_AUTHORIZED, event.status))
        elif self._is_master_pass(event):  # C16: as a local stop (E07), stoppedReason MasterPass
            self._stop_and_settle(StopReason.MASTER_PASS, Trigger.STOP_AUTHORIZED, stopped_by=event.id_token)
        elif tx.parent_id_token is not None and same_token(event.parent_id_token, tx.parent_id_token):
            self._stop_and_settle(StopReason.LOCAL, Trigger.STOP_AUTHORIZED, stopped_by=event.id_token)
        else:
            self._emit(IdTokenRefused(event.id_token, RefusalReason.NOT_OWNER, event.status))

    def _on_master_pass_stop(self, event: MasterPassPresented) -> None:
        self._stop_and_settle(StopReason.MASTER_PASS, Trigger.STOP_AUTHORIZED, stopped_by=event.id_token)

    def _on_master_pass_held(self, event: MasterPassPresented) -> None:
        """An id authorized here and waiting for its EV (a 2.0.1 transaction with TxStartPoint Authorized) is
        ended too; with no authorization held nothing happens."""
        if self._ctx.authorization is None:
            self._ignored(event, "no transaction, no authorization held")
            return
        self._ctx.pending = None
        self._trigger = Trigger.STOP_AUTHORIZED
        self._release_authorization(Trigger.STOP_AUTHORIZED, StopReason.MASTER_PASS)
        self._end_usage()

    # --- handlers: remote start/stop ----------------------------------------------------------

    def _on_remote_start(self, event: RemoteStartRequested) -> None:
        c = self._ctx
        if self._status is ConnectorStatus.PREPARING and c.authorization is not None:
            self._emit(RemoteStartResult(False, "another id is already authorized here"))
            return
        if c.cable_held_for is not None:
            self._emit(RemoteStartResult(False, "the cable is held for the owner of a deauthorized transaction"))
            return
        if self._unplug_first():
            self._emit(RemoteStartResult(False, "the last transaction's EV is still connected"))
            return
        res = c.reservation
        if (res is not None and not same_token(event.id_token, res.id_token)
                and (res.parent_id_token is None or (event.parent_id_token is not None
                                                     and not self._admits(event.id_token, event.parent_id_token)))):
            self._emit(RemoteStartResult(False, "reserved for another id"))  # no group that could let it in
            return
        if self.config.authorize_remote_tx_requests:
            c.pending = PendingAuthorization(event.id_token, AuthPurpose.REMOTE_START)
            self._emit(RemoteStartResult(True))
            self._emit(RequestAuthorization(event.id_token, AuthPurpose.REMOTE_START))
            return
        if not self._admits(event.id_token, event.parent_id_token):
            self._emit(RemoteStartResult(False, "reserved for another id"))
            return
        self._emit(RemoteStartResult(True))
        auth = Authorization(event.id_token, event.parent_id_token, None, remote_start=True)
        self._begin_session(self._claim_reservation(auth, event.reservation_id))

    def _on_remote_start_refused(self, event: RemoteStartRequested) -> None:
        self._emit(RemoteStartResult(False, f"connector is {self._status.value}"))

    def _on_remote_stop(self, event: RemoteStopRequested) -> None:
        self._emit(RemoteStopResult(True))
        self._stop_and_settle(StopReason.REMOTE, Trigger.REMOTE_STOP)

    def _on_remote_stop_refused(self, event: RemoteStopRequested) -> None:
        self._emit(RemoteStopResult(False, "no transaction on this connector"))

    # --- handlers: availability ---------------------------------------------------------------

    def _on_availability_now(self, event: AvailabilityChanged) -> None:
        if event.operative == self._ctx.operative:
            self._ctx.scheduled_operative = None
            self._emit(AvailabilityApplied(event.operative))
            return
        self._set_operative(event.operative)
        self._goto(self._idle_status())

    def _on_availability_later(self, event: AvailabilityChanged) -> None:
        if event.operative == self._ctx.operative:
            self._ctx.scheduled_operative = None
            self._emit(AvailabilityApplied(event.operative))
            return
        self._ctx.scheduled_operative = event.operative
        self._emit(AvailabilityScheduled(event.operative))

    def _on_availability_faulted(self, event: AvailabilityChanged) -> None:
        if event.operative == self._ctx.operative:
            self._ctx.scheduled_operative = None
            self._emit(AvailabilityApplied(event.operative))
            return
        self._set_operative(event.operative)  # status stays Faulted until the fault clears

    # --- handlers: faults and emergency stop --------------------------------------------------

    def _on_fault(self, event: FaultRaised) -> None:
        fault = self._add_fault(event)
        if fault is not None and fault.blocking:
            self._enter_faulted(StopReason.OTHER, fault.code)

    def _on_fault_while_faulted(self, event: FaultRaised) -> None:
        self._add_fault(event)

    def _on_fault_cleared(self, event: FaultCleared) -> None:
        faults = self._ctx.faults
        for i, f in enumerate(faults):
            if f.code == event.code and f.source == event.source:
                del faults[i]
                break
        else:
            self._ignored(event, "no such fault active")
            return
        log.info("fault cleared", extra={"connector_id": self.connector_id, "code": event.code.value,
                                         "source": event.source})
        if self._status is ConnectorStatus.FAULTED:
            self._leave_faulted()

    def _on_emergency_stop(self, event: EmergencyStop) -> None:
        self._ctx.emergency_stop = event.detail or "pressed"
        self._info = "emergency stop"
        log.warning("emergency stop", extra={"connector_id": self.connector_id, "detail": event.detail})
        self._enter_faulted(StopReason.EMERGENCY_STOP, None)

    def _on_emergency_stop_released(self, event: EmergencyStopReleased) -> None:
        if self._ctx.emergency_stop is None:
            self._ignored(event, "emergency stop not active")
            return
        self._ctx.emergency_stop = None
        self._leave_faulted()

    # --- handlers: limit, timers, unlock, reset -----------------------------------------------

    def _on_limit(self, event: ChargingLimitChanged) -> None:
        amps = float(event.amps)
        if not math.isfinite(amps) or amps < 0:
            log.warning("invalid charging limit, using 0 A", extra={"connector_id": self.connector_id,
                                                                    "amps": amps})
            amps = 0.0
        self._ctx.limit_amps = amps
        if self._status in TRANSACTION_STATUSES:
            self._trigger = Trigger.CHARGING_RATE_CHANGED
            self._goto(self._tx_status())

    def _on_connection_timeout(self, event: TimerExpired) -> None:
        if event.name != TimerName.CONNECTION_TIMEOUT or not self._take_timer(event.name):
            self._ignored(event, "timer not running")
            return
        if self._ctx.authorization is None:
            return
        self._trigger = Trigger.EV_CONNECT_TIMEOUT
        self._release_authorization(Trigger.EV_CONNECT_TIMEOUT)
        self._end_usage()

    def _on_reconnect_timeout(self, event: TimerExpired) -> None:
        if event.name != TimerName.CONNECTION_TIMEOUT or not self._take_timer(event.name) or self._ev_present:
            self._ignored(event, "timer not running")
            return
        self._info = EV_SIDE_DISCONNECTED
        self._stop_and_settle(StopReason.TIMEOUT, Trigger.EV_CONNECT_TIMEOUT)

    def _on_reservation_expiry(self, event: TimerExpired) -> None:
        if (event.name != TimerName.RESERVATION_EXPIRY or not self._take_timer(event.name)
                or self._ctx.reservation is None):
            self._ignored(event, "timer not running")
            return
        self._end_reservation(ReservationEndReason.EXPIRED)
        if self._status is ConnectorStatus.RESERVED:
            self._end_usage()

    def _on_unlock_idle(self, event: UnlockRequested) -> None:
        if not self.config.cable_lock:
            self._emit(UnlockResult(UnlockStatus.NOT_SUPPORTED))
            return
        c = self._ctx
        held = c.cable_held_for is not None
        c.cable_held_for = None  # the operator releases a cable held for its owner
        c.locked = False
        self._emit(LockCable(False))  # even if we think it is unlocked: the user says it is stuck
        self._emit(UnlockResult(UnlockStatus.UNLOCKED))
        if held:
            self._trigger = Trigger.UNLOCK_COMMAND
            self._end_usage()

    def _on_unlock_transaction(self, event: UnlockRequested) -> None:
        if not self.config.cable_lock:
            self._emit(UnlockResult(UnlockStatus.NOT_SUPPORTED))
            return
        if not self.config.unlock_stops_transaction:
            self._emit(UnlockResult(UnlockStatus.ONGOING_TRANSACTION))
            return
        self._stop_and_settle(StopReason.UNLOCK_COMMAND, Trigger.UNLOCK_COMMAND)  # unlocks when settling
        self._emit(UnlockResult(UnlockStatus.UNLOCKED))

    def _on_reset(self, event: ResetRequested) -> None:
        self._ctx.reset_pending = True
        if self._ctx.transaction is not None:
            reason = StopReason.HARD_RESET if event.hard else StopReason.SOFT_RESET
            self._stop_and_settle(reason, Trigger.RESET_COMMAND)

    # --- handlers: CSMS answer to a started transaction ---------------------------------------

    def _answers_current(self, local_id: int | None) -> bool:
        tx = self._ctx.transaction
        return tx is not None and (local_id is None or local_id == tx.local_id)

    def _on_tx_accepted(self, event: TransactionAccepted) -> None:
        tx = self._ctx.transaction
        if tx is None or not self._answers_current(event.local_id):
            self._ignored(event, "answer for another transaction")
            return
        if tx.parent_id_token is None and event.parent_id_token is not None:
            # e.g. a remote start without Authorize: the group is first known from the CSMS's answer
            self._ctx.transaction = replace(tx, parent_id_token=event.parent_id_token)

    def _on_tx_rejected(self, event: TransactionRejected) -> None:
        tx = self._ctx.transaction
        if tx is None or not self._answers_current(event.local_id) or event.status is AuthStatus.ACCEPTED:
            self._ignored(event, "answer for another transaction, or not a rejection")
            return
        self._trigger = Trigger.DEAUTHORIZED
        if self.config.stop_transaction_on_invalid_id:
            if self.config.cable_lock:
                # §4.8: keep the cable locked until the owner presents his identifier (or an unlock)
                self._ctx.cable_held_for = tx.id_token
            self._stop_and_settle(StopReason.DE_AUTHORIZED, Trigger.DEAUTHORIZED)
        elif tx.energy_allowed:
            self._ctx.transaction = replace(tx, energy_allowed=False)  # energy stops, transaction goes on
            self._goto(self._tx_status())

    # --- handlers: reservations ---------------------------------------------------------------

    def _arm_reservation(self, event: ReservationMade) -> bool:
        try:
            expiry = _as_utc(event.expiry).astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00: beyond what a date can hold in UTC
            expiry = self._now
        if expiry <= self._now:
            self._emit(ReservationResult(event.reservation_id, ReservationStatus.REJECTED))
            return False
        self._ctx.reservation = Reservation(event.reservation_id, event.id_token, event.parent_id_token, expiry)
        self._start_timer(TimerName.RESERVATION_EXPIRY, (expiry - self._now).total_seconds())
        self._emit(ReservationResult(event.reservation_id, ReservationStatus.ACCEPTED))
        return True

    def _on_reserve(self, event: ReservationMade) -> None:
        if self._arm_reservation(event):
            self._goto(ConnectorStatus.RESERVED)

    def _on_reserve_again(self, event: ReservationMade) -> None:
        res = self._ctx.reservation
        if res is not None and res.reservation_id == event.reservation_id:
            self._arm_reservation(event)  # 1.6 §5.13: same id replaces the reservation
        else:
            self._emit(ReservationResult(event.reservation_id, ReservationStatus.OCCUPIED))

    def _on_reserve_refused(self, event: ReservationMade) -> None:
        status = {ConnectorStatus.FAULTED: ReservationStatus.FAULTED,
                  ConnectorStatus.UNAVAILABLE: ReservationStatus.UNAVAILABLE}.get(self._status,
                                                                                 ReservationStatus.OCCUPIED)
        self._emit(ReservationResult(event.reservation_id, status))

    def _on_cancel_reservation(self, event: ReservationCancelled) -> None:
        res = self._ctx.reservation
        if res is None or res.reservation_id != event.reservation_id:
            self._ignored(event, "no such reservation")
            return
        self._end_reservation(ReservationEndReason.CANCELLED)
        if self._status is ConnectorStatus.RESERVED:
            self._end_usage()

    # --- handler: power back after a restore --------------------------------------------------

    def _on_power_restored(self, event: PowerRestored) -> None:
        c = self._ctx
        # the hardware restarted in its safe state: make our record match it, and say so
        c.power_on, c.offered_amps = False, 0.0
        self._emit(AllowPower(False))
        self._emit(OfferCurrent(0.0))
        if self.config.cable_lock:
            c.locked = False
            self._emit(LockCable(False))
        c.pilot = event.pilot if event.pilot is not None else PilotState.A
        c.faults.clear()  # devices re-report what is still wrong
        c.emergency_stop = None
        c.pending = None
        c.authorization = None
        c.timers.clear()  # the executor's timers died with the power
        self._trigger = Trigger.ABNORMAL_CONDITION
        if c.transaction is not None:
            reason = StopReason.REBOOT if (event.reboot or c.reset_pending) else StopReason.POWER_LOSS
            self._stop_transaction(reason, Trigger.ABNORMAL_CONDITION)
        c.reset_pending = False
        self._apply_scheduled_availability()
        if not self._ev_present:
            c.finishing = False
        res = c.reservation
        if res is not None:
            if res.expiry <= self._now:
                c.reservation = None
                self._emit(ReservationEnded(res.reservation_id, ReservationEndReason.EXPIRED))
            else:
                self._start_timer(TimerName.RESERVATION_EXPIRY, (res.expiry - self._now).total_seconds())
        c.reported = None  # report the status after the restart even if it did not change
        self._goto(self._idle_status())


# --- the transition table ----------------------------------------------------------------------

_S = ConnectorStatus
_M = SessionMachine
_TX = (_S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE)
_ENDED = (_S.FINISHING, _S.AVAILABLE, _S.UNAVAILABLE)  # where a stopped transaction leaves the connector


def _t(handler: Handler, description: str, *targets: ConnectorStatus) -> Transition:
    return Transition(handler, frozenset(targets), description)


def _everywhere(status: ConnectorStatus) -> dict[type[Any], Transition]:
    """Rows every status has (targets that depend on the status are filled in per status)."""
    in_tx = status in TRANSACTION_STATUSES
    restored = {
        _S.AVAILABLE: (_S.PREPARING,),
        _S.PREPARING: (_S.AVAILABLE, _S.UNAVAILABLE),
        _S.RESERVED: (_S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE),
        _S.FINISHING: (_S.AVAILABLE,),
        _S.UNAVAILABLE: (),
        _S.FAULTED: (_S.AVAILABLE, _S.PREPARING, _S.FINISHING, _S.RESERVED, _S.UNAVAILABLE),
    }.get(status, _ENDED)
    rows: dict[type[Any], Transition] = {
        FaultCleared: _t(_M._on_fault_cleared, "forget the fault; report the remaining error"),
        ChargingLimitChanged: (
            _t(_M._on_limit, "C5/D5/E3/E4: offer min(limit, rating); < 6 A suspends (SuspendedEVSE)", *_TX)
            if in_tx else _t(_M._on_limit, "remember the limit for the next transaction")),
        ResetRequested: (
            _t(_M._on_reset, "stop: SoftReset / HardReset", *_ENDED)
            if in_tx else _t(_M._on_reset, "remember that a reset is coming")),
        PowerRestored: _t(_M._on_power_restored,
                          "outputs safe; open transaction stopped: PowerLoss (Reboot if a reset was "
                          "requested); faults forgotten; status from pilot and context", *restored),
    }
    if status is not _S.FAULTED:
        rows[FaultRaised] = _t(_M._on_fault, "9: blocking fault: power off, stop (Other), a reservation "
                                             "ends (removed), Faulted; other faults are reported as a warning",
                               _S.FAULTED)
        rows[EmergencyStop] = _t(_M._on_emergency_stop, "9: power off, stop (EmergencyStop), a reservation ends "
                                                        "(removed), Faulted", _S.FAULTED)
    if in_tx:
        rows[UnlockRequested] = _t(_M._on_unlock_transaction,
                                   "stop (UnlockCommand), then unlock; refused if unlock_stops_transaction "
                                   "is off", *_ENDED)
    elif status is _S.FINISHING:
        rows[UnlockRequested] = _t(_M._on_unlock_idle, "unlock the cable; a cable held for its owner is "
                                                        "released (Preparing if an EV was plugged in again "
                                                        "after leaving)", _S.AVAILABLE, _S.PREPARING,
                                   _S.UNAVAILABLE)
    else:
        rows[UnlockRequested] = _t(_M._on_unlock_idle, "unlock the cable")
    return rows


_TRANSACTION_ROWS: dict[type[Any], Transition] = {
    PilotChanged: _t(_M._on_pilot_transaction,
                     "C4/D3: B<->C/D pauses/resumes (status only: the permission stays, the board switches "
                     "the contactor); A: stop (EVDisconnected) -> "
                     "Finishing/Available (C1/C6), or stay SuspendedEV if StopTransactionOnEVSideDisconnect "
                     "is off; with UnlockConnectorOnEVSideDisconnect off the cable stays locked for its owner "
                     "(Finishing until released)", *_TX, *_ENDED),
    CardPresented: _t(_M._on_tap_transaction,
                      "same id: stop (Local) (C6); other id: authorize it to compare groups (or because it may be "
                      "a master pass), or refuse", *_ENDED),
    AuthorizationResult: _t(_M._on_auth_to_stop, "same group: stop (Local); master pass: stop (MasterPass); "
                                                 "else refuse (NotOwner)", *_ENDED),
    MasterPassPresented: _t(_M._on_master_pass_stop, "master pass at another connector: stop (MasterPass)",
                            *_ENDED),
    RemoteStartRequested: _t(_M._on_remote_start_refused, "refuse: a transaction is running"),
    RemoteStopRequested: _t(_M._on_remote_stop, "stop (Remote) (C6)", *_ENDED),
    AvailabilityChanged: _t(_M._on_availability_later, "Inoperative is scheduled: applies when the "
                                                       "transaction ends (C8)"),
    TransactionAccepted: _t(_M._on_tx_accepted, "nothing to do"),
    TransactionRejected: _t(_M._on_tx_rejected,
                            "StopTransactionOnInvalidId: stop (DeAuthorized), the cable held locked for its "
                            "owner (Finishing until released); else energy off (C5)",
                            _S.SUSPENDED_EVSE, *_ENDED),
    ReservationMade: _t(_M._on_reserve_refused, "refuse: Occupied"),
    TimerExpired: _t(_M._on_reconnect_timeout,
                     "tethered cable, ev_reconnect_timeout (2.0.1 E10.FR.02): the EV unplugged from a transaction "
                     "StopTransactionOnEVSideDisconnect kept is not back within the connection timeout: stop "
                     "(Timeout, EVConnectTimeout)", *_ENDED),
}

TRANSITIONS: dict[ConnectorStatus, dict[type[Any], Transition]] = {
    _S.AVAILABLE: {
        PilotChanged: _t(_M._on_plug_in, "A2: EV plugged in -> Preparing (A3-A5: free vend starts at once)",
                         _S.PREPARING, *_TX),
        CardPresented: _t(_M._on_tap_to_start, "ask for authorization"),
        AuthorizationResult: _t(_M._on_auth_to_start, "A2: accepted -> Preparing, wait ConnectionTimeOut "
                                                      "for the EV; else (or a master pass) refuse",
                                _S.PREPARING, *_TX),
        RemoteStartRequested: _t(_M._on_remote_start, "A2: accept; authorize first if "
                                                      "AuthorizeRemoteTxRequests", _S.PREPARING, *_TX),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_now, "A8: Inoperative applies now", _S.UNAVAILABLE),
        ReservationMade: _t(_M._on_reserve, "A7: accept, arm the expiry timer", _S.RESERVED),
        **_everywhere(_S.AVAILABLE),
    },
    _S.PREPARING: {
        PilotChanged: _t(_M._on_pilot_preparing,
                         "B3-B5: EV plugged in while an id is authorized: start; B1: unplugged -> Available",
                         _S.AVAILABLE, _S.UNAVAILABLE, *_TX),
        CardPresented: _t(_M._on_tap_preparing, "B1: the authorized id again cancels; other ids: authorize",
                          _S.AVAILABLE, _S.UNAVAILABLE),
        AuthorizationResult: _t(_M._on_auth_to_start, "B3-B5: accepted with the EV plugged in: start; "
                                                      "else (or a master pass) refuse", *_TX),
        MasterPassPresented: _t(_M._on_master_pass_held, "master pass at another connector: an id waiting for "
                                                         "its EV is dropped (MasterPass)",
                                _S.AVAILABLE, _S.UNAVAILABLE),
        RemoteStartRequested: _t(_M._on_remote_start, "B3-B5: accept and start (refuse if an id is "
                                                      "already waiting)", *_TX),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_now, "B1+A8: Inoperative ends the usage now",
                                _S.UNAVAILABLE),
        TimerExpired: _t(_M._on_connection_timeout, "B1: ConnectionTimeOut without EV -> Available",
                         _S.AVAILABLE, _S.UNAVAILABLE),
        ReservationMade: _t(_M._on_reserve_refused, "refuse: Occupied"),
        **_everywhere(_S.PREPARING),
    },
    **{status: {**_TRANSACTION_ROWS, **_everywhere(status)} for status in _TX},
    _S.FINISHING: {
        PilotChanged: _t(_M._on_pilot_finishing, "F1: unplugged -> Available", _S.AVAILABLE, _S.UNAVAILABLE),
        CardPresented: _t(_M._on_tap_finishing, "F2: ask for authorization of a new transaction (refused: "
                                                "UnplugFirst while the EV of the last one is still connected and "
                                                "unplug_before_next_transaction is on); while the "
                                                "cable is held after a DeAuthorized stop only its owner's id, "
                                                "which releases it (others refused: NotOwner; Preparing if an "
                                                "EV was plugged in again after leaving)",
                          _S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE),
        AuthorizationResult: _t(_M._on_auth_to_start, "F2: accepted -> Preparing -> new transaction",
                                _S.PREPARING, *_TX),
        RemoteStartRequested: _t(_M._on_remote_start, "F2: accept -> Preparing -> new transaction (refused "
                                                       "while the cable is held for its owner, or the last "
                                                       "transaction's EV is connected and "
                                                       "unplug_before_next_transaction is on)",
                                 _S.PREPARING, *_TX),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_now, "F8: Inoperative applies now", _S.UNAVAILABLE),
        ReservationMade: _t(_M._on_reserve_refused, "refuse: Occupied"),
        **_everywhere(_S.FINISHING),
    },
    _S.RESERVED: {
        PilotChanged: _t(_M._on_pilot_record, "remember the pilot; the reservation holds"),
        CardPresented: _t(_M._on_tap_reserved, "the reserved id: ask for authorization; another id: ask for "
                                               "its parent id if the reservation has a group, else refuse "
                                               "(Reserved) without asking"),
        AuthorizationResult: _t(_M._on_auth_to_start, "G2: reserved id or its group -> Preparing (-> start "
                                                      "if plugged in); others refused (Reserved)",
                                _S.PREPARING, *_TX),
        RemoteStartRequested: _t(_M._on_remote_start, "G2: reserved id or group only",
                                 _S.PREPARING, *_TX),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_now, "G8: Inoperative ends the reservation (removed) "
                                                         "and applies now", _S.UNAVAILABLE),
        TimerExpired: _t(_M._on_reservation_expiry, "G1/G8: reservation expired",
                         _S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE),
        ReservationMade: _t(_M._on_reserve_again, "same reservation id replaces it; others: Occupied"),
        ReservationCancelled: _t(_M._on_cancel_reservation, "G1/G8: cancelled",
                                 _S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE),
        **_everywhere(_S.RESERVED),
    },
    _S.UNAVAILABLE: {
        PilotChanged: _t(_M._on_pilot_record, "remember the pilot"),
        CardPresented: _t(_M._on_tap_refused, "refuse (Unavailable)"),
        RemoteStartRequested: _t(_M._on_remote_start_refused, "refuse"),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_now, "H1/H2: Operative -> Available, or Preparing if "
                                                         "an EV is plugged in", _S.AVAILABLE, _S.PREPARING),
        ReservationMade: _t(_M._on_reserve_refused, "refuse: Unavailable"),
        **_everywhere(_S.UNAVAILABLE),
    },
    _S.FAULTED: {
        PilotChanged: _t(_M._on_pilot_record, "remember the pilot"),
        CardPresented: _t(_M._on_tap_refused, "refuse (Faulted)"),
        RemoteStartRequested: _t(_M._on_remote_start_refused, "refuse"),
        RemoteStopRequested: _t(_M._on_remote_stop_refused, "refuse: no transaction"),
        AvailabilityChanged: _t(_M._on_availability_faulted, "apply now; shows once the fault clears"),
        FaultRaised: _t(_M._on_fault_while_faulted, "add the fault; report the new error"),
        FaultCleared: _t(_M._on_fault_cleared, "I1-I8: last blocking fault gone -> status the pilot and "
                                               "context imply",
                         _S.AVAILABLE, _S.PREPARING, _S.FINISHING, _S.RESERVED, _S.UNAVAILABLE),
        EmergencyStop: _t(_M._on_emergency_stop, "latch the emergency stop"),
        EmergencyStopReleased: _t(_M._on_emergency_stop_released, "I1-I8: like a cleared fault",
                                  _S.AVAILABLE, _S.PREPARING, _S.FINISHING, _S.RESERVED, _S.UNAVAILABLE),
        TimerExpired: _t(_M._on_reservation_expiry, "reservation expired (status stays Faulted; only a "
                                                    "snapshot from before Faulted ended reservations has one)"),
        ReservationMade: _t(_M._on_reserve_refused, "refuse: Faulted"),
        ReservationCancelled: _t(_M._on_cancel_reservation, "cancel the reservation (as for TimerExpired)"),
        **{k: v for k, v in _everywhere(_S.FAULTED).items() if k not in (FaultCleared,)},
    },
}
