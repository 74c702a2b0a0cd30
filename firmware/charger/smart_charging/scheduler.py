"""The charger's smart-charging worker: holds the installed profiles and keeps the ``ocpp`` limit source in step
with them (I/O only here: the store, the limit target, the clock; the decisions are the pure modules').

* Every change — a profile installed or replaced, cleared, dropped with its transaction — is committed to the
  store before the caller hears of it (the adapter acknowledges only then), so profiles survive a power cut and
  keep working without the CSMS.
* The worker (:meth:`SmartChargingScheduler.run`, task ``smart-charging``) sets each connector's ``ocpp`` source to
  its own limit (TxProfile, else TxDefaultProfile) and the whole charger's ``ocpp`` source to the
  ChargePointMaxProfile — :class:`~firmware.charger.limits.ChargingLimits` then takes the lowest source and shares
  the charger's limit among the connectors — now, at every instant the limits change (it sleeps until then), and
  whenever it is woken by a change. It never sleeps longer than :data:`MAX_SLEEP_S`, so a wall clock set forward
  is noticed within that time.
* As a connector observer it drops a transaction's TxProfiles when the transaction ends, installs the TxProfile a
  RemoteStartTransaction brought with the transaction it started (in the start's commit), and re-evaluates when a
  transaction starts (a Relative profile starts with it; a TxDefaultProfile applies to every transaction without a
  TxProfile, errata 3.8, by the composite's rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from firmware.charger.connector import ConnectorController
from firmware.charger.external_limits import ExternalCaps
from firmware.charger.smart_charging.composite import CompositeSchedule, RuntimeLimits, composite_schedule, limits_at
from firmware.charger.smart_charging.installed import (
    InstalledProfile,
    InstallResult,
    ProfileLimits,
    RunningTransaction,
    SameStackLevel,
    check,
    clear,
    drop_ended,
    install,
)
from firmware.charger.smart_charging.profiles import ChargingProfile, ProfileFormatError, ProfilePurpose, RateUnit
from firmware.charger.smart_charging.units import ChargerSetup
from firmware.session import Effect, TransactionStarted, TransactionStopped
from firmware.storage.charging_profiles import ChargingProfileStore, StoredProfile
from firmware.storage.ledger import Ledger
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

#: The name of smart charging's limits in ChargingLimits.
LIMIT_SOURCE = "ocpp"
#: The longest the worker sleeps without looking again.
MAX_SLEEP_S = 10.0
#: Woken this much after a change instant, so that the clock has surely reached it.
WAKE_MARGIN_S = 0.005


class LimitTarget(Protocol):
    """Where the limits go (:class:`~firmware.charger.limit_applier.LimitApplier`)."""

    def set(self, source: str, amps: float, connector: int | None = None) -> None: ...

    def clear(self, source: str, connector: int | None = None) -> None: ...


RunningTransactions = Callable[[], Mapping[int, RunningTransaction]]


def running_transactions(connectors: Mapping[int, ConnectorController], ledger: Ledger) -> RunningTransactions:
    """The transactions running now, read from the connectors' machines, with the CSMS's ids from the ledger."""
    def read() -> dict[int, RunningTransaction]:
        out = {}
        for cid, ctrl in connectors.items():
            tx = ctrl.machine.transaction
            if tx is not None:
                record = ledger.get(cid, tx.local_id)
                out[cid] = RunningTransaction(tx.local_id, tx.started_at,
                                              None if record is None else record.transaction_id)
        return out
    return read


class SmartChargingScheduler:
    """Installed profiles, their store, and the worker applying them. Also a connector observer."""

    def __init__(self, store: ChargingProfileStore, target: LimitTarget, setup: ChargerSetup,
                 running: RunningTransactions, *, limits: ProfileLimits | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.target = target
        self.setup = setup
        self.running = running
        self.limits = limits or ProfileLimits()
        self.clock = clock
        #: what was applied last (None before the worker's first evaluation)
        self.applied: RuntimeLimits | None = None
        #: called with the limits each time they (or their next change) differ from the last applied
        self.listeners: list[Callable[[RuntimeLimits], None]] = []
        self._wake = asyncio.Event()
        self._reload = False
        self._installed = self._load()
        self._pending = self._load_pending()  # a remote start's TxProfile, by connector

    @property
    def installed(self) -> tuple[InstalledProfile, ...]:
        return self._installed

    # --- what the adapters call ---------------------------------------------------------------------------

    def install(self, connector: int, profile: ChargingProfile, *,
                same_stack_level: SameStackLevel = SameStackLevel.REPLACES) -> InstallResult:
        """SetChargingProfile: installed (and on disk) when this returns accepted, else the reason.
        ``same_stack_level``: the version's rule for a profile of the same stack level and purpose there."""
        result = install(self._installed, connector, profile, connectors=self.setup.connectors,
                         running=self.running(), limits=self.limits, now=self.clock(),
                         same_stack_level=same_stack_level)
        if not result.accepted or result.added is None:
            log.info("charging profile rejected", extra={"connector": connector, "profile_id": profile.id,
                                                         "reason": result.reason})
            return result
        self.store.save(_stored(result.added), [p.profile.id for p in result.removed])
        self._installed = result.installed
        log.info("charging profile installed", extra={
            "connector": connector, "profile_id": profile.id, "purpose": profile.purpose.value,
            "stack_level": profile.stack_level, "replaced": [p.profile.id for p in result.removed]})
        self._wake.set()
        return result

    def clear(self, *, profile_id: int | None = None, connector: int | None = None,
              purpose: ProfilePurpose | None = None, stack_level: int | None = None) -> tuple[InstalledProfile, ...]:
        """ClearChargingProfile (:func:`~.installed.clear`); the profiles removed (none: the answer is Unknown)."""
        removal = clear(self._installed, profile_id=profile_id, connector=connector, purpose=purpose,
                        stack_level=stack_level)
        if removal.removed:
            self.store.remove(p.profile.id for p in removal.removed)
            self._installed = removal.kept
            log.info("charging profiles cleared", extra={"profile_ids": [p.profile.id for p in removal.removed]})
            self._wake.set()
        return removal.removed

    def composite(self, connector: int, duration: int, unit: RateUnit,
                  start: datetime | None = None, external: ExternalCaps | None = None) -> CompositeSchedule:
        """GetCompositeSchedule over [start (default: now), + duration], bounded by ``external`` limits where given
        (2.0.1 reports them as ChargingStationExternalConstraints); KeyError for an unknown connector."""
        return composite_schedule(self._installed, connector, self.clock() if start is None else start, duration,
                                  unit, self.setup, self.running(), external)

    def check_remote_start(self, connector: int, profile: ChargingProfile) -> str | None:
        """Why the profile of a RemoteStartTransaction on ``connector`` cannot go with the transaction it starts
        (None: it can). Only a TxProfile can; its transactionId, if any, is ignored (there is no transaction yet)."""
        if profile.purpose is not ProfilePurpose.TX:
            return "a RemoteStartTransaction's chargingProfile must be a TxProfile"
        placeholder = {connector: RunningTransaction(0, self.clock())}
        return check(connector, replace(profile, transaction_id=None), connectors=self.setup.connectors,
                     running=placeholder, limits=self.limits)

    def attach_to_next_transaction(self, connector: int, profile: ChargingProfile) -> str | None:
        """Keep a RemoteStartTransaction's TxProfile for the transaction it starts on ``connector``: installed in the
        start's commit when a remote-started transaction begins there; forgotten by any other start there, or by
        :meth:`cancel_pending` (the remote start was refused). Returns the reason it cannot be, or None."""
        reason = self.check_remote_start(connector, profile)
        if reason is None:
            pending = replace(profile, transaction_id=None)
            self.store.save_pending(connector, pending.to_dict())
            self._pending[connector] = pending
        return reason

    def cancel_pending(self, connector: int) -> None:
        if self._pending.pop(connector, None) is not None:
            self.store.save_pending(connector, None)

    def evaluate(self) -> RuntimeLimits:
        """The limits the installed profiles give now (what the worker applies)."""
        return limits_at(self._installed, self.clock(), self.setup, self.running())

    def changed(self) -> None:
        """Look again now (something the limits depend on changed)."""
        self._wake.set()

    # --- connector observer --------------------------------------------------------------------------------

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Inside a connector event's commit: a transaction start takes the remote start's profile waiting there."""
        for e in effects:
            if not isinstance(e, TransactionStarted):
                continue
            pending = self._pending.pop(connector.id, None)
            if pending is None:
                continue
            self.store.save_pending(connector.id, None)  # in the start's commit
            if not e.remote_start:
                continue
            result = install(self._installed, connector.id, pending, connectors=self.setup.connectors,
                             running={connector.id: RunningTransaction(e.local_id, now)}, limits=self.limits,
                             now=now)
            if result.accepted and result.added is not None:
                self.store.save(_stored(result.added), [p.profile.id for p in result.removed])  # the start's commit
                self._installed = result.installed
                self._reload = True  # notify() reads the store back: the commit could still be rolled back
                log.info("remote start's charging profile installed", extra={
                    "connector": connector.id, "profile_id": pending.id, "local_id": e.local_id})
            else:
                log.warning("remote start's charging profile not installed", extra={
                    "connector": connector.id, "profile_id": pending.id, "reason": result.reason})

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None:
        if not any(isinstance(e, TransactionStarted | TransactionStopped) for e in effects):
            return
        if self._reload:  # what record() committed
            self._reload = False
            self._installed = self._load()
        self._drop_ended()
        self._wake.set()

    # --- the worker ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply now, then at every change instant and whenever woken; TxProfiles of transactions that ended while
        the agent was down are dropped first."""
        self._drop_ended()
        while True:
            self._wake.clear()
            current = self.evaluate()
            self._apply(current)
            timeout = MAX_SLEEP_S
            if current.next_change is not None:
                timeout = min(timeout, max(0.0, (current.next_change - self.clock()).total_seconds()) + WAKE_MARGIN_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _apply(self, current: RuntimeLimits) -> None:
        before = self.applied
        moved = False
        for cid, amps in current.connectors.items():
            if before is None or before.connectors.get(cid) != amps:
                moved = True
                if amps is None:
                    self.target.clear(LIMIT_SOURCE, cid)
                else:
                    self.target.set(LIMIT_SOURCE, amps, cid)
        if before is None or before.charger != current.charger:
            moved = True
            if current.charger is None:
                self.target.clear(LIMIT_SOURCE, None)
            else:
                self.target.set(LIMIT_SOURCE, current.charger, None)
        self.applied = current
        if moved:
            log.info("smart charging limits", extra={
                "connectors": dict(current.connectors), "charger": current.charger,
                "next_change": None if current.next_change is None else current.next_change.isoformat()})
        if moved or before is None or before.next_change != current.next_change:
            for listener in self.listeners:
                listener(current)

    # --- persistence ---------------------------------------------------------------------------------------

    def _drop_ended(self) -> None:
        removal = drop_ended(self._installed, self.running())
        if removal.removed:
            self.store.remove(p.profile.id for p in removal.removed)
            self._installed = removal.kept
            log.info("transaction profiles ended with their transaction", extra={
                "profile_ids": [p.profile.id for p in removal.removed]})

    def _load_pending(self) -> dict[int, ChargingProfile]:
        out: dict[int, ChargingProfile] = {}
        for connector, document in self.store.load_pending().items():
            try:
                profile = ChargingProfile.from_dict(document)
                if connector not in self.setup.connectors or profile.problems():
                    raise ProfileFormatError(f"unusable for connector {connector}")
            except ProfileFormatError as exc:
                log.error("stored remote start profile unusable, removed", extra={"connector": connector,
                                                                                  "error": str(exc)})
                self.store.save_pending(connector, None)
                continue
            out[connector] = profile
        return out

    def _load(self) -> tuple[InstalledProfile, ...]:
        """The stored profiles; a row that cannot be read, or whose connector is gone, is removed (logged)."""
        good: list[InstalledProfile] = []
        bad: list[int] = []
        for row in self.store.load():
            try:
                profile = ChargingProfile.from_dict(row.document)
                problems = profile.problems()
                if problems:
                    raise ProfileFormatError("; ".join(problems))
                if profile.id != row.profile_id:
                    raise ProfileFormatError(f"stored under id {row.profile_id}, holds {profile.id}")
                if row.connector != 0 and row.connector not in self.setup.connectors:
                    raise ProfileFormatError(f"connector {row.connector} is not configured")
            except ProfileFormatError as exc:
                log.error("stored charging profile unusable, removed", extra={"profile_id": row.profile_id,
                                                                              "error": str(exc)})
                bad.append(row.profile_id)
                continue
            good.append(InstalledProfile(row.connector, profile, row.transaction_local_id))
        if bad:
            self.store.remove(bad)
        return tuple(good)


def _stored(p: InstalledProfile) -> StoredProfile:
    return StoredProfile(p.profile.id, p.connector, p.transaction, p.profile.to_dict())
