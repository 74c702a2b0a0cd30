"""Power cuts at random moments of charging sessions: kill -9 the agent again and again, then check what the
CSMS got.

One station (two connectors, one reader) lives through a random script — EVs plugged and unplugged, cards
tapped to start and stop, EVs pausing, the CSMS going offline for a while — while the agent process is
killed with SIGKILL at random instants and started again at once (no clean shutdown, ever). Afterwards
the CSMS's transcript must show:

* every transaction started is stopped exactly once, and nothing is stopped that was not started;
* per transaction, meterStart <= every sampled energy register value <= meterStop, the values rising with
  their timestamps, the StopTransaction's transactionData too;
* no message lost: the agent's outbox is empty at the end and every transaction in its log has the
  CSMS's id and is stopped; no message duplicated — except the one unavoidable case of OCPP 1.6's
  at-least-once delivery: a message the CSMS received just before the connection died (the cut came
  between the CSMS's answer and the agent committing it) is sent again, as the very next queued message
  on the next connection. Such a resend is recognised exactly (identical payload, adjacent in the queue
  order, a disconnect in between). A resent StartTransaction is identical to the first copy (same
  connector, idTag, meterStart, timestamp), so the CSMS recognises it and answers with the id it gave
  the first time (sim/csms/logic.py, ``recognise_repeated_starts``): the CSMS holds no transaction the
  agent never learned, and every transaction it holds is stopped;
* a BootNotification only on the first connection after a (re)start of the agent, never on a reconnect.

``POWERCUT_CUTS`` sets the number of cuts (default 50, ~1.5 min; ``make soak`` runs 500) and
``POWERCUT_SEED`` the random script (printed, to replay a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from tests.station import CP_ID, Station

CUTS = int(os.environ.get("POWERCUT_CUTS", "50"))
SEED = int(os.environ.get("POWERCUT_SEED", str(random.SystemRandom().randrange(1 << 30))))
CARDS = ("04A1B2C3", "04D5E6F7")
OUTBOX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues")
ENERGY = "Energy.Active.Import.Register"
PRESETS = {"MeterValueSampleInterval": 1, "ClockAlignedDataInterval": 3, "AllowOfflineTxForUnknownId": "true",
           "StopTxnSampledData": ENERGY, "StopTxnAlignedData": ENERGY, "MeterValuesAlignedData": ENERGY,
           "MeterValuesSampledData": f"{ENERGY},Power.Active.Import", "ConnectionTimeOut": 10}


async def _life(s: Station, rng: random.Random) -> None:
    """What happens around the charger, whether or not the agent is running: people and EVs come and go."""
    while True:
        c = rng.choice((1, 2))
        ev = s.ev(c)
        roll = rng.random()
        if not ev.plugged and roll < 0.5:
            ev.plug()
        elif ev.plugged and roll < 0.15:
            ev.unplug()
        elif ev.plugged and roll < 0.25:
            ev.paused = not ev.paused
        elif roll < 0.8:
            await s.tap(CARDS[c - 1], hold_s=rng.uniform(0.2, 0.5), seen=False)  # the agent may be down
        await asyncio.sleep(rng.uniform(0.1, 0.8))


async def _weather(s: Station, rng: random.Random) -> None:
    """The CSMS goes away now and then (the link drops; queued messages wait)."""
    while True:
        await asyncio.sleep(rng.uniform(2.0, 8.0))
        await s.csms.set_online(False, abort=rng.random() < 0.5)
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        await s.csms.set_online(True)


async def _message_in_flight(s: Station, rng: random.Random) -> None:
    """Wait until the CSMS receives a queued message, then cut within a few milliseconds: the worst moment,
    when the agent waits for the answer or is about to commit it."""
    mark = s.mark()
    with contextlib.suppress(TimeoutError):
        await s.csms.transcript.wait_for(None, lambda e: e.action in OUTBOX_ACTIONS, cp_id=CP_ID,
                                         direction=Direction.FROM_CP, kind=EntryKind.CALL, timeout_s=3, since=mark)
    await asyncio.sleep(rng.uniform(0.0, 0.004))


async def cut_again_and_again(s: Station, rng: random.Random, cuts: int,
                              in_flight: Callable[[Station, random.Random], Awaitable[None]]) -> list[float]:
    """The loop (shared with the 2.0.1 one): life and weather around the charger while the agent is killed
    ``cuts`` times, at a random moment or right after a message in flight (``in_flight``); then the end of the
    day — CSMS back, every EV leaves, the queue drains, the agent stops cleanly. Returns when each agent process
    was started (transcript clock)."""
    starts = [time.time()]
    await s.start_agent()
    life = asyncio.create_task(_life(s, random.Random(rng.random())))
    weather = asyncio.create_task(_weather(s, random.Random(rng.random())))
    try:
        for _ in range(cuts):
            if rng.random() < 0.35:
                await in_flight(s, rng)
            else:
                await asyncio.sleep(rng.choice((rng.uniform(0.05, 0.6), rng.uniform(0.6, 2.5))))
            assert s.agent_running, f"the agent exited by itself (code {s.proc and s.proc.returncode})"
            await s.kill_agent()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            starts.append(time.time())
            await s.start_agent(wait_boot=False)
    finally:
        for task in (life, weather):
            task.cancel()
        await asyncio.gather(life, weather, return_exceptions=True)
    await s.csms.set_online(True)
    for c in (1, 2):
        s.ev(c).unplug()
    db = s.storage_dir / "agent.db"
    await s.wait_until(lambda: _db_counts(db)[:2] == (0, 0), 60, "the outbox drained, every transaction stopped")
    await s.quiet(0.5)
    assert await s.stop_agent() == 0
    assert all(code == -9 for code in s.exit_codes[:-1]), f"agent exits other than our kills: {s.exit_codes}"
    return starts


def _db_counts(path: Path) -> tuple[int, int, int]:
    """(queued messages, transactions not stopped, transactions without a CSMS id) in the agent's database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        queued = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        open_ = conn.execute("SELECT COUNT(*) FROM transactions WHERE stopped_at IS NULL").fetchone()[0]
        no_id = conn.execute("SELECT COUNT(*) FROM transactions WHERE transaction_id IS NULL").fetchone()[0]
        return int(queued), int(open_), int(no_id)
    finally:
        conn.close()


