"""The composite schedule and the limits now (firmware/charger/smart_charging/composite.py).

The property tests check it against a reference written here, independently and plainly: every installed profile
evaluated second by second (is it valid, where does its run start, is the run over, which period), the winner
picked per purpose by hand, converted with the formulas of docs/smart-charging.md — for random stacks of every
purpose, kind and unit on chargers of one to three connectors of one or three phases, at random voltages. The
examples after them pin the failures other stacks had (libocpp #609, #1169, #1062/#1112, #426/#839; open-ocpp #7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.charger.smart_charging import (
    ChargerSetup,
    ChargingProfile,
    ChargingSchedule,
    CompositeSchedule,
    ConnectorSetup,
    InstalledProfile,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    RunningTransaction,
    SchedulePeriod,
    composite_schedule,
    install,
    limits_at,
)

P = ProfilePurpose
A, W = RateUnit.AMPERES, RateUnit.WATTS
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY, WEEK = 86_400, 7 * 86_400


def at(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def sec(when: datetime) -> int:
    return int((when - EPOCH).total_seconds() // 1)


# --- the reference: one profile at one second -------------------------------------------------------------------

Said = tuple[float, RateUnit, int]  # limit, unit, phases


def ref_profile(p: ChargingProfile, t: int, tx_start: int | None, window_start: int) -> Said | None:
    """What ``p`` says at second ``t`` (None: nothing: not valid, not started, or over)."""
    if p.valid_from is not None and t < sec(p.valid_from):
        return None
    if p.valid_to is not None and t >= sec(p.valid_to):
        return None
    s = p.schedule
    length = s.duration
    if p.kind is ProfileKind.RELATIVE:
        origin = tx_start if tx_start is not None else window_start
    elif p.kind is ProfileKind.ABSOLUTE:
        assert s.start is not None
        origin = sec(s.start)
    else:
        assert s.start is not None and p.recurrency is not None
        every = DAY if p.recurrency is Recurrency.DAILY else WEEK
        origin = sec(s.start)
        while origin > t:  # the latest restart at or before t, stepping a recurrence at a time
            origin -= every
        while origin + every <= t:
            origin += every
        length = every if length is None else min(length, every)
    offset = t - origin
    if offset < 0 or (length is not None and offset >= length):
        return None
    current = None
    for q in s.periods:
        if q.start <= offset:
            current = q
    assert current is not None
    return current.limit, s.unit, 3 if current.number_phases is None else current.number_phases


@dataclass
class Case:
    setup: ChargerSetup
    installed: tuple[InstalledProfile, ...]
    running: dict[int, RunningTransaction]
    start: int
    duration: int


def winner(case: Case, candidates: list[InstalledProfile], t: int, window_start: int, connector: int) -> Said | None:
    """The highest stack level that says something at ``t``; on a tie, the connector's own over connector 0's."""
    best: tuple[int, int, Said] | None = None
    tx = case.running.get(connector)
    tx_start = None if tx is None else sec(tx.started_at)
    for ip in candidates:
        said = ref_profile(ip.profile, t, tx_start if ip.profile.purpose is not P.CHARGER_MAX else None, window_start)
        if said is None:
            continue
        rank = (ip.profile.stack_level, 1 if ip.connector == connector else 0)
        if best is None or rank > best[:2]:
            best = (*rank, said)
    return None if best is None else best[2]


def ref_own(case: Case, connector: int, t: int, window_start: int) -> Said | None:
    tx = case.running.get(connector)
    txs = [ip for ip in case.installed if ip.profile.purpose is P.TX and ip.connector == connector
           and tx is not None and ip.transaction == tx.local_id]
    said = winner(case, txs, t, window_start, connector)
    if said is not None:
        return said
    defaults = [ip for ip in case.installed if ip.profile.purpose is P.TX_DEFAULT and ip.connector in (0, connector)]
    return winner(case, defaults, t, window_start, connector)


def ref_charger_max(case: Case, t: int) -> Said | None:
    return winner(case, [ip for ip in case.installed if ip.profile.purpose is P.CHARGER_MAX], t, t, 0)


def amps_of(said: Said, phases: int, volts: float) -> float:
    limit, unit, _ = said
    return limit if unit is A else limit / (phases * volts)


def ref_composite(case: Case, connector: int, unit: RateUnit, t: int) -> tuple[float, int]:
    """(limit in ``unit``, phases in use) at ``t`` for a composite schedule starting at ``case.start``."""
    volts = case.setup.nominal_voltage
    cp = ref_charger_max(case, t)
    if connector:
        spec = case.setup.connectors[connector]
        own = ref_own(case, connector, t, case.start)
        phases = spec.phases if own is None else min(spec.phases, own[2])
        amps = spec.rating_amps
        if own is not None:
            amps = min(amps, amps_of(own, phases, volts))
        if cp is not None:
            amps = min(amps, amps_of(cp, phases, volts))
        return (amps if unit is A else amps * phases * volts), phases
    total_a = total_w = 0.0
    most = 0
    for cid, spec in case.setup.connectors.items():
        own = ref_own(case, cid, t, case.start)
        phases = spec.phases if own is None else min(spec.phases, own[2])
        amps = spec.rating_amps if own is None else min(spec.rating_amps, amps_of(own, phases, volts))
        total_a += amps
        total_w += amps * phases * volts
        most = max(most, phases)
    total = total_a if unit is A else total_w
    if cp is not None:
        cp_phases = min(max(c.phases for c in case.setup.connectors.values()), cp[2])
        cp_amps = amps_of(cp, cp_phases, volts)
        total = min(total, cp_amps if unit is A else cp_amps * cp_phases * volts)
    return total, most


def ref_now(case: Case, t: int) -> tuple[dict[int, float | None], float | None]:
    """What the agent applies at ``t``: each connector's own limit, the charger maximum, in A."""
    volts = case.setup.nominal_voltage
    own: dict[int, float | None] = {}
    for cid, spec in case.setup.connectors.items():
        said = ref_own(case, cid, t, t)
        own[cid] = None if said is None else amps_of(said, min(spec.phases, said[2]), volts)
    cp = ref_charger_max(case, t)
    charger_phases = max(c.phases for c in case.setup.connectors.values())
    return own, None if cp is None else amps_of(cp, min(charger_phases, cp[2]), volts)


