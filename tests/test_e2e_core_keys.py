"""End to end: the Core configuration keys that change what the charger does, each shown doing it.

MaxEnergyOnInvalidId (energy after the CSMS invalidated a running transaction's id, then the energy stops),
GetConfigurationMaxKeys (a longer GetConfiguration is refused; up to it, known and unknown keys are answered apart),
BlinkRepeat / LightIntensity (absent: the hardware has no light), ResetRetries (a Hard reset whose reboot did not
happen is asked again, then given up), and the table that ties every key the agent reports to the test that shows
it is honoured (a new key without an entry fails it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware.exitcodes import ExitCode
from firmware.maintenance.privileged import REBOOT_REQUEST
from sim.csms.server import CallErrorReceived
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


async def test_get_configuration_max_keys_and_no_light_keys(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent()
        got = await s.csms.get_configuration(CP_ID, ["GetConfigurationMaxKeys"])
        limit = int(got["configurationKey"][0]["value"])
        known = ["HeartbeatInterval", "NumberOfConnectors"]
        unknown = [f"NoSuchKey{i}" for i in range(limit - len(known))]
        answer = await s.csms.get_configuration(CP_ID, known + unknown)  # as many as announced: answered, split
        assert [e["key"] for e in answer["configurationKey"]] == known and answer["unknownKey"] == unknown
        with pytest.raises(CallErrorReceived) as refused:  # one more: refused, nothing looked up
            await s.csms.get_configuration(CP_ID, [*known, *unknown, "OneTooMany"])
        assert refused.value.code == "OccurenceConstraintViolation"
        assert f"more than {limit}" in refused.value.description
        # BlinkRepeat and LightIntensity exist only where the hardware has a light to blink: this one has none
        answer = await s.csms.get_configuration(CP_ID, ["BlinkRepeat", "LightIntensity"])
        assert "configurationKey" not in answer and answer["unknownKey"] == ["BlinkRepeat", "LightIntensity"]
        for key in ("BlinkRepeat", "LightIntensity"):
            assert (await s.csms.change_configuration(CP_ID, key, "3"))["status"] == "NotSupported"


#: Every configuration key the agent reports, and the test that shows it does what the key says. A key the agent
#: reports without an entry here fails test_every_reported_key_is_shown_honoured: a key accepted and ignored is a
#: lie to the CSMS.
HONOURED_BY = {
    "AdditionalRootCertificateCheck":
        "test_e2e_security.py::test_additional_root_certificate_check_replaces_a_root_through_a_fallback",
    "AllowOfflineTxForUnknownId":
        "test_e2e_offline_auth.py::test_blocked_cached_id_refused_offline_unknown_id_allowed_then_deauthorized",
    "AuthorizationCacheEnabled":
        "test_e2e_offline_auth.py::test_authorization_cache_disabled_forgets_and_learns_nothing",
    "AuthorizeRemoteTxRequests": "test_e2e_remote.py::test_authorize_remote_tx_requests_authorizes_before_starting",
    "ChargeProfileMaxStackLevel": "test_smart_charging_rules.py::test_the_charger_limits_are_enforced",
    "ChargingScheduleAllowedChargingRateUnit":
        "test_e2e_smart_charging.py::test_tx_default_then_composite_then_a_session_under_it",
    "ChargingScheduleMaxPeriods": "test_smart_charging_rules.py::test_the_charger_limits_are_enforced",
    "CertificateSignedMaxChainSize":
        "test_e2e_security.py::test_charge_point_certificate_renewed_through_sign_certificate",
    "CertificateStoreMaxLength": "test_certstore.py::test_install_accepts_current_roots_only_and_is_bounded",
    "ClockAlignedDataInterval": "test_e2e_config.py::test_clock_aligned_meter_values",
    "ConnectionTimeOut": "test_e2e_remote.py::test_remote_start_first_and_no_ev_within_connection_timeout",
    "ConnectorPhaseRotation": "test_ocpp16_configuration.py::test_connector_phase_rotation_default_and_normalized_form",
    "ConnectorPhaseRotationMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "CpoName": "test_e2e_security.py::test_charge_point_certificate_renewed_through_sign_certificate",
    "GetConfigurationMaxKeys": "test_e2e_core_keys.py::test_get_configuration_max_keys_and_no_light_keys",
    "HeartbeatInterval": "test_e2e_config.py::test_change_configuration_answers_and_the_change_applies",
    "LocalAuthListEnabled": "test_e2e_local_auth_list.py::test_keys_versions_and_the_list_switched_off",
    "LocalAuthListMaxLength":
        "test_local_auth_list.py::test_an_update_growing_the_list_past_its_maximum_is_undone_whole",
    "LocalAuthorizeOffline": "test_e2e_offline_auth.py::test_local_authorize_offline_off_refuses_a_cached_id_offline",
    "LocalPreAuthorize": "test_e2e_offline_auth.py::test_local_pre_authorize_starts_a_cached_id_without_authorize",
    "MaxChargingProfilesInstalled":
        "test_smart_charging_rules.py::test_max_installed_then_rejected_but_a_replacement_still_goes",
    "MaxEnergyOnInvalidId": "test_e2e_core_keys.py::test_max_energy_on_invalid_id_then_the_energy_stops",
    "MeterValueSampleInterval":
        "test_e2e_config.py::test_changed_meter_value_sample_interval_applies_to_a_running_transaction",
    "MeterValuesAlignedData": "test_e2e_config.py::test_clock_aligned_meter_values",
    "MeterValuesAlignedDataMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "MeterValuesSampledData": "test_e2e_remote_trigger.py::test_tc_054_each_message_is_sent_after_its_accepted_answer",
    "MeterValuesSampledDataMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "MinimumStatusDuration": "test_e2e_delivery.py::test_minimum_status_duration_drops_a_status_that_did_not_last",
    "NumberOfConnectors":
        "test_e2e_remote_trigger.py::test_tc_055_a_connector_that_does_not_exist_is_rejected_and_nothing_is_sent",
    "ReserveConnectorZeroSupported":
        "test_e2e_reservation.py::test_tc050_4_connector_zero_without_reserve_connector_zero_supported",
    "SecurityProfile": "test_e2e_security.py::test_profile_raised_to_3_over_ocpp_never_lowered",
    "SendLocalListMaxLength": "test_e2e_local_auth_list.py::test_version_mismatch_and_failed_updates_leave_the_list",
    "ResetRetries": "test_e2e_core_keys.py::test_reset_retries_asks_for_the_reboot_again_then_gives_up",
    "StopTransactionOnEVSideDisconnect":
        "test_e2e_sessions.py::test_ev_unplugged_with_stop_on_ev_side_disconnect_off_keeps_the_transaction",
    "StopTransactionOnInvalidId":
        "test_e2e_remote.py::test_rejected_id_with_stop_on_invalid_id_off_suspends_energy_only",
    "StopTxnAlignedData": "test_e2e_config.py::test_clock_aligned_meter_values",
    "StopTxnAlignedDataMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "StopTxnSampledData": "test_e2e_core.py::test_plug_first_session_with_meter_values_stopped_by_same_card",
    "StopTxnSampledDataMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "SupportedFeatureProfiles": "test_e2e_core_keys.py::test_every_reported_key_is_shown_honoured",
    "SupportedFeatureProfilesMaxLength": "test_ocpp16_configuration.py::test_max_length_keys_bound_their_lists",
    "TransactionMessageAttempts":
        "test_e2e_delivery.py::test_stop_transaction_the_csms_fails_to_process_is_retried_at_growing_intervals",
    "TransactionMessageRetryInterval":
        "test_e2e_delivery.py::test_stop_transaction_the_csms_fails_to_process_is_retried_at_growing_intervals",
    "UnlockConnectorOnEVSideDisconnect": "test_e2e_cable_lock.py::test_unlock_connector_on_ev_side_disconnect",
    "WebSocketPingInterval": "test_link_supervision.py::test_a_changed_ping_interval_applies_to_the_open_connection",
}
#: Keys reported but not honoured yet, and the work that will: each must move to HONOURED_BY when it lands.
NOT_YET = {
}
#: Keys whose change answers RebootRequired (takes effect after a restart). None: each applies at once.
REBOOT_REQUIRED: set[str] = set()
#: A CALL of each feature profile, sent with an empty payload: NotSupported where the charge point lacks the profile,
#: a schema error (nothing done) where it has it.
PROFILE_ACTION = {"Core": "ChangeConfiguration", "FirmwareManagement": "UpdateFirmware",
                  "LocalAuthListManagement": "SendLocalList", "Reservation": "ReserveNow",
                  "SmartCharging": "SetChargingProfile", "RemoteTrigger": "TriggerMessage"}


async def test_every_reported_key_is_shown_honoured(tmp_path: Path) -> None:
    tests = Path(__file__).parent
    for key, where in HONOURED_BY.items():
        file, _, name = where.partition("::")
        assert re.search(rf"^(async )?def {name}\(", (tests / file).read_text(), re.M), f"{key}: no test {where}"
    assert not set(HONOURED_BY) & set(NOT_YET)
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        reported = {e["key"]: e for e in (await s.csms.get_configuration(CP_ID))["configurationKey"]}
        missing = sorted(set(reported) - set(HONOURED_BY) - set(NOT_YET))
        assert not missing, f"keys reported with no test showing they are honoured: {missing}"
        gone = sorted((set(HONOURED_BY) | set(NOT_YET)) - set(reported))
        assert not gone, f"keys listed here that the agent no longer reports: {gone}"
        # a writable key set to what it is: Accepted (it applies at once), never RebootRequired
        for key, entry in reported.items():
            if not entry["readonly"]:
                answer = await s.csms.change_configuration(CP_ID, key, entry["value"])
                assert answer["status"] == ("RebootRequired" if key in REBOOT_REQUIRED else "Accepted"), key
        # SupportedFeatureProfiles: exactly the profiles whose messages the charge point takes
        profiles = set(reported["SupportedFeatureProfiles"]["value"].split(","))
        assert profiles <= set(PROFILE_ACTION), profiles
        for profile, action in PROFILE_ACTION.items():
            with pytest.raises(CallErrorReceived) as refused:
                await s.csms.call(CP_ID, action, {}, validate=False)
            assert (refused.value.code != "NotSupported") == (profile in profiles), (profile, refused.value.code)