def _queued_rows(path: Path) -> set[tuple[str, int | None]]:
    """(action, local transaction id) of every message still in the agent's outbox."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return {(str(a), lid) for a, lid in conn.execute("SELECT action, local_id FROM outbox")}
    finally:
        conn.close()


def _key(e: TranscriptEntry) -> str:
    return f"{e.action}:{json.dumps(e.payload, sort_keys=True)}"


def _energy(meter_values: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(mv["timestamp"], float(sv["value"])) for mv in meter_values for sv in mv["sampledValue"]
            if sv.get("measurand", ENERGY) == ENERGY]


@pytest.mark.timeout(CUTS * 6 + 180)
async def test_power_cuts_at_random_moments_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    print(f"power-cut loop: {CUTS} cuts, POWERCUT_SEED={SEED}")
    rng = random.Random(SEED)
    async with Station(tmp_path, connectors=2, presets=PRESETS) as s:
        s.restart_delay_s = 0.0
        s.csms.behaviour.id_tags.accept(*CARDS)
        starts = await cut_again_and_again(s, rng, CUTS, _message_in_flight)
        db = tmp_path / "agent.db"
        _, still_open, without_id = _db_counts(db)
        assert still_open == 0
        # The outbox drained with the agent running (cut_again_and_again); until its clean stop a clock tick may
        # have queued the idle connectors' aligned values, which wait on disk for the next connection.
        assert _queued_rows(db) <= {("MeterValues", None)}, _queued_rows(db)

        _check_transcript(s, starts, without_id)
        problems = [r for r in s.log() if r.get("level") in ("ERROR", "CRITICAL")]
        assert not problems, f"errors in the agent's log: {problems[:5]}"


def _check_transcript(s: Station, starts: list[float], without_id: int) -> None:
    entries = [e for e in s.csms.transcript.entries if e.cp_id == CP_ID]
    calls = [e for e in entries if e.kind is EntryKind.CALL and e.direction is Direction.FROM_CP]
    outbox = [e for e in calls if e.action in OUTBOX_ACTIONS]
    assert outbox, "no transaction traffic at all"
    disconnect_at = [e.seq for e in entries if e.kind is EntryKind.DISCONNECT]

    # --- duplicates: only the immediate resend of the message in flight when the connection died ---------
    resent: set[int] = set()  # seqs of copies that a later identical copy replaced
    last_by_key: dict[str, TranscriptEntry] = {}
    for i, e in enumerate(outbox):
        earlier = last_by_key.get(_key(e))
        if earlier is not None:
            adjacent = i > 0 and outbox[i - 1] is earlier
            cut_between = any(earlier.seq < d < e.seq for d in disconnect_at)
            assert adjacent and cut_between, (
                f"duplicate {e.action} that is not a resend after a lost answer (seed {SEED}): {e.payload}")
            resent.add(earlier.seq)
        last_by_key[_key(e)] = e
    assert len(resent) <= len(disconnect_at)

    # --- transactions as the CSMS saw them -------------------------------------------------------------
    state = s.csms.state(CP_ID)
    orphans: set[int] = set()  # ids given to a StartTransaction whose answer the agent never got
    started: dict[int, TranscriptEntry] = {}
    for e in outbox:
        if e.action != "StartTransaction":
            continue
        response = s.csms.transcript.response_to(e)
        if response is None or response.kind is not EntryKind.CALLRESULT:
            assert response is None or e.seq in resent or response.kind is EntryKind.CALLERROR
            continue
        tx_id = int(response.payload["transactionId"])
        if e.seq in resent:
            orphans.add(tx_id)
        else:
            started[tx_id] = e
    by_tx: dict[int, list[TranscriptEntry]] = defaultdict(list)
    for e in outbox:
        if e.action != "StartTransaction" and "transactionId" in e.payload and e.seq not in resent:
            by_tx[int(e.payload["transactionId"])].append(e)
    assert orphans <= set(started), f"a resent StartTransaction got an id of its own: {orphans - set(started)}"
    still_open = [t.transaction_id for t in state.transactions.values() if t.is_open]
    assert not still_open, f"transactions open on the CSMS at the end (seed {SEED}): {still_open}"
    assert set(by_tx) <= set(started), f"messages for transactions never started: {set(by_tx) - set(started)}"
    assert without_id == 0, "a transaction in the agent's log never got the CSMS's id"

    for tx_id, start in started.items():
        messages = by_tx.get(tx_id, [])
        stops = [e for e in messages if e.action == "StopTransaction"]
        assert len(stops) == 1, f"transaction {tx_id} stopped {len(stops)} times (seed {SEED})"
        stop = stops[0]
        assert messages[-1] is stop, f"transaction {tx_id}: messages after its StopTransaction"
        assert state.transactions[tx_id].started
        meter_start, meter_stop = start.payload["meterStart"], stop.payload["meterStop"]
        assert meter_start <= meter_stop, f"transaction {tx_id}: meterStop {meter_stop} < meterStart {meter_start}"
        assert start.payload["timestamp"] <= stop.payload["timestamp"]
        sampled = _energy([mv for e in messages if e.action == "MeterValues" for mv in e.payload["meterValue"]])
        data = _energy(stop.payload.get("transactionData", []))
        for name, series in (("MeterValues", sampled), ("transactionData", data)):
            stamps = [t for t, _ in series]
            values = [v for _, v in series]
            assert stamps == sorted(stamps), f"transaction {tx_id}: {name} out of time order"
            assert len(set(stamps)) == len(stamps), (
                f"transaction {tx_id}: {name} duplicated by timestamp (seed {SEED}): "
                + "; ".join(f"seq {e.seq} {e.ts:%H:%M:%S.%f} {e.payload}" for e in messages if e.action == "MeterValues"
                            and Counter(stamps)[e.payload["meterValue"][0]["timestamp"]] > 1))
            assert values == sorted(values), f"transaction {tx_id}: {name} energy not monotonic: {values}"
            assert all(meter_start <= v <= meter_stop for v in values), (
                f"transaction {tx_id}: {name} outside [{meter_start}, {meter_stop}]: {values}")
    stopped_unknown = [t for t in state.transactions.values() if not t.started]
    assert not stopped_unknown, "StopTransaction for a transaction the CSMS never saw start"
    reasons = Counter(e.payload.get("reason") for e in outbox if e.action == "StopTransaction" and e.seq not in resent)
    print(f"transactions: {len(started)}, stop reasons: {dict(reasons)}, resends after a lost answer: "
          f"{len(resent)} ({len(orphans)} StartTransaction), disconnects: {len(disconnect_at)}")
    assert reasons["PowerLoss"] > 0  # the cuts did hit running transactions

    # --- BootNotification only on the first connection after a start of the agent -----------------------
    connects = [e for e in entries if e.kind is EntryKind.CONNECT]
    for previous, current in zip([None, *connects], connects, strict=False):
        since = previous.ts.timestamp() if previous is not None else 0.0
        restarted = any(since < t <= current.ts.timestamp() for t in starts)
        nxt = next((c.seq for c in connects if c.seq > current.seq), 1 << 62)
        boots = [e for e in calls if e.action == "BootNotification" and current.seq < e.seq < nxt]
        if not restarted:
            assert not boots, "BootNotification on a reconnect without a restart of the agent"
    assert sum(1 for e in calls if e.action == "BootNotification") <= len(starts)
    print(f"connections: {len(connects)}, agent starts: {len(starts)}")
