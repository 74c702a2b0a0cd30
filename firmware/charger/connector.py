"""One connector at run time: its session machine wired to its board and meter.

The controller is the I/O shell around :class:`~firmware.session.SessionMachine` (which is pure):
it turns board and meter events into machine events, performs the hardware effects the machine
returns, runs its timers, and persists its snapshot after every event so that a power cut at any
instant is recovered from (the machine then ends an open transaction with PowerLoss).

Effects reach observers (the OCPP adapter, telemetry) in two steps: ``record`` — synchronous and
durable, called with the meter reading *before* any hardware is switched, so billing data is on
disk first — and ``notify``, after the hardware effects.

Latched board faults (an RCD trip stays latched on the board after the residual current has gone)
are cleared by the controller only while no EV is connected (pilot A): then nothing can be energized,
and the next plug-in starts from a clean state; the board keeps a fault whose cause persists. With
an EV still plugged in, the connector stays Faulted until it is unplugged — re-energizing the
vehicle that caused the trip is not the charger's call.

The cable lock is driven with its feedback: ``LockCable`` waits until the board reports the lock in the
commanded position (``EvseBoard.set_cable_lock``). A lock that does not get there is a blocking
``CONNECTOR_LOCK_FAILURE`` (1.6 ConnectorLockFailure). The lock a transaction starts with is driven
*before* that step is recorded (no energy is involved yet): if it fails, the step is taken back — the machine
is restored from the snapshot stored before it — the fault is fed first and the event again after it, so
the Faulted machine refuses what would have started, no transaction is recorded (OCTT TC_024), and the
lock is released again (which does not clear the fault). Elsewhere a failed lock skips the power-up effects
of its step (no current offered, no permission: energy never flows to an unlocked cable) and the fault
follows as the next event; a failed unlock turns the machine's ``UnlockResult(Unlocked)`` into
``UnlockFailed``. A later lock command that reaches its position clears the fault (an operator's
UnlockConnector is that new attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from firmware.hardware import ConnectorHardware
from firmware.session import (
    AllowPower,
    AvailabilityChanged,
    CancelTimer,
    Effect,
    FaultCleared,
    FaultRaised,
    LockCable,
    OfferCurrent,
    PilotChanged,
    PowerRestored,
    SessionConfig,
    SessionMachine,
    SnapshotError,
    StartTimer,
    TimerExpired,
    TransactionStarted,
    TransactionStopped,
    UnlockResult,
    UnlockStatus,
)
from firmware.session.events import Event
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.settings import Settings
from hal.interfaces import (
    ContactorChanged,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    FaultCode,
    LockChanged,
    LockState,
    MeterReading,
    PilotState,
    utcnow,
)
from hal.interfaces import PilotChanged as BoardPilotChanged

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "session.{}"
#: Who holds the connector inoperative: {"csms": bool, "site": bool} (docs/mqtt.md, local availability).
AVAILABILITY_KEY = "availability.{}"
#: Board faults that stay latched on the board until the host asks to clear them.
LATCHED_BOARD_FAULTS = frozenset({FaultCode.RCD_TRIP})
#: How often a latched fault is retried while no EV is connected (the board refuses while the cause stays).
LATCH_RETRY_S = 2.0


#: Changes an event before the machine sees it (what the charger as a whole knows and one connector does not:
#: e.g. a charger-wide reservation the id holds, :meth:`firmware.charger.reservations.Reservations.amend`).
EventAmender = Callable[["ConnectorController", Event], Event]


class ConnectorObserver(Protocol):
    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Durable bookkeeping (transactions, queued messages); runs before hardware is switched, inside the
        database transaction that also stores the machine's snapshot (write through the shared Database)."""

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None:
        """Everything else (status messages, telemetry); runs after the hardware effects."""


@dataclass
class HardwareView:
    """What the hardware last said, for diagnostics and the OCPP adapter."""

    contactor_closed: bool = False
    offered_amps: float = 0.0
    power_allowed: bool = False
    lock_state: LockState | None = None  # the cable lock's feedback, as the board last reported it


