"""Storage and delivery figures: durable enqueue rate, draining a backlog, restart after a power cut.

* enqueue: ``Outbox.queue`` (one message, one commit, ``synchronous=FULL``: on disk when it returns)
  in messages/s, next to ``queue_many`` in batches of 100 (one commit each) for the cost of the fsync;
* drain: 10,000 MeterValues queued while the CSMS was offline, from the reconnect (the CSMS sees the
  connection) to the CSMS's answer to the last one — next to the same number of bare ``ocpp``-library
  MeterValues calls from one client over the same loopback to the same simulated CSMS. The ratio is the
  figure: what the durable outbox costs per message over the protocol's own round trip;
* restart: agent killed (SIGKILL) with a transaction open -> new process spawned -> its BootNotification
  received by the CSMS; with an empty outbox and with about 10,000 queued messages (the integrity check
  reads the whole file; each run delivers some of them before the next cut).

``BENCH_DRAIN`` sets the backlog (default 10000), ``BENCH_ENQUEUE`` the single-commit enqueues (default 3000).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets
from ocpp.v16 import ChargePoint, call

from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox, QueuedMessage
from sim.csms.transcript import Direction, EntryKind
from tests.station import CP_ID, Station

TAG = "04A1B2C3"


def _meter_value(i: int) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(1_760_000_000 + i, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"timestamp": stamp, "sampledValue": [
        {"value": str(1000 + i), "context": "Sample.Periodic", "format": "Raw",
         "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
        {"value": "7200", "context": "Sample.Periodic", "format": "Raw", "measurand": "Power.Active.Import",
         "location": "Outlet", "unit": "W"}]}


def _enqueue_rates(root: Path, n: int) -> tuple[float, float]:
    outbox = Outbox(Database(root / "enqueue.db"))
    t0 = time.perf_counter()
    for i in range(n):
        outbox.queue("MeterValues", {"connectorId": 1, "meterValue": [_meter_value(i)]}, 1, 1, thinnable=True)
    single = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for chunk in range(0, n, 100):
        outbox.queue_many([QueuedMessage("MeterValues", {"connectorId": 1, "meterValue": [_meter_value(i)]}, 1, 1,
                                         thinnable=True) for i in range(chunk, chunk + 100)])
    batched = n / (time.perf_counter() - t0)
    return single, batched


def _fill(db_path: Path, n: int) -> None:
    """What an agent leaves after a long offline period: a confirmed transaction and its queued meter values
    (written by a second connection while the agent runs: SQLite WAL allows it, the agent reads the head)."""
    db = Database(db_path)
    ledger, outbox = Ledger(db), Outbox(db)
    if ledger.get(1, 999) is None:
        ledger.start(1, 999, TAG, 1000, datetime.now(UTC))
        ledger.set_transaction_id(1, 999, "1")
    outbox.queue_many([QueuedMessage("MeterValues", {"connectorId": 1, "meterValue": [_meter_value(i)]}, 1, 999,
                                     thinnable=True) for i in range(n)])
    db.close()


async def _agent_drain(root: Path, n: int) -> float:
    (root / "drain").mkdir()
    async with Station(root / "drain", connectors=1) as s:
        await s.start_agent()
        await s.csms.set_online(False)
        _fill(s.state_dir / "agent.db", n)
        mark = s.mark()
        await s.csms.set_online(True)
        connect = await s.csms.transcript.wait_for_event(EntryKind.CONNECT, CP_ID, timeout_s=30, since=mark)
        answered = 0
        last = connect.ts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 600
        while answered < n and loop.time() < deadline:
            await asyncio.sleep(0.2)
            results = [e for e in s.csms.transcript.messages(CP_ID, direction=Direction.TO_CP, since=mark)
                       if e.kind is EntryKind.CALLRESULT and e.action == "MeterValues"]
            answered = len(results)
            if results:
                last = results[-1].ts
        assert answered == n, f"only {answered} of {n} delivered"
        await s.stop_agent()
        return (last - connect.ts).total_seconds()


async def _bare_library(root: Path, n: int) -> float:
    """The same MeterValues through the ocpp library's own ChargePoint, sequentially, nothing stored."""
    (root / "bare").mkdir()
    async with Station(root / "bare", connectors=1) as s:
        async with websockets.connect(s.csms.url_for("BARE-CP"), subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            cp = ChargePoint("BARE-CP", ws)
            receiver = asyncio.create_task(cp.start())
            t0 = time.perf_counter()
            for i in range(n):
                await cp.call(call.MeterValues(connector_id=1, meter_value=[_meter_value(i)], transaction_id=1))
            elapsed = time.perf_counter() - t0
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        return elapsed


async def _restart_to_boot(root: Path, runs: int, backlog: int) -> list[float]:
    name = f"restart{backlog}"
    (root / name).mkdir()
    out = []
    async with Station(root / name, connectors=1) as s:
        s.csms.behaviour.id_tags.accept(TAG)
        await s.start_agent()
        await s.start_session(1, TAG)
        if backlog:  # the running agent does not look at rows it did not queue itself until it restarts
            _fill(s.state_dir / "agent.db", backlog)
        for _ in range(runs):
            await s.kill_agent()
            mark = s.mark()
            t0 = datetime.now(UTC)
            await s.start_agent(wait_boot=False)
            boot = await s.wait_call("BootNotification", since=mark, timeout_s=30)
            out.append((boot.ts - t0).total_seconds())
        await s.stop_agent()
    return out


async def _main() -> None:
    drain_n = int(os.environ.get("BENCH_DRAIN", "10000"))
    enqueue_n = int(os.environ.get("BENCH_ENQUEUE", "3000"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single, batched = _enqueue_rates(root, enqueue_n)
        print(f"durable enqueue (synchronous=FULL, WAL): {single:,.0f} messages/s one commit each; "
              f"{batched:,.0f} messages/s in commits of 100")
        agent = await _agent_drain(root, drain_n)
        bare = await _bare_library(root, drain_n)
        print(f"drain {drain_n:,} queued MeterValues after reconnect: agent {agent:.1f} s "
              f"({drain_n / agent:,.0f} msg/s); bare ocpp library calls {bare:.1f} s ({drain_n / bare:,.0f} msg/s); "
              f"ratio {agent / bare:.2f}")
        plain = await _restart_to_boot(root, 5, 0)
        print(f"restart after a power cut -> BootNotification: median {statistics.median(plain) * 1000:.0f} ms, "
              f"max {max(plain) * 1000:.0f} ms ({len(plain)} cuts, transaction open)")
        loaded = await _restart_to_boot(root, 3, drain_n)
        print(f"restart after a power cut -> BootNotification with {drain_n:,} queued: median "
              f"{statistics.median(loaded) * 1000:.0f} ms, max {max(loaded) * 1000:.0f} ms")


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
