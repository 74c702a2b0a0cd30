"""The smart-charging worker against a real SQLite file, real connectors (session machines) and the real limit
applier, down to the offered current a board is told (firmware/charger/smart_charging/scheduler.py).

The boards are recording stand-ins for the hardware (as in test_connector_durability.py); everything above them is
the agent's own code. Times are the wall clock's: a schedule's boundaries are whole seconds from now.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import (
    ChargerSetup,
    ChargingProfile,
    ChargingSchedule,
    ConnectorSetup,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
    SmartChargingScheduler,
    running_transactions,
)
from firmware.hardware import ConnectorHardware
from firmware.session import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    CardPresented,
    ConnectorStatus,
    Effect,
    IdToken,
    IdTokenType,
    PilotChanged,
    RemoteStartRequested,
    RemoteStopRequested,
    SessionConfig,
    StatusChanged,
    TransactionStarted,
)
from firmware.storage.charging_profiles import ChargingProfileStore
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from hal.events import EventStream
from hal.interfaces import LockState, MeterReading, PilotState, utcnow

CARD = IdToken("04A1B2C3", IdTokenType.ISO14443)
P = ProfilePurpose


class RecordingBoard:
    """Stands in for an EVSE board: remembers every offered current with the time it was told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: EventStream[Any] = EventStream()
        self.pilot_state: PilotState | None = PilotState.A
        self.offers: list[tuple[datetime, float]] = []

    async def set_offered_current(self, amps: float) -> None:
        self.offers.append((utcnow(), amps))

    async def allow_power(self, on: bool) -> None:
        return None

    async def set_cable_lock(self, locked: bool) -> LockState:
        return LockState.LOCKED if locked else LockState.UNLOCKED


class Billing:
    """The ledger part of an OCPP adapter's observer: the transaction records the scheduler reads ids from, and
    every status with its time."""

    def __init__(self, db: Database) -> None:
        self.ledger = Ledger(db)
        self.statuses: list[tuple[datetime, ConnectorStatus]] = []

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        for e in effects:
            if isinstance(e, TransactionStarted):
                self.ledger.start(ctrl.id, e.local_id, e.id_token.value, 0, now)

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        self.statuses += [(utcnow(), e.status) for e in effects if isinstance(e, StatusChanged)]


@dataclass
class Rig:
    db: Database
    connectors: dict[int, ConnectorController]
    boards: dict[int, RecordingBoard]
    applier: LimitApplier
    scheduler: SmartChargingScheduler
    billing: Billing
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def offered(self, connector: int) -> float | None:
        offers = self.boards[connector].offers
        return offers[-1][1] if offers else None