def close(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


# --- random stacks --------------------------------------------------------------------------------------------

A_LIMITS = [0.0, 5.5, 6.0, 10.0, 16.0, 32.0, 63.0]
W_LIMITS = [0.0, 1380.0, 4140.0, 7360.0, 11040.0, 22000.0, 43000.0]


@st.composite
def profiles(draw: st.DrawFn, window: int, connectors: list[int], pid: int) -> tuple[int, ChargingProfile]:
    purpose = draw(st.sampled_from(list(P)))
    kinds = [ProfileKind.ABSOLUTE, ProfileKind.RECURRING] + ([ProfileKind.RELATIVE] if purpose is not P.CHARGER_MAX
                                                             else [])
    kind = draw(st.sampled_from(kinds))
    unit = draw(st.sampled_from([A, W]))
    count = draw(st.integers(1, 5))
    # round numbers often, so that boundaries of different profiles coincide
    gaps = draw(st.lists(st.one_of(st.sampled_from([60, 120, 300]), st.integers(1, 400)), min_size=count - 1,
                         max_size=count - 1))
    starts = [0]
    for g in gaps:
        starts.append(starts[-1] + g)
    periods = tuple(SchedulePeriod(s, draw(st.sampled_from(A_LIMITS if unit is A else W_LIMITS)),
                                   draw(st.sampled_from([None, 1, 2, 3]))) for s in starts)
    duration = draw(st.one_of(st.none(), st.integers(0, 1500)))
    recurrency = None
    start: datetime | None = None
    if kind is ProfileKind.ABSOLUTE:
        start = at(window + draw(st.one_of(st.sampled_from([-600, -300, 0, 300]), st.integers(-2000, 1000))))
    elif kind is ProfileKind.RECURRING:
        recurrency = draw(st.sampled_from(list(Recurrency)))
        every = DAY if recurrency is Recurrency.DAILY else WEEK
        # near a restart of the window (before or after it), a few recurrences away from the anchor
        start = at(window + draw(st.integers(-3, 2)) * every + draw(st.one_of(st.sampled_from([-600, -300, 0, 300]),
                                                                              st.integers(-1500, 1000))))
    valid_from = draw(st.one_of(st.none(), st.integers(-500, 800).map(lambda o: at(window + o))))
    valid_to = draw(st.one_of(st.none(), st.integers(1, 1500).map(
        lambda o: at((window if valid_from is None else sec(valid_from)) + o))))
    connector = 0 if purpose is P.CHARGER_MAX else draw(
        st.sampled_from(connectors if purpose is P.TX else [0, *connectors]))
    profile = ChargingProfile(pid, draw(st.integers(0, 3)), purpose, kind,
                              ChargingSchedule(unit, periods, duration, start), recurrency, valid_from, valid_to)
    return connector, profile


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 3))
    connectors = list(range(1, n + 1))
    setup = ChargerSetup({c: ConnectorSetup(draw(st.sampled_from([16.0, 32.0, 80.0])), draw(st.sampled_from([1, 3])))
                          for c in connectors}, draw(st.sampled_from([110.0, 120.0, 230.0, 240.0, 277.0])))
    window = sec(BASE) + draw(st.integers(0, WEEK))
    running = {c: RunningTransaction(draw(st.integers(1, 3)), at(window - draw(st.integers(0, 2500))), str(c))
               for c in connectors if draw(st.booleans())}
    installed: tuple[InstalledProfile, ...] = ()
    for pid in range(draw(st.integers(0, 8))):
        connector, profile = draw(profiles(window, connectors, pid))
        result = install(installed, connector, profile, connectors=connectors, running=running,
                         limits=ProfileLimits(max_stack_level=3), now=at(window))
        installed = result.installed
    if draw(st.booleans()):  # a TxProfile of a transaction that has ended: must change nothing
        connector, stale = draw(profiles(window, connectors, 100))
        if stale.purpose is P.TX:
            installed += (InstalledProfile(connector, stale, 99),)
    return Case(setup, installed, running, window, draw(st.integers(0, 900)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), unit=st.sampled_from([A, W]), connector_choice=st.integers(0, 3), fraction=st.floats(0, 0.999))
