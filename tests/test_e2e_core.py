"""End to end through the simulator: the agent process, simulated devices on ptys, the simulated CSMS.

Boot, statuses, a whole session with meter values, stop by same id, power cut during a transaction.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.station import CP_ID, Station


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[Station]:
    async with Station(tmp_path) as s:
        yield s


async def test_cold_boot_reports_every_connector_and_heartbeats_when_idle(tmp_path: Path) -> None:
    async with Station(tmp_path, heartbeat_interval=1) as s:
        await s.start_agent()
        boot = s.calls("BootNotification")
        assert len(boot) == 1 and boot[0].payload["chargePointVendor"] == "evse-agent"
        for connector in (0, 1, 2):
            await s.wait_status(connector, "Available")
        # nothing but BootNotification before it was accepted
        first = s.csms.transcript.messages(CP_ID)
        assert first[0].action == "BootNotification"
        await s.wait_call("Heartbeat")
        assert s.csms.state(CP_ID).heartbeat_count >= 1


async def test_boot_pending_then_accepted_sends_nothing_else_before(tmp_path: Path) -> None:
    async with Station(tmp_path, boot_statuses=["Pending", "Pending", "Accepted"]) as s:
        await s.start_agent(wait_boot=False)
        await s.wait_status(1, "Available")
        calls = s.calls()
        boots = [i for i, e in enumerate(calls) if e.action == "BootNotification"]
        assert len(boots) == 3
        assert all(e.action == "BootNotification" for e in calls[: boots[-1] + 1])
        # the Pending interval (1 s) was honoured between attempts
        times = [calls[i].ts for i in boots]
        assert all((b - a).total_seconds() >= 0.9 for a, b in itertools.pairwise(times))


async def test_plug_first_session_with_meter_values_stopped_by_same_card(tmp_path: Path) -> None:
    async with Station(tmp_path, presets={"MeterValueSampleInterval": 1,
                                          "MeterValuesSampledData": "Energy.Active.Import.Register,Current.Import",
                                          "StopTxnSampledData": "Energy.Active.Import.Register"}) as s:
        await s.start_agent()
        mark = s.mark()
        tx_id = await s.start_session(1, "04A1B2C3")
        meter = await s.wait_call("MeterValues", since=mark)
        assert meter.payload["transactionId"] == tx_id
        await s.wait_call("MeterValues", since=s.mark())
        await s.tap("04A1B2C3")
        stop = await s.wait_call("StopTransaction", since=mark)
        p = stop.payload
        assert p["transactionId"] == tx_id and p["reason"] == "Local" and p["idTag"] == "04A1B2C3"
        start = s.calls("StartTransaction", mark)[0].payload
        assert p["meterStop"] > start["meterStart"]
        # transactionData: begin, periodic samples, end — energy never decreasing
        data = p["transactionData"]
        contexts = [mv["sampledValue"][0]["context"] for mv in data]
        assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
        energies = [int(mv["sampledValue"][0]["value"]) for mv in data]
        assert energies == sorted(energies)
        values = [e.payload for e in s.calls("MeterValues", mark)]
        phases = {sv.get("phase") for mv in values for v in mv["meterValue"] for sv in v["sampledValue"]}
        assert {"L1", "L2", "L3"} <= phases
        await s.wait_status(1, "Finishing", since=mark)
        unplugged = s.mark()
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=unplugged)
        # if the EV is still in B when the transaction starts, SuspendedEV comes before Charging
        seen = s.statuses(1, mark)
        assert [x for x in seen if x != "SuspendedEV"][-4:] == ["Preparing", "Charging", "Finishing", "Available"]
        assert seen.count("SuspendedEV") <= 1
        tx = s.csms.state(CP_ID).transactions[tx_id]
        assert tx.stop_count == 1 and tx.meter_stop == p["meterStop"]


async def test_power_cut_during_transaction_ends_it_once_with_powerloss(station: Station) -> None:
    s = station
    await s.start_agent()
    mark = s.mark()
    tx_id = await s.start_session(1)
    await asyncio.sleep(1.0)  # some energy flows
    await s.kill_agent()
    await s.start_agent()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "PowerLoss"
    start = s.calls("StartTransaction", mark)[0].payload
    assert stop.payload["meterStop"] >= start["meterStart"]
    await asyncio.sleep(1.0)
    assert len(s.calls("StopTransaction", mark)) == 1
    assert len(s.calls("StartTransaction", mark)) == 1
    # the restart after the power cut is a reboot: a new BootNotification (the first came before `mark`)
    assert len(s.calls("BootNotification", mark)) == 1 and len(s.calls("BootNotification")) == 2