class ConnectorController:
    def __init__(self, hw: ConnectorHardware, config: SessionConfig, db: Database) -> None:
        self.hw = hw
        self.id = hw.id
        self.config = config
        self._db = db
        self._settings = Settings(db)
        self.observers: list[ConnectorObserver] = []
        self.amenders: list[EventAmender] = []
        self.view = HardwareView()
        self.latest_reading: MeterReading | None = None
        self.restored = False
        # called when the database fails while handling an event (disk full, I/O error): the agent stops
        self._lock = asyncio.Lock()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unplugged = asyncio.Event()  # pilot went to A: try clearing latched faults now
        self._lock_busy = False  # a LockCable is being carried out: its outcome decides, not the board's events
        self._after_step: list[Callable[[], None]] = []  # see after_step
        self.machine = self._load_machine()
        self._persisted = json.dumps(self.machine.snapshot())  # the machine as last stored: a step can be taken back
        self.inoperative_by = self._load_availability_holds()

    def _load_machine(self) -> SessionMachine:
        raw = self._settings.get(SNAPSHOT_KEY.format(self.id))
        if raw is None:
            return self._fresh_machine()
        try:
            machine = SessionMachine.restore(json.loads(raw), self.config)
        except (SnapshotError, ValueError) as exc:
            # a broken snapshot must not keep the charger down; the ledger still has the billing data
            # (the OCPP client closes a transaction left open there, see Ocpp16Client.close_orphaned_transactions)
            log.error("session snapshot unusable, starting fresh", extra={"connector": self.id, "error": str(exc)})
            return self._fresh_machine()
        self.restored = True
        return machine

    def _load_availability_holds(self) -> set[str]:
        raw = self._settings.get(AVAILABILITY_KEY.format(self.id))
        if raw:
            with contextlib.suppress(ValueError, TypeError):
                return {source for source, operative in json.loads(raw).items() if operative is False}
        return set() if self.machine.operative else {"csms"}  # before site control existed: the CSMS's

    def _fresh_machine(self) -> SessionMachine:
        """A new machine that continues this connector's transaction numbering: (connector, local id) keys the
        billing records, so a machine that lost its snapshot must not reuse a local id."""
        machine = SessionMachine(self.id, self.config)
        first = Ledger(self._db).next_local_id(self.id)
        if first > 1:
            snapshot = machine.snapshot()
            snapshot["context"]["next_local_id"] = first
            machine = SessionMachine.restore(snapshot, self.config)
        return machine

    # --- life cycle -----------------------------------------------------------------------------

    def loops(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The connector's long-running loops by task name: watching the board and the meter, clearing latched
        faults. Each can be started again after it ended (it subscribes afresh; the machine keeps the state)."""
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {f"connector{self.id}-board": self._watch_board}
        if self.hw.meter is not None:
            loops[f"connector{self.id}-meter"] = self._watch_meter
        clear = getattr(self.hw.board, "clear_faults", None)  # not part of EvseBoard: boards that latch have it
        if callable(clear):
            loops[f"connector{self.id}-latch"] = functools.partial(self._clear_latched_faults, clear)
        return loops

    async def start(self, *, reboot: bool = False,
                    run: Callable[[str, Callable[[], Awaitable[None]]], None] | None = None) -> None:
        """Start watching the hardware (devices are already started): ``run(name, loop)`` starts each of
        :meth:`loops` (the agent's task supervisor; without it they are this connector's own tasks). After a
        restart, tell the machine the power came back so it settles what was open."""
        for name, loop in self.loops().items():
            if run is not None:
                run(name, loop)
            else:
                self._spawn(loop(), name)
        pilot = self.hw.board.pilot_state
        if self.restored:
            await self.handle(PowerRestored(pilot=pilot, reboot=reboot))
        elif pilot is not None:
            await self.handle(PilotChanged(pilot))

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task owned by this connector; finished tasks are forgotten (timers fire often)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def configure(self, config: SessionConfig) -> None:
        """New session settings (a configuration key changed). The machine's steps are synchronous and run
        under the lock, so a step never sees half of a change: the next event uses the new settings."""
        self.config = config
        self.machine.config = config

    # --- events in ------------------------------------------------------------------------------

    async def handle(self, event: Event, *, availability_source: str = "csms") -> list[Effect]:
        """Feed one event to the machine and carry out what it asks. Serialized per connector.

        Availability has two sources, the CSMS (ChangeAvailability) and the site (local control over
        MQTT): the connector is operative only while neither holds it inoperative."""
        async with self._lock:
            holds = set(self.inoperative_by)
            if isinstance(event, AvailabilityChanged):
                (holds.discard if event.operative else holds.add)(availability_source)
                event = AvailabilityChanged(not holds)
            for amend in self.amenders:
                event = amend(self, event)
            now = utcnow()
            effects = self.machine.handle(event, now)
            prelocked = release = False
            start_reading: asyncio.Task[MeterReading | None] | None = None
            if _starts_locked(effects):
                # The start value is read while the lock travels (its motor takes 100..600 ms; the meter is on
                # another line): off the tap-to-contactor path. Nothing flows before the contactor closes, after
                # the record, so the register read now is the one at the start.
                start_reading = asyncio.ensure_future(self.fresh_reading())
                try:
                    failure = await self._drive_lock(True)
                except BaseException:
                    start_reading.cancel()
                    raise
                if failure is None:
                    prelocked = True
                else:  # take the step back: the fault first, then the event again (refused while Faulted)
                    log.warning("transaction not started: the cable lock failed", extra={
                        "connector": self.id, "event": type(event).__name__, "error": failure})
                    self.machine = SessionMachine.restore(json.loads(self._persisted), self.config)
                    effects = self.machine.handle(FaultRaised(FaultCode.CONNECTOR_LOCK_FAILURE, failure,
                                                              source=self._lock_source, blocking=True), now)
                    effects += self.machine.handle(event, now)
                    release = True
            snapshot = json.dumps(self.machine.snapshot())
            taken = None if start_reading is None else await start_reading
            reading = None
            if any(isinstance(e, TransactionStarted | TransactionStopped) for e in effects):
                reading = taken if start_reading is not None else await self.fresh_reading()
            try:
                # One commit for the machine's new state and the records it implies: a power cut leaves both or
                # neither (a snapshot without its StopTransaction would lose the stop; a record without its snapshot
                # would stop a transaction twice). Nothing was switched yet, so "neither" is a consistent state.
                try:
                    with self._db.transaction():
                        self._settings.put(SNAPSHOT_KEY.format(self.id), snapshot)
                        if holds != self.inoperative_by:
                            self._settings.put(AVAILABILITY_KEY.format(self.id), json.dumps(
                                {source: source not in holds for source in ("csms", "site")}))
                        if effects:
                            for observer in self.observers:
                                observer.record(self, effects, reading, now)
                except sqlite3.Error as exc:
                    # nothing was switched; without a database no billing data can be kept: Database.on_failure has
                    # already told the agent, which stops with 74
                    log.critical("storage failed while handling an event", extra={
                        "connector": self.id, "db": str(self._db.path), "error": str(exc)})
                    raise
                self._persisted = snapshot
                self.inoperative_by = holds
                lock_failure: str | None = None  # why the last LockCable of this step failed
                lock_moved = False
                if release:  # the lock may be half-way: give the plug free; this clears nothing (it failed its job)
                    await self._drive_lock(False)
                if not effects:
                    return effects
                for effect in effects:
                    if isinstance(effect, LockCable) and effect.locked and prelocked:
                        continue  # driven (and confirmed) before the step was recorded
                    if lock_failure is not None and _powers_up(effect):
                        log.warning("not energizing: the cable lock failed", extra={
                            "connector": self.id, "effect": type(effect).__name__})
                        continue
                    if isinstance(effect, LockCable):
                        lock_failure = await self._drive_lock(effect.locked)
                        lock_moved = lock_failure is None
                        if lock_failure is not None and not effect.locked:
                            effects = [UnlockResult(UnlockStatus.UNLOCK_FAILED)
                                       if isinstance(e, UnlockResult) and e.status is UnlockStatus.UNLOCKED else e
                                       for e in effects]
                        continue
                    await self._perform(effect)
                self._settle_lock_fault(lock_failure, lock_moved)
                # before the observers report: what this step recorded goes out first (a StopTransaction before the
                # StatusNotification Faulted of the same step)
                self._run_after_step()
                for observer in self.observers:
                    try:
                        await observer.notify(self, effects)
                    except Exception:  # an observer's bug must not stop charging
                        log.exception("connector observer failed", extra={"connector": self.id})
                return effects
            finally:  # also when the step failed or ended early: nothing waits for ever on it
                self._run_after_step()

    def after_step(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the step being recorded has carried out its hardware effects, before its observers'
        :meth:`~ConnectorObserver.notify` (or once it failed): for an observer's :meth:`~ConnectorObserver.record`
        whose follow-up work must not sit between the commit and the contactor — e.g. sending what it queued, whose
        round trip and commit would delay the board's commands — yet must come before what ``notify`` reports."""
        self._after_step.append(callback)

    def _run_after_step(self) -> None:
        callbacks, self._after_step = self._after_step, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # an observer's bug must not stop charging
                log.exception("connector after-step callback failed", extra={"connector": self.id})

    async def fresh_reading(self) -> MeterReading | None:
        """A reading taken now (start/stop values), falling back to the latest poll if the meter is silent."""
        if self.hw.meter is None:
            return None
        try:
            self._keep_newest(await self.hw.meter.read())
        except DeviceError as exc:
            log.warning("meter read failed, using the last reading", extra={"connector": self.id, "error": str(exc)})
        return self.latest_reading

    def _keep_newest(self, reading: MeterReading) -> None:
        """A poll's reading can reach us (through the event stream) after a fresher one read for a start or a
        stop: never let the latest reading go back in time, or a later sample could undercut meterStart."""
        if self.latest_reading is None or reading.taken_at >= self.latest_reading.taken_at:
            self.latest_reading = reading

    async def _watch_board(self) -> None:
        board = self.hw.board
        with board.events.subscribe() as sub:
            async for ev in sub:
                if isinstance(ev, BoardPilotChanged):
                    await self.handle(PilotChanged(ev.state))
                    if ev.state is PilotState.A:
                        self._unplugged.set()
                elif isinstance(ev, ContactorChanged):
                    self.view.contactor_closed = ev.closed
                elif isinstance(ev, LockChanged):
                    self.view.lock_state = ev.state
                    if ev.state is LockState.FAULT and not self._lock_busy and self.machine.cable_locked:
                        # the lock let go while it should hold the cable (forced, or its feedback failed)
                        await self.handle(FaultRaised(FaultCode.CONNECTOR_LOCK_FAILURE,
                                                      "the cable lock reports a fault while locked",
                                                      source=self._lock_source, blocking=True))
                elif isinstance(ev, DeviceFault):
                    # a board we cannot talk to cannot be trusted to keep power safe: always blocking
                    blocking = True if ev.code is FaultCode.LINK_LOST else None
                    await self.handle(FaultRaised(ev.code, ev.detail, source=f"board:{ev.device}", blocking=blocking))
                elif isinstance(ev, DeviceRecovered):
                    await self.handle(FaultCleared(ev.code, source=f"board:{ev.device}"))

    def _latched_board_faults(self) -> list[FaultCode]:
        return [f.code for f in self.machine.faults if f.code in LATCHED_BOARD_FAULTS and f.source.startswith("board:")]

    async def _clear_latched_faults(self, clear: Callable[[], Awaitable[None]]) -> None:
        """Ask the board to clear latched faults while no EV is connected (see the module docstring)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unplugged.wait(), LATCH_RETRY_S)
            self._unplugged.clear()
            latched = self._latched_board_faults()
            if not latched or self.machine.pilot is not PilotState.A:
                continue
            try:
                await clear()
                log.info("asked the board to clear latched faults", extra={
                    "connector": self.id, "faults": [c.value for c in latched]})
            except DeviceError as exc:
                log.warning("clearing latched faults failed", extra={"connector": self.id, "error": str(exc)})

    async def _watch_meter(self) -> None:
        assert self.hw.meter is not None
        with self.hw.meter.events.subscribe() as sub:
            async for ev in sub:
                if isinstance(ev, MeterReading):
                    self._keep_newest(ev)
                elif isinstance(ev, DeviceFault):
                    # reported (PowerMeterFailure) but charging goes on: the meter's register keeps counting
                    await self.handle(FaultRaised(ev.code, ev.detail, source=f"meter:{ev.device}", blocking=False))
                elif isinstance(ev, DeviceRecovered):
                    await self.handle(FaultCleared(ev.code, source=f"meter:{ev.device}"))

    # --- effects out ----------------------------------------------------------------------------

    @property
    def _lock_source(self) -> str:
        return f"lock:{self.hw.board.name}"

    async def _drive_lock(self, locked: bool) -> str | None:
        """Carry out ``LockCable``: command the lock and wait for its feedback. ``None`` once it is in the commanded
        position, else why not (for the fault's detail and the log)."""
        target = LockState.LOCKED if locked else LockState.UNLOCKED
        self._lock_busy = True
        state: LockState | None = None
        try:
            state = await self.hw.board.set_cable_lock(locked)
            failure = None if state is target else f"cable lock not {target.value}: its feedback says {state.value}"
        except DeviceError as exc:  # no lock on this board, or the board did not take the command
            failure = f"cable lock not {target.value}: {exc}"
        finally:
            self._lock_busy = False
        if state is not None:
            self.view.lock_state = state
        log.info("cable lock", extra={"connector": self.id, "locked": locked,
                                      "feedback": None if state is None else state.value, "ok": failure is None,
                                      "held_for_owner": self.machine.cable_held_for is not None})
        if failure is not None:
            log.warning("cable lock failure", extra={"connector": self.id, "error": failure})
        return failure

    def _settle_lock_fault(self, failure: str | None, moved: bool) -> None:
        """After a step: raise CONNECTOR_LOCK_FAILURE for a lock that failed, clear it once a lock command worked.
        As the next event (this one holds the connector's lock), in a task of the connector."""
        active = any(f.code is FaultCode.CONNECTOR_LOCK_FAILURE for f in self.machine.faults)
        if failure is not None and not active:
            self._spawn(self.handle(FaultRaised(FaultCode.CONNECTOR_LOCK_FAILURE, failure, source=self._lock_source,
                                                blocking=True)), f"connector{self.id}-lock-fault")
        elif moved and active:
            self._spawn(self.handle(FaultCleared(FaultCode.CONNECTOR_LOCK_FAILURE, source=self._lock_source)),
                        f"connector{self.id}-lock-fault")

    async def _perform(self, effect: Effect) -> None:
        board = self.hw.board
        try:
            if isinstance(effect, OfferCurrent):
                self.view.offered_amps = effect.amps
                await board.set_offered_current(effect.amps)
            elif isinstance(effect, AllowPower):
                self.view.power_allowed = effect.on
                await board.allow_power(effect.on)
            elif isinstance(effect, StartTimer):
                self._start_timer(effect.name.value, effect.seconds)
            elif isinstance(effect, CancelTimer):
                handle = self._timers.pop(effect.name.value, None)
                if handle is not None:
                    handle.cancel()
        except DeviceError as exc:
            # the board's own fault events (link lost ...) follow; the machine then makes it safe
            log.warning("board command failed", extra={"connector": self.id, "effect": type(effect).__name__,
                                                     "error": str(exc)})

    def _start_timer(self, name: str, seconds: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        async def expire() -> None:
            await self.handle(TimerExpired(name))

        def fire() -> None:
            self._timers.pop(name, None)
            self._spawn(expire(), f"connector{self.id}-timer-{name}")

        self._timers[name] = loop.call_later(max(0.0, seconds), fire)

    def describe(self) -> dict[str, Any]:
        m = self.machine
        tx = m.transaction
        return {"connector": self.id, "status": m.status.value, "pilot": None if m.pilot is None else m.pilot.value,
                "transaction": None if tx is None else tx.local_id, "offered_amps": self.view.offered_amps,
                "power_allowed": self.view.power_allowed, "contactor_closed": self.view.contactor_closed,
                "cable_locked": m.cable_locked, "cable_held_for_owner": m.cable_held_for is not None,
                "lock_feedback": None if self.view.lock_state is None else self.view.lock_state.value,
                "reservation": None if m.reservation is None else m.reservation.reservation_id}


def _starts_locked(effects: list[Effect]) -> bool:
    """The step starts a transaction and locks the cable for it: the lock is driven before the step is recorded."""
    return (any(isinstance(e, TransactionStarted) for e in effects)
            and any(isinstance(e, LockCable) and e.locked for e in effects))


def _powers_up(effect: Effect) -> bool:
    """Effects that would let energy flow: skipped after a failed cable lock in the same step."""
    return (isinstance(effect, AllowPower) and effect.on) or (isinstance(effect, OfferCurrent) and effect.amps > 0)


def restart_pending(db: Database) -> bool:
    """Whether the previous run ended for a requested reset (then open transactions end with Reboot)."""
    settings = Settings(db)
    flag = settings.get("agent.reset_pending")
    if flag:
        settings.put("agent.reset_pending", "")
    return bool(flag)


def reset_flag(db: Database, kind: str) -> None:
    Settings(db).put("agent.reset_pending", kind)


def pending_reset(db: Database) -> str:
    """The reset this run ends for ("hard", "soft"), or "" (read at exit: a hard one also reboots the controller)."""
    return Settings(db).get("agent.reset_pending") or ""