def test_the_composite_schedule_agrees_with_a_second_by_second_evaluation(case: Case, unit: RateUnit,
                                                                          connector_choice: int,
                                                                          fraction: float) -> None:
    connector = min(connector_choice, len(case.setup.connectors))
    schedule = composite_schedule(case.installed, connector, at(case.start) + timedelta(seconds=fraction),
                                  case.duration, unit, case.setup, case.running)
    assert schedule.start == at(case.start) and schedule.duration == case.duration and schedule.unit is unit
    starts = [p.start for p in schedule.periods]
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < max(case.duration, 1)
    for before, after in zip(schedule.periods, schedule.periods[1:], strict=False):
        assert (before.limit, before.number_phases) != (after.limit, after.number_phases)  # merged when equal
    for offset in range(max(case.duration, 1)):
        expected, phases = ref_composite(case, connector, unit, case.start + offset)
        got = schedule.limit_at(offset)
        assert close(got.limit, expected) and got.number_phases == phases, (offset, got, expected, phases)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), fraction=st.floats(0, 0.999))
def test_the_limits_now_and_their_next_change_agree_with_the_reference(case: Case, fraction: float) -> None:
    """From the window's start, every change within 20 minutes: at each, the limits are the reference's and the
    next change announced is the reference's next change (a boundary that changes nothing is not a change)."""
    horizon = 1200
    reference = [ref_now(case, case.start + s) for s in range(horizon + 1)]
    t = 0
    while True:
        got = limits_at(case.installed, at(case.start + t) + timedelta(seconds=fraction), case.setup, case.running)
        own, charger = reference[t]
        assert set(got.connectors) == set(own)
        assert _same((dict(got.connectors), got.charger), (own, charger)), (t, got, own, charger)
        following = next((u for u in range(t + 1, horizon + 1) if not _same(reference[u], reference[t])), None)
        if following is None:
            assert got.next_change is None or got.next_change > at(case.start + horizon), (t, got)
            return
        assert got.next_change == at(case.start + following), (t, got, following)
        t = following


def _same(x: tuple[dict[int, float | None], float | None], y: tuple[dict[int, float | None], float | None]) -> bool:
    return all(close(x[0][c], y[0][c]) for c in x[0]) and close(x[1], y[1])


# --- examples: the rules, and the failures of other stacks -----------------------------------------------------

