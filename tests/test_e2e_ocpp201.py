"""OCPP 2.0.1 end to end: the agent process with ``[ocpp] version = "2.0.1"``, simulated devices on ptys and the
simulated CSMS speaking 2.0.1 (subprotocol ocpp2.0.1, every request checked against the library's 2.0.1 schemas).

The OCTT 2.0.1 test case each test stands for is named in its docstring where there is one.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

from tests.station import CP_ID, WAIT_S, Station


async def test_cold_boot_statuses_and_heartbeat(tmp_path: Path) -> None:
    """TC_B_01_CS (cold boot, Accepted) and G01: BootNotification with reason PowerUp first, then every EVSE's
    connector Available; Heartbeat after HeartbeatInterval without other traffic."""
    async with Station(tmp_path, ocpp="2.0.1", heartbeat_interval=1) as s:
        await s.start_agent()
        assert s.csms.session(CP_ID).connection.subprotocol == "ocpp2.0.1"
        boot = s.calls("BootNotification")
        assert len(boot) == 1
        assert boot[0].payload["reason"] == "PowerUp"
        assert boot[0].payload["chargingStation"]["vendorName"] == "evse-agent"
        assert s.csms.transcript.messages(CP_ID)[0].action == "BootNotification"
        for evse in (1, 2):
            await s.wait_status(evse, "Available")
            status = next(e for e in s.calls("StatusNotification") if e.payload["evseId"] == evse)
            assert status.payload["connectorId"] == 1
        await s.wait_call("Heartbeat")
        assert s.csms.state(CP_ID).heartbeat_count >= 1


async def test_boot_pending_and_rejected_then_accepted(tmp_path: Path) -> None:
    """TC_B_02_CS / TC_B_03_CS: while Pending or Rejected nothing but BootNotification is sent, and the interval
    given is honoured between attempts."""
    async with Station(tmp_path, ocpp="2.0.1", boot_statuses=["Pending", "Rejected", "Accepted"]) as s:
        await s.start_agent(wait_boot=False)
        await s.wait_status(1, "Available")
        calls = s.calls()
        boots = [i for i, e in enumerate(calls) if e.action == "BootNotification"]
        assert len(boots) == 3
        assert all(e.action == "BootNotification" for e in calls[: boots[-1] + 1])
        times = [calls[i].ts for i in boots]
        assert all((b - a).total_seconds() >= 0.9 for a, b in itertools.pairwise(times))
