"""End to end: hardware faults as the CSMS sees them.

An RCD trip on the I/O board while charging stops the transaction and reports Faulted/GroundFailure;
the trip stays latched on the board and the agent clears it once the residual current has gone and
no EV is connected (firmware/charger/connector.py), so the connector comes back as Available. A silent
energy meter is reported as PowerMeterFailure while charging goes on (without meter values made up
from its last reading), and the report clears when the meter answers again.
"""

from __future__ import annotations

from pathlib import Path

from sim.devices.interfaces import BoardFault
from tests.station import CP_ID, Station

CARD = "04A1B2C3"


async def test_rcd_trip_while_charging_stops_and_faults_then_recovers(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        tx_id = await s.start_session(1, CARD)
        mark = s.mark()
        s.inject(1, BoardFault.RCD_TRIP)
        faulted = await s.wait_status(1, "Faulted", since=mark)
        assert faulted.payload["errorCode"] == "GroundFailure"
        assert faulted.payload.get("vendorErrorCode") == "rcd_trip"
        stop = await s.wait_call("StopTransaction", since=mark)
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Other"
        assert stop.seq < faulted.seq  # the transaction ends before the connector reports Faulted
        # the contactor is open: no current flows any more
        await s.wait_until(lambda: not s.charger.connectors[1].board.contactor_closed, what="contactor open")
        assert s.statuses(2, mark) == []  # the other connector is not affected
        # the residual current is gone, but the EV that tripped it is still plugged in: the latched trip
        # is not cleared under its nose, the connector stays Faulted
        cleared = s.mark()
        s.inject(1, BoardFault.RCD_TRIP, active=False)
        await s.quiet(3.0)
        assert s.statuses(1, cleared) == []
        # unplugged: the trip is cleared and the connector is Available again
        s.ev(1).unplug()
        available = await s.wait_status(1, "Available", since=cleared)
        assert available.payload["errorCode"] == "NoError"
        assert s.statuses(1, mark) == ["Faulted", "Available"]
        assert len(s.calls("StopTransaction", mark)) == 1
        # and a new session works
        again = s.mark()
        await s.start_session(1, CARD)
        assert s.statuses(1, again) == ["Preparing", "SuspendedEV", "Charging"]


async def test_rcd_trip_on_an_idle_connector_recovers_once_the_residual_current_is_gone(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent()
        mark = s.mark()
        s.inject(1, BoardFault.RCD_TRIP)
        faulted = await s.wait_status(1, "Faulted", since=mark)
        assert faulted.payload["errorCode"] == "GroundFailure"
        await s.quiet(3.0)  # still there: the board keeps the trip while the cause lasts
        assert s.statuses(1, mark) == ["Faulted"]
        s.inject(1, BoardFault.RCD_TRIP, active=False)
        available = await s.wait_status(1, "Available", since=mark)
        assert available.payload["errorCode"] == "NoError"
        assert s.statuses(1, mark) == ["Faulted", "Available"]
        assert not s.calls("StopTransaction", mark)


async def test_silent_meter_is_reported_while_charging_goes_on(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1, presets={"MeterValueSampleInterval": 1}) as s:
        await s.start_agent()
        tx_id = await s.start_session(1, CARD)
        mark = s.mark()
        s.meter_silent(1)
        warning = await s.wait_call("StatusNotification", lambda e: e.payload["errorCode"] != "NoError",
                                    since=mark)
        assert warning.payload["status"] == "Charging"
        assert warning.payload["errorCode"] == "PowerMeterFailure"
        assert not s.calls("StopTransaction", mark)
        assert s.charger.connectors[1].board.contactor_closed  # energy still flows
        # no made-up samples: the last reading is not re-sent with new timestamps while the meter is silent
        await s.quiet(2.0)
        sampled = [e.payload["meterValue"][0]["timestamp"] for e in s.calls("MeterValues", mark)]
        assert all(ts <= warning.payload["timestamp"] for ts in sampled), (sampled, warning.payload)
        back = s.mark()
        s.meter_silent(1, False)
        ok = await s.wait_call("StatusNotification", lambda e: e.payload["errorCode"] == "NoError",
                               since=back)
        assert ok.payload["status"] == "Charging"
        assert s.csms.state(CP_ID).transactions[tx_id].is_open
        # meter values flow again with the energy register still counting up
        after = await s.wait_call("MeterValues", since=ok.seq)
        assert after.payload["transactionId"] == tx_id
        assert not s.calls("StopTransaction", mark)