ONE = ChargerSetup({1: ConnectorSetup(32.0, 3)})
TWO = ChargerSetup({1: ConnectorSetup(32.0, 3), 2: ConnectorSetup(32.0, 3)})


def prof(pid: int, purpose: ProfilePurpose, periods: list[tuple[int, float]], *, stack: int = 0, unit: RateUnit = A,
         kind: ProfileKind = ProfileKind.ABSOLUTE, start: datetime | None = BASE, duration: int | None = None,
         phases: int | None = None, recurrency: Recurrency | None = None, valid_from: datetime | None = None,
         valid_to: datetime | None = None) -> ChargingProfile:
    return ChargingProfile(pid, stack, purpose, kind, ChargingSchedule(
        unit, tuple(SchedulePeriod(s, lim, phases) for s, lim in periods), duration, start), recurrency, valid_from,
        valid_to)


def held(setup: ChargerSetup, *placed: tuple[int, ChargingProfile],
         running: dict[int, RunningTransaction] | None = None) -> tuple[InstalledProfile, ...]:
    out: tuple[InstalledProfile, ...] = ()
    for connector, p in placed:
        result = install(out, connector, p, connectors=setup.connectors, running=running or {},
                         limits=ProfileLimits(), now=BASE)
        assert result.accepted, result.reason
        out = result.installed
    return out


def limits(schedule: CompositeSchedule) -> list[tuple[int, float]]:
    return [(p.start, p.limit) for p in schedule.periods]


def test_periods_that_start_after_the_requested_start_are_applied() -> None:
    """libocpp #609: a profile that began before the request, and one that begins inside it, both count."""
    installed = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 10.0), (900, 16.0)], start=BASE - timedelta(minutes=10))),
                     (1, prof(2, P.TX_DEFAULT, [(0, 6.0)], stack=1, start=BASE + timedelta(minutes=20),
                              duration=600)))
    schedule = composite_schedule(installed, 1, BASE, 3600, A, ONE, {})
    assert limits(schedule) == [(0, 10.0), (300, 16.0), (1200, 6.0), (1800, 16.0)]


def test_a_zero_duration_gives_the_limit_in_force_not_the_default() -> None:
    """libocpp #1169."""
    installed = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 8.0)])))
    schedule = composite_schedule(installed, 1, BASE + timedelta(seconds=5), 0, A, ONE, {})
    assert limits(schedule) == [(0, 8.0)] and schedule.duration == 0


def test_connector_0_adds_up_the_connectors_and_a_zero_limit_counts() -> None:
    """libocpp #1062/#1112: a charger maximum of 32 A and a default of 10 A for every connector: 20 A in all. A 0 A
    limit is a limit (charging paused), not "no limit"."""
    installed = held(TWO, (0, prof(1, P.CHARGER_MAX, [(0, 32.0)])), (0, prof(2, P.TX_DEFAULT, [(0, 10.0), (60, 20.0)])))
    assert limits(composite_schedule(installed, 0, BASE, 120, A, TWO, {})) == [(0, 20.0), (60, 32.0)]
    assert limits(composite_schedule(installed, 0, BASE, 120, W, TWO, {})) == [(0, 20 * 3 * 230.0),
                                                                                (60, 32 * 3 * 230.0)]
    assert limits(composite_schedule(held(TWO), 0, BASE, 60, A, TWO, {})) == [(0, 64.0)]  # no profile: the ratings
    zero = held(TWO, (0, prof(1, P.TX_DEFAULT, [(0, 0.0)])))
    assert limits(composite_schedule(zero, 0, BASE, 60, A, TWO, {})) == [(0, 0.0)]
    assert limits(composite_schedule(zero, 1, BASE, 60, A, TWO, {})) == [(0, 0.0)]
    now = limits_at(zero, BASE, TWO, {})
    assert now.connectors == {1: 0.0, 2: 0.0} and now.charger is None and now.next_change is None
    cp_zero = held(TWO, (0, prof(1, P.CHARGER_MAX, [(0, 0.0)])))
    assert limits(composite_schedule(cp_zero, 0, BASE, 60, A, TWO, {})) == [(0, 0.0)]
    assert limits_at(cp_zero, BASE, TWO, {}).charger == 0.0


