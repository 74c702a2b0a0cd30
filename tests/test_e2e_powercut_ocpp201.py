"""The kill -9 loop of tests/test_e2e_powercut.py in OCPP 2.0.1: the same random life around the charger and the
same cuts, then the CSMS's transcript must show, per transaction (the station's UUID):

* exactly one Started first and exactly one Ended last, and nothing for a transaction never started;
* ``seqNo`` 0, 1, 2, … without a gap or a repeat — but for the one unavoidable case of at-least-once delivery,
  the message in flight when the connection died sent again as the very next queued message on the next
  connection (identical payload, adjacent, a disconnect in between), which is recognised exactly;
* the energy register rising with the timestamps across Started, Updated and Ended;
* no message lost: the agent's outbox is empty and every transaction in its ledger stopped; no ERROR logged.

``POWERCUT_CUTS`` (default here 20, a lean CI run; ``make soak`` sets more) and ``POWERCUT_SEED`` as there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from tests.station import CP_ID, Station
from tests.test_e2e_powercut import CARDS, ENERGY, SEED, cut_again_and_again

CUTS = int(os.environ.get("POWERCUT_CUTS", "20"))
PRESETS = {"SampledDataCtrlr.TxUpdatedInterval": 1, "AuthCtrlr.OfflineTxForUnknownIdEnabled": "true",
           "TxCtrlr.EVConnectionTimeOut": 10,
           "SampledDataCtrlr.TxUpdatedMeasurands": f"{ENERGY},Power.Active.Import"}


async def _message_in_flight(s: Station, rng: random.Random) -> None:
    """Cut within a few milliseconds of the CSMS receiving a TransactionEvent: the worst moment."""
    mark = s.mark()
    with contextlib.suppress(TimeoutError):
        await s.csms.transcript.wait_for("TransactionEvent", cp_id=CP_ID, direction=Direction.FROM_CP,
                                         kind=EntryKind.CALL, timeout_s=3, since=mark)
    await asyncio.sleep(rng.uniform(0.0, 0.004))


def _energy(e: TranscriptEntry) -> list[tuple[str, float]]:
    return [(mv["timestamp"], float(sv["value"])) for mv in e.payload.get("meterValue", [])
            for sv in mv["sampledValue"] if sv.get("measurand", ENERGY) == ENERGY]


@pytest.mark.timeout(CUTS * 6 + 180)
async def test_power_cuts_in_201_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    print(f"power-cut loop (OCPP 2.0.1): {CUTS} cuts, POWERCUT_SEED={SEED}")
    rng = random.Random(SEED)
    async with Station(tmp_path, connectors=2, presets=PRESETS, ocpp="2.0.1") as s:
        s.restart_delay_s = 0.0
        s.csms.behaviour.id_tags.accept(*CARDS)
        await cut_again_and_again(s, rng, CUTS, _message_in_flight)
        _check(s)
        problems = [r for r in s.log() if r.get("level") in ("ERROR", "CRITICAL")]
        assert not problems, f"errors in the agent's log: {problems[:5]}"


def _check(s: Station) -> None:
    entries = [e for e in s.csms.transcript.entries if e.cp_id == CP_ID]
    events = [e for e in entries if e.kind is EntryKind.CALL and e.direction is Direction.FROM_CP
              and e.action == "TransactionEvent"]
    assert events, "no transaction traffic at all"
    disconnect_at = [e.seq for e in entries if e.kind is EntryKind.DISCONNECT]
    kept: list[TranscriptEntry] = []  # without the recognised resends
    for i, e in enumerate(events):
        if i > 0 and json.dumps(events[i - 1].payload, sort_keys=True) == json.dumps(e.payload, sort_keys=True):
            assert any(events[i - 1].seq < d < e.seq for d in disconnect_at), (
                f"duplicate TransactionEvent that is not a resend after a lost answer (seed {SEED}): {e.payload}")
            continue
        kept.append(e)
    by_tx: dict[str, list[TranscriptEntry]] = defaultdict(list)
    for e in kept:
        by_tx[e.payload["transactionInfo"]["transactionId"]].append(e)
    stopped_reasons: dict[str, int] = defaultdict(int)
    for tx_id, msgs in by_tx.items():
        types = [m.payload["eventType"] for m in msgs]
        assert types[0] == "Started" and types.count("Started") == 1, f"{tx_id}: {types} (seed {SEED})"
        assert types[-1] == "Ended" and types.count("Ended") == 1, f"{tx_id}: {types} (seed {SEED})"
        assert [m.payload["seqNo"] for m in msgs] == list(range(len(msgs))), (
            f"{tx_id}: seqNo {[m.payload['seqNo'] for m in msgs]} (seed {SEED})")
        series = [x for m in msgs for x in _energy(m)]
        stamps, values = [t for t, _ in series], [v for _, v in series]
        assert stamps == sorted(stamps) and values == sorted(values), f"{tx_id}: energy {series} (seed {SEED})"
        stopped_reasons[msgs[-1].payload["transactionInfo"].get("stoppedReason", "Local")] += 1
    print(f"transactions: {len(by_tx)}, stopped reasons: {dict(stopped_reasons)}, "
          f"resends: {len(events) - len(kept)}, disconnects: {len(disconnect_at)}, at {time.strftime('%X')}")
    assert stopped_reasons["PowerLoss"] > 0  # the cuts did hit running transactions
