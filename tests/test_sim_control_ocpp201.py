"""``python -m sim up --ocpp 2.0.1``: the control API's smart charging commands (``/csms/charging-profiles``,
``/csms/composite-schedule``, ``python -m sim ctl profile``) speak 2.0.1 to a 2.0.1 station — EVSE ids, a
ChargingProfileType, the TxProfile bound to the transaction the builtin CSMS knows open there — and the pilot
follows. The 1.6 side of the same commands: tests/test_sim_control.py."""

from __future__ import annotations

from pathlib import Path

from tests.test_sim_control import (
    CARD,
    offers,
    run_ctl,
    start_sim,
    stop_sim,
    tap_card,
    wait_agent_running,
    wait_connector,
    wait_until,
)


def test_profiles_over_2_0_1_limit_the_pilot_and_clear(tmp_path: Path) -> None:
    sim = start_sim(tmp_path / "state", "--csms", "builtin", "--id", "SIM-CP-201", "--ocpp", "2.0.1",
                    "--accept", CARD)
    try:
        wait_agent_running(sim)
        wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
        sim.ok("POST", "/connectors/1/plug")
        tap_card(sim)
        wait_connector(sim, 1, lambda c: abs(c["offered_current_a"] - 32.0) < 0.1, "32 A offered")

        answer = sim.ok("POST", "/csms/charging-profiles", {"connector": 0, "purpose": "TxDefaultProfile",
                                                             "periods": [[0, 10]]})
        assert answer["response"] == {"status": "Accepted"}
        assert answer["request"]["evseId"] == 0 and answer["request"]["chargingProfile"]["chargingSchedule"][0][
            "chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10}]
        wait_connector(sim, 1, offers(10.0), "10 A from the TxDefaultProfile")

        code, answer = run_ctl(sim, "profile", "set", "--connector", "1", "--purpose", "TxProfile", "--kind",
                               "Relative", "--period", "0:8", "--stack-level", "2")
        tx_profile = answer["request"]["chargingProfile"]
        assert code == 0 and answer["response"] == {"status": "Accepted"}
        assert len(tx_profile["transactionId"]) == 36  # the station's UUID, from the TransactionEvent it sent
        wait_connector(sim, 1, offers(8.0), "8 A from the TxProfile")
        code, answer = run_ctl(sim, "profile", "composite", "--connector", "1", "--duration", "600", "--unit", "W")
        assert code == 0 and answer["request"] == {"evseId": 1, "duration": 600, "chargingRateUnit": "W"}
        assert [p["limit"] for p in answer["response"]["schedule"]["chargingSchedulePeriod"]] == [8 * 3 * 230]

        code, answer = run_ctl(sim, "profile", "set", "--connector", "0", "--purpose", "ChargePointMaxProfile",
                               "--period", "0:7")  # the 1.6 name, sent as 2.0.1 spells it
        assert code == 0 and answer["response"] == {"status": "Accepted"}
        assert answer["request"]["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
        wait_connector(sim, 1, offers(7.0), "7 A under the station's maximum")

        code, answer = run_ctl(sim, "profile", "clear", "--connector", "0", "--purpose", "ChargingStationMaxProfile")
        assert code == 0 and answer["request"] == {"chargingProfileCriteria": {
            "evseId": 0, "chargingProfilePurpose": "ChargingStationMaxProfile"}}
        assert answer["response"]["status"] == "Accepted"
        answer = sim.ok("POST", "/csms/charging-profiles/clear", {"id": tx_profile["id"]})
        assert answer["request"] == {"chargingProfileId": tx_profile["id"]}
        wait_connector(sim, 1, offers(10.0), "back to the TxDefaultProfile")
        assert sim.ok("POST", "/csms/charging-profiles/clear", {})["response"]["status"] == "Accepted"
        wait_connector(sim, 1, offers(32.0), "back to the rating")
        assert sim.ok("POST", "/csms/charging-profiles/clear", {})["response"]["status"] == "Unknown"
    finally:
        stop_sim(sim)
