"""A long CSMS outage during a transaction: thousands of queued messages, delivered in order after reconnect.

Sampling at 1 s, thousands of MeterValues take an hour of outage; the test scales that down by writing
the samples of the "long" outage into the agent's own queue (the same table and code path the agent uses)
while the agent runs offline, then stops the transaction offline and brings the CSMS back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware.ocpp.v16.mapping import timestamp
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox, QueuedMessage
from tests.station import CP_ID, WAIT_S, Station

BACKLOG = 3000


def _sample(when: datetime, wh: int) -> dict[str, object]:
    value = {"value": str(wh), "context": "Sample.Periodic", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    return {"connectorId": 1, "meterValue": [{"timestamp": timestamp(when), "sampledValue": [value]}]}


async def test_thousands_of_messages_queued_during_an_outage_arrive_in_order(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent()
        tx_id = await s.start_session(1, "04A1B2C3")
        await s.csms.set_online(False)
        await s.csms.wait_disconnected(CP_ID, timeout_s=WAIT_S)

        db = Database(tmp_path / "agent.db")
        try:
            [open_tx] = Ledger(db).open_transactions()
            t0 = datetime.now(UTC) - timedelta(seconds=BACKLOG)
            Outbox(db).queue_many(QueuedMessage("MeterValues", _sample(t0 + timedelta(seconds=i), 1000 + i),
                                                open_tx.connector, open_tx.local_id, t0 + timedelta(seconds=i),
                                                thinnable=True) for i in range(BACKLOG))
        finally:
            db.close()

        mark, seen = s.mark(), len(s.log())
        await s.tap("04A1B2C3")  # stopped while still offline: queued behind the backlog
        await s.wait_log(lambda e: e.get("event") == "TransactionStopped", since=seen, what="stopped offline")
        await s.csms.set_online(True)
        stop = await s.wait_call("StopTransaction", since=mark, timeout_s=90)  # 3000 messages: ~10 s, more if loaded

        values = s.calls("MeterValues", mark)
        assert len(values) == BACKLOG
        assert all(v.payload["transactionId"] == tx_id for v in values)
        stamps = [v.payload["meterValue"][0]["timestamp"] for v in values]
        assert stamps == sorted(stamps) and len(set(stamps)) == BACKLOG  # in order, none twice
        assert max(v.seq for v in values) < stop.seq  # the stop comes after everything queued before it
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Local"
        assert len(s.calls("StopTransaction", mark)) == 1