@asynccontextmanager
async def rig(path: Path, *, clock: Callable[[], datetime] = utcnow, limits: ProfileLimits | None = None,
              run: bool = True) -> AsyncIterator[Rig]:
    db = Database(path)
    boards = {cid: RecordingBoard(f"board{cid}") for cid in (1, 2)}
    connectors = {cid: ConnectorController(ConnectorHardware(cid, board, None, 32.0, 3),  # type: ignore[arg-type]
                                           SessionConfig(max_current_amps=32.0), db) for cid, board in boards.items()}
    applier = LimitApplier(connectors)
    setup = ChargerSetup({cid: ConnectorSetup(32.0, 3) for cid in connectors})
    scheduler = SmartChargingScheduler(ChargingProfileStore(db), applier, setup,
                                       running_transactions(connectors, Ledger(db)), limits=limits, clock=clock)
    billing = Billing(db)
    for ctrl in connectors.values():
        ctrl.observers += [billing, applier, scheduler]
    r = Rig(db, connectors, boards, applier, scheduler, billing)
    if run:
        r.tasks = [asyncio.create_task(applier.run()), asyncio.create_task(scheduler.run())]
    try:
        yield r
    finally:
        for task in r.tasks:
            task.cancel()
        await asyncio.gather(*r.tasks, return_exceptions=True)
        for ctrl in connectors.values():
            await ctrl.close()
        db.close()


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Until ``check()``, at most ``timeout_s`` (the worker's effects land on other tasks: polled)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():  # noqa: ASYNC110 (polls state other tasks change)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


async def start_transaction(ctrl: ConnectorController) -> None:
    await ctrl.handle(PilotChanged(PilotState.B))
    await ctrl.handle(CardPresented(CARD))
    await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert ctrl.machine.transaction is not None


def amps_profile(pid: int, purpose: ProfilePurpose, periods: list[tuple[int, float]], *, stack: int = 0,
                 start: datetime | None = None, kind: ProfileKind = ProfileKind.ABSOLUTE,
                 transaction_id: str | None = None, unit: RateUnit = RateUnit.AMPERES) -> ChargingProfile:
    return ChargingProfile(pid, stack, purpose, kind, ChargingSchedule(
        unit, tuple(SchedulePeriod(s, a) for s, a in periods), start=start), transaction_id=transaction_id)


def next_whole_second(after: datetime) -> datetime:
    return after.replace(microsecond=0) + timedelta(seconds=1)


# --- the pilot follows a schedule -------------------------------------------------------------------------------

async def test_the_offer_follows_a_schedule_within_a_second_of_each_boundary_and_pauses_below_6_a(
        tmp_path: Path) -> None:
    async with rig(tmp_path / "agent.db") as r:
        await start_transaction(r.connectors[1])
        await until(lambda: r.offered(1) == 32.0, 5, "the rating offered before any profile")
        t0 = next_whole_second(utcnow() + timedelta(seconds=0.5))
        steps = [(0, 10.0), (1, 16.0), (2, 5.0), (3, 8.0)]  # 5 A is below the 6 A minimum: pause, then resume
        result = r.scheduler.install(0, amps_profile(1, P.TX_DEFAULT, steps, start=t0))
        assert result.accepted, result.reason
        await until(lambda: r.offered(1) == 8.0, 10, "the last period's offer")
        expected = [amps if amps >= 6 else 0.0 for _, amps in steps]
        offers = [(when, amps) for when, amps in r.boards[1].offers if when >= t0 - timedelta(seconds=1)]
        for when, amps in offers:  # never early: each offer is the step in force, or the one before it (a lag)
            k = max(i for i, (offset, _) in enumerate(steps) if t0 + timedelta(seconds=offset) <= when) \
                if when >= t0 else -1
            allowed = {expected[k], 32.0 if k == 0 else expected[k - 1]} if k >= 0 else {32.0}
            assert amps in allowed, (when, amps, k)
        for k, (offset, _) in enumerate(steps):  # at most a second late
            boundary = t0 + timedelta(seconds=offset)
            told = next(when for when, amps in offers if amps == expected[k] and when >= boundary)
            assert told - boundary <= timedelta(seconds=1), (k, boundary, told)
        paused = [(when, s) for when, s in r.billing.statuses if when >= t0 + timedelta(seconds=2)]
        assert paused[0][1] is ConnectorStatus.SUSPENDED_EVSE  # the offer withdrawn, the transaction kept
        assert paused[-1][1] is not ConnectorStatus.SUSPENDED_EVSE and r.connectors[1].machine.transaction is not None
        # connector 2 has no EV: nothing offered there, but its limit is the same profile's
        assert r.applier.limits.sources(2) == {"ocpp": 8.0}


async def test_a_new_tx_default_reaches_a_running_transaction_and_a_tx_profile_wins_until_its_end(
        tmp_path: Path) -> None:
    """Errata 3.8: a new TxDefaultProfile applies to running transactions without a TxProfile (OCTT TC_082). A
    TxProfile for the transaction beats it (TC_057), and ends with the transaction."""
    async with rig(tmp_path / "agent.db") as r:
        await start_transaction(r.connectors[1])
        ctrl = r.connectors[1]
        assert ctrl.machine.transaction is not None
        r.billing.ledger.set_transaction_id(1, ctrl.machine.transaction.local_id, "4102")  # the CSMS's answer
        assert r.scheduler.install(0, amps_profile(1, P.TX_DEFAULT, [(0, 12.0)], stack=3)).accepted
        await until(lambda: r.offered(1) == 12.0, 5, "the TxDefaultProfile's 12 A on the running transaction")
        wrong = r.scheduler.install(1, amps_profile(2, P.TX, [(0, 20.0)], transaction_id="999"))
        assert not wrong.accepted and "4102" in wrong.reason
        assert r.scheduler.install(1, amps_profile(2, P.TX, [(0, 20.0)], transaction_id="4102")).accepted
        await until(lambda: r.offered(1) == 20.0, 5, "the TxProfile's 20 A, above the default's stack level")
        await ctrl.handle(RemoteStopRequested())
        assert ctrl.machine.transaction is None
        assert [p.profile.id for p in r.scheduler.installed] == [1]  # the TxProfile ended with its transaction
        assert [p.profile_id for p in ChargingProfileStore(r.db).load()] == [1]
        await until(lambda: r.applier.limits.sources(1) == {"ocpp": 12.0}, 5, "the default again")


async def test_a_remote_starts_tx_profile_goes_with_the_transaction_it_starts(tmp_path: Path) -> None:
    """OCTT TC_059 / TC_060: RemoteStartTransaction with a TxProfile (another purpose is refused)."""
    async with rig(tmp_path / "agent.db") as r:
        ctrl = r.connectors[1]
        refused = r.scheduler.attach_to_next_transaction(1, amps_profile(5, P.TX_DEFAULT, [(0, 10.0)]))
        assert refused == "a RemoteStartTransaction's chargingProfile must be a TxProfile"
        assert r.scheduler.attach_to_next_transaction(1, amps_profile(5, P.TX, [(0, 10.0), (3600, 16.0)],
                                                                      kind=ProfileKind.RELATIVE)) is None
        await ctrl.handle(PilotChanged(PilotState.B))
        await ctrl.handle(RemoteStartRequested(IdToken("REMOTE1", IdTokenType.CENTRAL)))
        tx = ctrl.machine.transaction
        assert tx is not None and tx.remote_start
        [installed] = r.scheduler.installed
        assert (installed.profile.id, installed.connector, installed.transaction) == (5, 1, tx.local_id)
        await until(lambda: r.offered(1) == 10.0, 5, "the remote start's profile applied")
        composite = r.scheduler.composite(1, 7200, RateUnit.AMPERES, start=tx.started_at)
        assert [(p.start, p.limit) for p in composite.periods] == [(0, 10.0), (3600, 16.0)]
        # a later local start on connector 2 takes nothing with it
        r.scheduler.attach_to_next_transaction(2, amps_profile(6, P.TX, [(0, 6.0)]))
        await start_transaction(r.connectors[2])
        assert [p.profile.id for p in r.scheduler.installed] == [5]


async def test_a_remote_starts_profile_waits_on_disk_for_its_transaction(tmp_path: Path) -> None:
    """A restart between the RemoteStartTransaction and the transaction's start loses neither."""
    path = tmp_path / "agent.db"
    async with rig(path, run=False) as first:
        assert first.scheduler.attach_to_next_transaction(2, amps_profile(8, P.TX, [(0, 7.0)])) is None
        assert first.scheduler.attach_to_next_transaction(1, amps_profile(9, P.TX, [(0, 9.0)])) is None
        first.scheduler.cancel_pending(2)  # that remote start was refused
        first.db.conn.execute("INSERT INTO settings VALUES ('smart_charging.pending.3', '{}')")  # damaged, removed
        async with rig(path) as second:
            store = ChargingProfileStore(second.db)
            assert list(store.load_pending()) == [1]
            ctrl = second.connectors[1]
            await ctrl.handle(PilotChanged(PilotState.B))
            await ctrl.handle(RemoteStartRequested(IdToken("REMOTE1", IdTokenType.CENTRAL)))
            assert [p.profile.id for p in second.scheduler.installed] == [9]
            assert store.load_pending() == {} and [p.profile_id for p in store.load()] == [9]
            await until(lambda: second.offered(1) == 9.0, 5, "the remote start's profile after the restart")


# --- on disk --------------------------------------------------------------------------------------------------

async def test_profiles_survive_a_restart_and_a_replaced_one_never_comes_back(tmp_path: Path) -> None:
    """libocpp #1051. The second run reads what the first committed; the first is never closed (a power cut)."""
    path = tmp_path / "agent.db"
    async with rig(path, run=False) as first:
        s = first.scheduler
        assert s.install(0, amps_profile(1, P.CHARGER_MAX, [(0, 40.0)])).accepted
        assert s.install(0, amps_profile(2, P.TX_DEFAULT, [(0, 16.0)], stack=1)).accepted
        assert s.install(1, amps_profile(3, P.TX_DEFAULT, [(0, 10.0)], stack=1)).accepted
        replacing = s.install(0, amps_profile(4, P.TX_DEFAULT, [(0, 8.0)], stack=1))  # same stack, purpose, connector
        assert [p.profile.id for p in replacing.removed] == [2]
        assert s.install(2, amps_profile(3, P.TX_DEFAULT, [(0, 6.0)], stack=2)).accepted  # same id, elsewhere
        before = s.installed
        async with rig(path) as second:
            assert sorted(second.scheduler.installed, key=lambda p: p.profile.id) == sorted(
                before, key=lambda p: p.profile.id)
            assert sorted(p.profile.id for p in second.scheduler.installed) == [1, 3, 4]
            await until(lambda: second.applier.limits.sources(2) == {"ocpp": 6.0}, 5, "connector 2's own default")
            assert second.applier.limits.sources(1) == {"ocpp": 8.0}
            assert second.applier.limits.sources(None) == {"ocpp": 40.0}


async def test_a_tx_profile_stays_with_its_transaction_across_a_power_cut(tmp_path: Path) -> None:
    """After the restart the restored transaction still has its profile; its end (PowerLoss) takes it away."""
    path = tmp_path / "agent.db"
    async with rig(path, run=False) as first:
        await start_transaction(first.connectors[1])
        assert first.scheduler.install(1, amps_profile(7, P.TX, [(0, 14.0)])).accepted
        assert first.scheduler.install(0, amps_profile(8, P.TX_DEFAULT, [(0, 9.0)])).accepted
        async with rig(path) as second:
            assert second.connectors[1].restored and second.connectors[1].machine.transaction is not None
            await until(lambda: second.applier.limits.sources(1) == {"ocpp": 14.0}, 5, "the TxProfile after restart")
            await second.connectors[1].start()  # PowerRestored: the transaction ends with PowerLoss
            assert second.connectors[1].machine.transaction is None
            assert [p.profile.id for p in second.scheduler.installed] == [8]
            await until(lambda: second.applier.limits.sources(1) == {"ocpp": 9.0}, 5, "the default after its end")


async def test_an_unreadable_stored_profile_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    async with rig(path, run=False) as first:
        assert first.scheduler.install(0, amps_profile(1, P.TX_DEFAULT, [(0, 16.0)])).accepted
        first.db.conn.execute("INSERT INTO charging_profiles VALUES (2, 0, NULL, 'not json')")
        first.db.conn.execute("INSERT INTO charging_profiles VALUES (3, 9, NULL, ?)",
                              ('{"id": 3}',))  # unreadable and on a connector that is not there
        async with rig(path, run=False) as second:
            assert [p.profile.id for p in second.scheduler.installed] == [1]
            assert [p.profile_id for p in ChargingProfileStore(second.db).load()] == [1]


# --- the clock is injected --------------------------------------------------------------------------------------

async def test_with_an_injected_clock_the_limits_follow_that_clock(tmp_path: Path) -> None:
    now = [datetime(2030, 1, 1, 12, 0, tzinfo=UTC)]
    async with rig(tmp_path / "agent.db", clock=lambda: now[0]) as r:
        s = r.scheduler
        start = now[0] + timedelta(minutes=5)
        assert s.install(0, amps_profile(1, P.CHARGER_MAX, [(0, 20.0), (600, 0.0)], start=start)).accepted
        await until(lambda: s.applied is not None and s.applied.next_change == start, 5, "the start announced")
        assert r.applier.limits.sources(None) == {}
        now[0] = start + timedelta(seconds=1)
        s.changed()
        await until(lambda: r.applier.limits.sources(None) == {"ocpp": 20.0}, 5, "the charger maximum")
        assert s.applied is not None and s.applied.next_change == start + timedelta(seconds=600)
        now[0] = start + timedelta(seconds=600)
        s.changed()
        await until(lambda: r.applier.limits.sources(None) == {"ocpp": 0.0}, 5, "0 A is a limit")
        assert s.applied is not None and s.applied.next_change is None
        composite = s.composite(0, 60, RateUnit.WATTS)
        assert [(p.start, p.limit) for p in composite.periods] == [(0, 0.0)]
        assert s.clear(profile_id=99) == ()
        assert [p.profile.id for p in s.clear()] == [1]
        await until(lambda: r.applier.limits.sources(None) == {}, 5, "cleared")
        assert ChargingProfileStore(r.db).load() == []


async def test_the_listener_hears_each_change_with_its_next_change(tmp_path: Path) -> None:
    heard: list[tuple[float | None, datetime | None]] = []
    async with rig(tmp_path / "agent.db") as r:
        r.scheduler.listeners.append(lambda limits: heard.append((limits.connectors[1], limits.next_change)))
        await until(lambda: r.scheduler.applied is not None, 5, "the first evaluation")
        t0 = next_whole_second(utcnow()) + timedelta(seconds=1)
        r.scheduler.install(1, amps_profile(1, P.TX_DEFAULT, [(0, 10.0), (1, 11.0)], start=t0))
        await until(lambda: heard and heard[-1][0] == 11.0, 10, "both periods")
        assert (None, t0) in heard and (10.0, t0 + timedelta(seconds=1)) in heard and heard[-1] == (11.0, None)
        assert not any(math.isnan(a) for a, _ in heard if a is not None)