def test_the_voltage_is_a_parameter() -> None:
    """libocpp #426/#839 hard-coded 230 V."""
    us = ChargerSetup({1: ConnectorSetup(48.0, 1)}, nominal_voltage=240.0)
    installed = held(us, (1, prof(1, P.TX_DEFAULT, [(0, 7200.0)], unit=W)))
    assert limits(composite_schedule(installed, 1, BASE, 60, A, us, {})) == [(0, 30.0)]  # 7200 W / 240 V, one phase
    assert limits_at(installed, BASE, us, {}).connectors == {1: 30.0}
    low = ChargerSetup({1: ConnectorSetup(48.0, 1)}, nominal_voltage=120.0)
    assert limits(composite_schedule(installed, 1, BASE, 60, A, low, {})) == [(0, 48.0)]  # 60 A: the rating caps
    assert limits(composite_schedule(held(low), 1, BASE, 60, W, low, {})) == [(0, 48 * 120.0)]


def test_watts_to_amperes_counts_the_phases_in_use() -> None:
    """open-ocpp #7: A = W / (phases x V), with the phases the period allows and the connector has."""
    three = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 11040.0)], unit=W)))
    assert limits_at(three, BASE, ONE, {}).connectors == {1: 16.0}
    one_phase = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 3680.0)], unit=W, phases=1)))
    assert limits_at(one_phase, BASE, ONE, {}).connectors == {1: 16.0}
    schedule = composite_schedule(one_phase, 1, BASE, 60, W, ONE, {})
    assert [(p.limit, p.number_phases) for p in schedule.periods] == [(3680.0, 1)]
    single = ChargerSetup({1: ConnectorSetup(32.0, 1)})  # a single-phase connector under a 3-phase profile
    assert limits_at(three, BASE, single, {}).connectors == {1: 48.0}  # ChargingLimits caps it at the rating
    assert limits(composite_schedule(three, 1, BASE, 60, A, single, {})) == [(0, 32.0)]


def test_a_tx_profile_beats_any_tx_default_and_the_connector_beats_connector_0() -> None:
    tx = {1: RunningTransaction(1, BASE - timedelta(minutes=5), "7")}
    installed = held(TWO, (0, prof(1, P.TX_DEFAULT, [(0, 10.0)], stack=5)),
                     (1, prof(2, P.TX_DEFAULT, [(0, 12.0)], stack=5)),
                     (1, prof(3, P.TX, [(0, 20.0)], stack=0, duration=300)), running=tx)
    assert limits(composite_schedule(installed, 1, BASE, 600, A, TWO, tx)) == [(0, 20.0), (300, 12.0)]
    assert limits(composite_schedule(installed, 2, BASE, 600, A, TWO, tx)) == [(0, 10.0)]
    # the transaction ended: its profile no longer counts, even before it is dropped
    assert limits(composite_schedule(installed, 1, BASE, 600, A, TWO, {})) == [(0, 12.0)]


def test_without_a_duration_a_profile_never_falls_back_with_one_it_does() -> None:
    base = (1, prof(1, P.TX_DEFAULT, [(0, 16.0)], stack=0))
    forever = held(ONE, base, (1, prof(2, P.TX_DEFAULT, [(0, 6.0), (60, 8.0)], stack=1)))
    assert limits(composite_schedule(forever, 1, BASE, 3600, A, ONE, {})) == [(0, 6.0), (60, 8.0)]
    ends = held(ONE, base, (1, prof(2, P.TX_DEFAULT, [(0, 6.0), (60, 8.0), (200, 0.0)], stack=1, duration=120)))
    assert limits(composite_schedule(ends, 1, BASE, 3600, A, ONE, {})) == [(0, 6.0), (60, 8.0), (120, 16.0)]


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    installed = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 16.0)])),
                     (1, prof(2, P.TX_DEFAULT, [(0, 6.0)], stack=1, valid_from=BASE + timedelta(seconds=100),
                              valid_to=BASE + timedelta(seconds=250))))
    assert limits(composite_schedule(installed, 1, BASE, 600, A, ONE, {})) == [(0, 16.0), (100, 6.0), (250, 16.0)]
    now = limits_at(installed, BASE + timedelta(seconds=120), ONE, {})
    assert now.connectors == {1: 6.0} and now.next_change == BASE + timedelta(seconds=250)


