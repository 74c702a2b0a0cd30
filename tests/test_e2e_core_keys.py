"""End to end: the Core configuration keys that change what the charger does, each shown doing it.

MaxEnergyOnInvalidId (energy after the CSMS invalidated a running transaction's id, then the energy stops),
GetConfigurationMaxKeys (a longer GetConfiguration is refused; up to it, known and unknown keys are answered apart),
BlinkRepeat / LightIntensity (absent: the hardware has no light), ResetRetries (a Hard reset whose reboot did not
happen is asked again, then given up), and the table that ties every key the agent reports to the test that shows
it is honoured (a new key without an entry fails it).
"""

from __future__ import annotations

from pathlib import Path

from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"


async def test_max_energy_on_invalid_id_then_the_energy_stops(tmp_path: Path) -> None:
    presets = {"StopTransactionOnInvalidId": "false", "MaxEnergyOnInvalidId": 20, "AuthorizeRemoteTxRequests": "false"}
    async with Station(tmp_path, connectors=1, presets=presets) as s:
        s.csms.behaviour.id_tags.set(CARD, "Invalid")
        await s.start_agent()
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Preparing", since=mark)
        assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Accepted"
        start = await s.csms.wait_for_exchange("StartTransaction", cp_id=CP_ID, since=mark, timeout_s=WAIT_S)
        assert start.response.payload["idTagInfo"]["status"] == "Invalid"
        invalidated_wh = s.charger.connector_state(1)["energy_wh"]
        charging = await s.wait_status(1, "Charging", since=mark)
        suspended = await s.wait_status(1, "SuspendedEVSE", since=charging.seq)
        await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], WAIT_S, "contactor open")
        delivered = s.charger.connector_state(1)["energy_wh"] - invalidated_wh
        # 20 Wh counted by the agent's meter from its last poll before the answer (polled every second: at ~22 kW
        # up to ~6 Wh either way), then the energy stops
        assert 12 <= delivered <= 45, delivered
        await s.quiet(1.0)
        assert s.charger.connector_state(1)["energy_wh"] - invalidated_wh - delivered < 0.5  # stopped for good
        assert not s.calls("StopTransaction", mark)  # StopTransactionOnInvalidId false: the transaction goes on
        assert s.statuses(1, suspended.seq) == ["SuspendedEVSE"]
