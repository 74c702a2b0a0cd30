"""The simulator's smart charging parts that need no process: profiles built from plain values (what
``python -m sim ctl profile set`` sends), and the charging limits read from the agent's log (``GET /state``).
The same parts against the running simulator are in tests/test_sim_control.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.csms.charging_profiles import Period, charging_profile, ocpp_datetime, parse_instant, profile_ids_sent
from sim.csms.ocppj import check_payload
from sim.harness import control_cli
from sim.harness.agent_limits import AgentLimits, limited_by
from sim.harness.agent_supervisor import AgentOutput
from sim.harness.demo import summarize_payload

NOW = datetime(2026, 3, 4, 9, 17, 23, 456789, tzinfo=UTC)


def test_instants_now_offsets_and_iso_with_a_zone() -> None:
    assert parse_instant("now", NOW) == NOW
    assert parse_instant("+90", NOW) == NOW + timedelta(seconds=90)
    assert parse_instant("+1.5", NOW) == NOW + timedelta(seconds=1.5)
    assert parse_instant("2026-03-04T10:00:00Z", NOW) == datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert parse_instant("2026-03-04T11:00:00+01:00", NOW) == datetime(2026, 3, 4, 10, tzinfo=UTC)
    for bad, words in (("2026-03-04T10:00:00", "no UTC offset"), ("tomorrow", "expected now"),
                       ("-5", "expected now"), ("+", "expected now"), ("", "expected now")):
        with pytest.raises(ValueError, match=words):
            parse_instant(bad, NOW)
    assert ocpp_datetime(NOW) == "2026-03-04T09:17:23Z"  # whole seconds: the start is never after "now"
    assert ocpp_datetime(datetime(2026, 3, 4, 11, tzinfo=timezone(timedelta(hours=2)))) == "2026-03-04T09:00:00Z"


def test_profiles_of_every_kind_are_valid_1_6() -> None:
    absolute = charging_profile(3, 1, "TxDefaultProfile", [Period(0, 16), Period(60, 10.5, 1)], start=NOW,
                                duration_s=7200, min_charging_rate=6.0)
    assert absolute == {
        "chargingProfileId": 3, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "duration": 7200, "startSchedule": "2026-03-04T09:17:23Z",
                             "minChargingRate": 6.0,
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16},
                                                        {"startPeriod": 60, "limit": 10.5, "numberPhases": 1}]}}
    recurring = charging_profile(4, 0, "ChargePointMaxProfile", [Period(0, 11000)], unit="W", kind="Recurring",
                                 recurrency="Weekly", start=NOW)
    assert recurring["recurrencyKind"] == "Weekly" and recurring["chargingSchedule"]["chargingRateUnit"] == "W"
    relative = charging_profile(5, 0, "TxProfile", [Period(0, 8)], kind="Relative", transaction_id=42)
    assert relative["transactionId"] == 42 and "startSchedule" not in relative["chargingSchedule"]
    for profile in (absolute, recurring, relative):
        assert check_payload("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile}) is None
        assert profile_ids_sent([("SetChargingProfile", {"csChargingProfiles": profile})]) == {
            profile["chargingProfileId"]}


def test_combinations_that_mean_nothing_are_refused() -> None:
    one = [Period(0, 16)]
    for kwargs, words in (({"kind": "Recurring"}, "needs a recurrency"),
                          ({"recurrency": "Daily"}, "recurrency is for Recurring"),
                          ({"kind": "Relative", "start": NOW}, "starts with its transaction"),
                          ({"transaction_id": 1}, "transaction id is for a TxProfile")):
        with pytest.raises(ValueError, match=words):
            charging_profile(1, 0, "TxDefaultProfile", one, **kwargs)  # type: ignore[arg-type]


def test_profile_ids_sent_reads_set_and_remote_start_only() -> None:
    sent = [("SetChargingProfile", {"csChargingProfiles": {"chargingProfileId": 7}}),
            ("RemoteStartTransaction", {"idTag": "A", "chargingProfile": {"chargingProfileId": 9}}),
            ("RemoteStartTransaction", {"idTag": "A"}), ("ClearChargingProfile", {"id": 99}),
            ("SetChargingProfile", {"csChargingProfiles": {"chargingProfileId": True}}),
            ("SetChargingProfile", "not a dict"), (None, None)]
    assert profile_ids_sent(sent) == {7, 9}


def test_ctl_period_syntax() -> None:
    assert control_cli.parse_period("0:16") == [0, 16.0]
    assert control_cli.parse_period("3600:7.5:1") == [3600, 7.5, 1]
    for bad in ("0", "0-16", "a:16", "0:x", "0:16:1.5", "0:16:1:2", ""):
        with pytest.raises(ValueError, match="START:LIMIT"):
            control_cli.parse_period(bad)


def test_the_live_view_summarizes_a_profile() -> None:
    profile = charging_profile(3, 1, "TxProfile", [Period(0, 16), Period(60, 10.5, 1)], kind="Relative",
                               transaction_id=7)
    assert summarize_payload("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile}, False) == (
        "connectorId=1 TxProfile id=3 level=1 Relative 0s:16A 60s:10.5A")
    assert summarize_payload("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": [1]}, False) == (
        "connectorId=0")
    assert summarize_payload("SetChargingProfile", {"status": "Accepted"}, True) == "status=Accepted"


# ---- the limits in the agent's log ---------------------------------------------------------------------------

def test_what_limits_a_connector() -> None:
    assert limited_by(10.0, {"ocpp": 10.0, "site": 16.0}, {}, 32.0) == ["ocpp"]
    assert limited_by(10.0, {"ocpp": 10.0, "site": 10.0}, {}, 32.0) == ["ocpp", "site"]
    assert limited_by(32.0, {}, {}, 32.0) == ["rating"]
    assert limited_by(32.0, {"ocpp": 32.0}, {}, 32.0) == ["ocpp", "rating"]
    assert limited_by(16.0, {}, {"ocpp": 16.0}, 32.0) == ["charger:ocpp"]
    # a whole-charger limit of 20 A shared by two EVs: each gets its share, below every value in the log
    assert limited_by(10.0, {"site": 16.0}, {"ocpp": 20.0, "failsafe": 25.0}, 32.0) == ["charger:ocpp"]
    assert limited_by(10.0, {}, {}, None) == []


def test_agent_limits_from_the_log_lines_and_ignoring_malformed_ones() -> None:
    limits = AgentLimits()
    assert limits.view(1, 32.0) is None  # nothing logged yet
    limits.feed({"ts": "t0", "msg": "smart charging limits", "connectors": {"1": None, "2": None}, "charger": None,
                 "next_change": None})
    assert limits.view(1, 32.0) == {"amps": None, "limited_by": None, "sources": None, "charger_sources": None,
                                    "at": None, "ocpp": {"amps": None, "charger_amps": None, "next_change": None,
                                                         "at": "t0"}}
    limits.feed({"ts": "t1", "msg": "smart charging limits", "connectors": {"1": 10.0, "2": 16}, "charger": 30,
                 "next_change": "2026-03-04T10:00:00+00:00"})
    limits.feed({"ts": "t1", "msg": "charging limit", "connector": 1, "amps": 10.0, "sources": {"ocpp": 10.0},
                 "charger_sources": {"ocpp": 30.0}})
    assert limits.view(1, 32.0) == {"amps": 10.0, "limited_by": ["ocpp"], "sources": {"ocpp": 10.0},
                                    "charger_sources": {"ocpp": 30.0}, "at": "t1",
                                    "ocpp": {"amps": 10.0, "charger_amps": 30.0,
                                             "next_change": "2026-03-04T10:00:00+00:00", "at": "t1"}}
    assert limits.view(2, 32.0)["ocpp"]["amps"] == 16.0  # type: ignore[index]
    before = json.dumps(limits.view(1, 32.0))
    for bad in ({"msg": "charging limit", "connector": True, "amps": 5.0, "sources": {}, "charger_sources": {}},
                {"msg": "charging limit", "connector": "x", "amps": 5.0, "sources": {}, "charger_sources": {}},
                {"msg": "charging limit", "connector": 1, "amps": "5", "sources": {}, "charger_sources": {}},
                {"msg": "charging limit", "connector": 1, "amps": float("nan"), "sources": {}},
                {"msg": "charging limit", "connector": 1, "amps": 5.0, "sources": {"ocpp": "five"}},
                {"msg": "charging limit", "connector": 1, "amps": 5.0, "sources": [5]},
                {"msg": "smart charging limits", "connectors": [1, 2]}, {"msg": "charging limit"}):
        limits.feed(bad)
    assert json.dumps(limits.view(1, 32.0)) == before


@given(st.dictionaries(st.sampled_from(["msg", "connector", "amps", "sources", "charger_sources", "connectors",
                                        "charger", "next_change", "ts"]),
                       st.one_of(st.sampled_from(["charging limit", "smart charging limits"]), st.none(),
                                 st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                 st.dictionaries(st.text(max_size=3), st.one_of(st.none(), st.floats(), st.text(
                                     max_size=3)), max_size=3))))
def test_any_line_of_any_shape_is_taken_or_ignored_never_a_crash(line: dict[str, object]) -> None:
    limits = AgentLimits()
    limits.feed(line)
    for n in (0, 1, 2):
        json.dumps(limits.view(n, 32.0), allow_nan=False)  # what GET /state serves is plain JSON


def test_a_well_formed_line_with_odd_timestamps_still_serves_plain_json() -> None:
    limits = AgentLimits()
    limits.feed({"ts": float("nan"), "msg": "charging limit", "connector": 1, "amps": 6.0, "sources": {},
                 "charger_sources": {}})
    limits.feed({"ts": 5, "msg": "smart charging limits", "connectors": {"1": float("inf")}, "charger": float("nan"),
                 "next_change": 12})
    view = limits.view(1, 32.0)
    assert view is not None and (view["amps"], view["at"]) == (6.0, None)
    assert view["ocpp"] == {"amps": None, "charger_amps": None, "next_change": None, "at": None}
    json.dumps(view, allow_nan=False)


def test_agent_output_feeds_the_limits() -> None:
    out = AgentOutput()
    out.feed('{"ts": "t", "msg": "charging limit", "connector": 2, "amps": 16.0, "sources": {"site": 16.0}, '
             '"charger_sources": {}}')
    assert out.limits.view(2, 32.0)["limited_by"] == ["site"]  # type: ignore[index]