def test_a_daily_profile_restarts_at_its_time_and_a_weekly_one_on_its_weekday() -> None:
    night = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)  # a Monday, 22:00, weeks before BASE
    daily = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 6.0), (3600, 32.0)], kind=ProfileKind.RECURRING, start=night,
                                recurrency=Recurrency.DAILY, duration=8 * 3600)))
    evening = datetime(2026, 3, 4, 21, 0, tzinfo=UTC)  # a Wednesday, 21:00
    schedule = composite_schedule(daily, 1, evening, 12 * 3600, A, ONE, {})
    assert limits(schedule) == [(0, 32.0), (3600, 6.0), (7200, 32.0)]  # 22:00 6 A, 23:00 32 A, ends 06:00: rating
    weekly = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 10.0)], kind=ProfileKind.RECURRING, start=night,
                                 recurrency=Recurrency.WEEKLY, duration=3600)))
    sunday = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert limits(composite_schedule(weekly, 1, sunday, 2 * DAY, A, ONE, {})) == [
        (0, 32.0), (34 * 3600, 10.0), (35 * 3600, 32.0)]  # Monday 22:00 to 23:00 only


def test_a_relative_profile_runs_from_the_transaction_start() -> None:
    started = BASE - timedelta(seconds=100)
    tx = {1: RunningTransaction(3, started, "9")}
    installed = held(TWO, (0, prof(1, P.TX_DEFAULT, [(0, 6.0), (300, 16.0)], kind=ProfileKind.RELATIVE, start=None)))
    assert limits(composite_schedule(installed, 1, BASE, 600, A, TWO, tx)) == [(0, 6.0), (200, 16.0)]
    # connector 2 has no transaction: what one starting now would get
    assert limits(composite_schedule(installed, 2, BASE, 600, A, TWO, tx)) == [(0, 6.0), (300, 16.0)]
    now = limits_at(installed, BASE, TWO, tx)
    assert now.connectors == {1: 6.0, 2: 6.0} and now.next_change == started + timedelta(seconds=300)


def test_no_profile_no_limit_and_no_wake() -> None:
    now = limits_at((), BASE, TWO, {})
    assert now.connectors == {1: None, 2: None} and now.charger is None and now.next_change is None
    assert limits(composite_schedule((), 1, BASE, 86_400, W, TWO, {})) == [(0, 32 * 3 * 230.0)]


def test_the_next_change_skips_boundaries_that_change_nothing() -> None:
    installed = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 10.0), (60, 10.0), (120, 12.0)])))
    assert limits_at(installed, BASE, ONE, {}).next_change == BASE + timedelta(seconds=120)
    hidden = held(ONE, (1, prof(1, P.TX_DEFAULT, [(0, 10.0)], stack=2)),
                  (1, prof(2, P.TX_DEFAULT, [(0, 6.0), (3600, 8.0)], kind=ProfileKind.RECURRING,
                           recurrency=Recurrency.DAILY)))
    # under a profile that never ends the daily one changes nothing: no change within the horizon (8 days), and the
    # scheduler is told to look again then
    wake = limits_at(hidden, BASE, ONE, {}).next_change
    assert wake is not None and BASE + timedelta(days=8) < wake <= BASE + timedelta(days=9)
    assert limits_at(hidden, wake, ONE, {}).connectors == {1: 10.0}


def test_an_unknown_connector_or_a_negative_duration_is_refused() -> None:
    with pytest.raises(KeyError):
        composite_schedule((), 3, BASE, 60, A, TWO, {})
    with pytest.raises(ValueError, match="duration"):
        composite_schedule((), 1, BASE, -1, A, TWO, {})


def test_boundaries_at_the_same_instant_make_one_period() -> None:
    installed = held(TWO, (0, prof(1, P.CHARGER_MAX, [(0, 32.0), (60, 12.0)])),
                     (1, prof(2, P.TX_DEFAULT, [(0, 16.0), (60, 8.0)])),
                     (2, prof(3, P.TX_DEFAULT, [(0, 4.0), (60, 5.0)])))
    assert limits(composite_schedule(installed, 1, BASE, 120, A, TWO, {})) == [(0, 16.0), (60, 8.0)]
    assert limits(composite_schedule(installed, 0, BASE, 120, A, TWO, {})) == [(0, 20.0), (60, 12.0)]
