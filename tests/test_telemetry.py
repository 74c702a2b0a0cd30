"""MQTT telemetry's pure parts: codecs, the bounded buffer, command validation, discovery, the fail-safe."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest

from firmware.config import MqttConfig
from firmware.session import (
    ConnectorStatus,
    IdToken,
    IdTokenType,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from firmware.session.effects import StopReason, Trigger
from firmware.telemetry import payloads
from firmware.telemetry.buffer import Outgoing, PublishBuffer
from firmware.telemetry.codec import PayloadError, decode, encode
from firmware.telemetry.commands import CommandRules, Rejected, SetAvailability, SetLimit, parse_command
from firmware.telemetry.discovery import discovery_messages, node_id
from firmware.telemetry.site_control import SiteControl
from firmware.telemetry.topics import Topics
from hal.interfaces import MeterReading

T = Topics("evse", "CP-1")
RULES = CommandRules({1: 32.0, 2: 16.0}, "json", site_limits=True, local_availability=True)


# --- codec ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_codec_round_trip(fmt: str) -> None:
    value = {"status": "Charging", "current_a": [16.0, 15.9, 16.1], "energy_wh": 1234.5, "none": None}
    assert decode(encode(value, fmt), fmt) == value


def test_json_is_compact_text_and_cbor_is_smaller() -> None:
    value = {"connector": 1, "energy_wh": 123456.7, "power_w": 7360.0, "current_a": [32.0, 32.0, 32.0]}
    text = encode(value, "json")
    assert json.loads(text) == value and b" " not in text
    assert cbor2.loads(encode(value, "cbor")) == value and len(encode(value, "cbor")) < len(text)


@pytest.mark.parametrize("data, fmt, why", [
    (b"{", "json", "not valid JSON"), (b"NaN", "json", "NaN is not a JSON number"),
    (b"Infinity", "json", "Infinity is not a JSON number"), (b"\xff", "json", "not UTF-8"),
    (b"\xff\xff\xff", "cbor", "not valid CBOR"), (b"", "cbor", "not valid CBOR"),
])
def test_decode_refuses_malformed_payloads(data: bytes, fmt: str, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        decode(data, fmt)


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode({"x": math.nan}, "json")


# --- buffer ---------------------------------------------------------------------------------------

def test_buffer_drops_the_oldest_first_and_counts() -> None:
    buf = PublishBuffer(3)
    for i in range(5):
        buf.put(Outgoing("t", str(i).encode()))
    assert len(buf) == 3 and buf.dropped == 2
    head = buf.head()
    assert head is not None and head.payload == b"2"
    buf.done(head)
    nxt = buf.head()
    assert nxt is not None and nxt.payload == b"3"
    assert buf.stats().queued == 2 and buf.stats().published == 1


def test_buffer_message_in_flight_dropped_meanwhile_is_not_popped_twice() -> None:
    buf = PublishBuffer(2)
    buf.put(Outgoing("t", b"a"))
    in_flight = buf.head()
    assert in_flight is not None
    buf.put(Outgoing("t", b"b"))
    buf.put(Outgoing("t", b"c"))  # drops "a", the one being sent
    buf.done(in_flight)
    assert [buf.head().payload if buf.head() else None] == [b"b"] and len(buf) == 2  # type: ignore[union-attr]


def test_buffer_needs_room() -> None:
    with pytest.raises(ValueError):
        PublishBuffer(0)


# --- commands -------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic, payload, expected", [
    ("evse/CP-1/cmd/connector/1/limit", b"16", SetLimit(1, 16.0)),
    ("evse/CP-1/cmd/connector/2/limit", b'{"amps": 6.5}', SetLimit(2, 6.5)),
    ("evse/CP-1/cmd/connector/2/limit", b"16", SetLimit(2, 16.0)),
    ("evse/CP-1/cmd/connector/1/limit", b"0", SetLimit(1, 0.0)),
    ("evse/CP-1/cmd/connector/1/limit", b"null", SetLimit(1, None)),
    ("evse/CP-1/cmd/limit", b'{"amps": null}', SetLimit(None, None)),
    ("evse/CP-1/cmd/limit", b"48", SetLimit(None, 48.0)),
    ("evse/CP-1/cmd/connector/1/available", b"OFF", SetAvailability(1, False)),
    ("evse/CP-1/cmd/connector/1/available", b"true", SetAvailability(1, True)),
    ("evse/CP-1/cmd/available", b'{"operative": false}', SetAvailability(None, False)),
])
def test_valid_commands(topic: str, payload: bytes, expected: object) -> None:
    assert parse_command(topic, payload, T, RULES) == expected


@pytest.mark.parametrize("topic, payload, reason", [
    ("evse/CP-1/cmd/connector/1/limit", b"-0.5", "(negative)"),
    ("evse/CP-1/cmd/connector/2/limit", b"17", "from 0 to 16 (connector 2's rating); got 17"),
    ("evse/CP-1/cmd/limit", b"48.5", "from 0 to 48 (the sum of the connectors' ratings)"),
    ("evse/CP-1/cmd/connector/1/limit", b"NaN", "NaN is not a JSON number"),
    ("evse/CP-1/cmd/connector/1/limit", b"1e999", "expected a finite number"),
    ("evse/CP-1/cmd/connector/1/limit", b'"16"', "expected a number of amperes or null; got '16'"),
    ("evse/CP-1/cmd/connector/1/limit", b"true", "expected a number of amperes or null; got True"),
    ("evse/CP-1/cmd/connector/1/limit", b"[16]", "expected a number of amperes or null"),
    ("evse/CP-1/cmd/connector/1/limit", b'{"amp": 16}', "exactly the key 'amps'"),
    ("evse/CP-1/cmd/connector/1/limit", b"", "malformed payload"),
    ("evse/CP-1/cmd/connector/1/limit", b"1" * 2000, "payload too large"),
    ("evse/CP-1/cmd/connector/3/limit", b"10", "unknown connector 3"),
    ("evse/CP-1/cmd/connector/x/limit", b"10", "unknown command topic"),
    ("evse/CP-1/cmd/connector/1/limit/extra", b"10", "unknown command topic"),
    ("evse/CP-1/cmd/stop", b"1", "unknown command topic"),
    ("evse/CP-2/cmd/limit", b"1", "not a command topic"),
    ("evse/CP-1/cmd/connector/1/available", b"maybe", "malformed payload"),
    ("evse/CP-1/cmd/connector/1/available", b"1", "expected true, false"),
    ("evse/CP-1/cmd/available", b'{"operative": "yes"}', "expected true, false"),
])
def test_bad_commands_are_rejected_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    result = parse_command(topic, payload, T, RULES)
    assert isinstance(result, Rejected) and result.topic == topic
    assert reason in result.reason


def test_disabled_commands_are_rejected() -> None:
    rules = CommandRules({1: 32.0}, "json", site_limits=False, local_availability=False)
    for topic, kind in (("evse/CP-1/cmd/limit", "mqtt.site_limits"),
                        ("evse/CP-1/cmd/connector/1/available", "mqtt.local_availability")):
        result = parse_command(topic, b"10", T, rules)
        assert isinstance(result, Rejected) and kind in result.reason


def test_cbor_commands() -> None:
    rules = CommandRules({1: 32.0}, "cbor")
    assert parse_command("evse/CP-1/cmd/limit", cbor2.dumps({"amps": 10}), T, rules) == SetLimit(None, 10.0)
    bad = parse_command("evse/CP-1/cmd/limit", cbor2.dumps(math.nan), T, rules)
    assert isinstance(bad, Rejected) and "finite" in bad.reason
    garbage = parse_command("evse/CP-1/cmd/limit", b"\x9f\x9f", T, rules)
    assert isinstance(garbage, Rejected) and "not valid CBOR" in garbage.reason


# --- payloads and discovery -----------------------------------------------------------------------

def test_session_payloads_carry_energy_duration_and_a_masked_token() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    card = IdToken("04A1B2C3", IdTokenType.ISO14443)
    started = TransactionStarted(local_id=3, id_token=card, trigger=Trigger.AUTHORIZED)
    stopped = TransactionStopped(local_id=3, reason=StopReason.LOCAL, trigger=Trigger.STOP_AUTHORIZED,
                                 id_token=card)
    a = payloads.session_started(1, started, t0, 1000.0)
    b = payloads.session_stopped(1, stopped, t0 + timedelta(minutes=90), meter_stop_wh=12500.4,
                                 meter_start_wh=1000.0, started_at=t0)
    assert a["event"] == "started" and a["session"] == 3 and a["id_token"] == b["id_token"] == "***B2C3"
    assert b["energy_wh"] == 11500.4 and b["duration_s"] == 5400.0 and b["reason"] == "Local"
    unknown = payloads.session_stopped(1, stopped, t0, meter_stop_wh=5.0, meter_start_wh=None, started_at=None)
    assert unknown["energy_wh"] is None and unknown["duration_s"] is None


def test_meter_payload_turns_a_meter_s_garbage_into_null_not_an_unencodable_nan() -> None:
    reading = MeterReading("m", datetime(2026, 1, 1, tzinfo=UTC), 1234.56, math.nan, (16.004, math.inf),
                           (230.04, 229.96), None)
    p = payloads.meter(1, reading)
    assert p["energy_wh"] == 1234.6 and p["power_w"] is None and p["current_a"] == [16.0, None]
    assert "frequency_hz" not in p
    assert json.loads(encode(p, "json"))["voltage_v"] == [230.0, 230.0]


def test_status_payload() -> None:
    change = StatusChanged(ConnectorStatus.CHARGING, ev_connected=True)
    p = payloads.status(2, change, datetime(2026, 1, 1, tzinfo=UTC), 16.0)
    assert p == {"connector": 2, "status": "Charging", "ev_connected": True, "error_code": "NoError", "info": "",
                 "offered_a": 16.0, "ts": "2026-01-01T00:00:00.000+00:00"}


def test_discovery_one_device_per_connector_with_its_entities() -> None:
    topics = Topics("evse", "CP 1.x")
    msgs = dict(discovery_messages(topics, "homeassistant", {1: 32.0, 2: 16.0}, vendor="V", model="M",
                                   sw_version="1.0", site_limits=True, local_availability=False))
    node = node_id("CP 1.x")
    assert node == "CP_1_x"
    assert all(t.startswith("homeassistant/") and t.endswith("/config") and f"/{node}/" in t for t in msgs)
    power = msgs[f"homeassistant/sensor/{node}/connector1_power/config"]
    assert power["state_topic"] == "evse/CP 1.x/connector/1/meter" and power["unit_of_measurement"] == "W"
    assert power["availability_topic"] == topics.availability and power["device"]["identifiers"] == [f"{node}_1"]
    energy = msgs[f"homeassistant/sensor/{node}/connector2_energy/config"]
    assert energy["state_class"] == "total_increasing" and energy["device_class"] == "energy"
    number = msgs[f"homeassistant/number/{node}/connector2_site_limit/config"]
    assert number["command_topic"] == topics.connector_limit_command(2) and number["max"] == 16.0
    assert not any("/switch/" in t for t in msgs)  # local availability off: no switch
    unique = [c["unique_id"] for c in msgs.values()]
    assert len(unique) == len(set(unique))
    with_switch = discovery_messages(topics, "ha", {1: 32.0}, vendor="V", model="M", sw_version="1",
                                     site_limits=False, local_availability=True)
    kinds = {t.split("/")[1] for t, _ in with_switch}
    assert "switch" in kinds and "number" not in kinds


# --- the fail-safe --------------------------------------------------------------------------------

class _Applier:
    def __init__(self) -> None:
        from firmware.charger.limits import ChargingLimits
        self.limits = ChargingLimits({1: 32.0, 2: 32.0})

    def set(self, source: str, amps: float, connector: int | None = None) -> None:
        self.limits.set(source, amps, connector)

    def clear(self, source: str, connector: int | None = None) -> None:
        self.limits.clear(source, connector)

    def clear_everywhere(self, source: str) -> None:
        self.limits.clear_everywhere(source)


def _site(timeout: float | None = 10.0, limit: float | None = 8.0) -> tuple[SiteControl, _Applier, list[Any],
                                                                             list[float]]:
    clock = [0.0]
    events: list[Any] = []
    applier = _Applier()
    cfg = MqttConfig(host="h", port=1883, failsafe_timeout_s=timeout, failsafe_limit_a=limit)
    site = SiteControl(cfg, applier, events.append, clock=lambda: clock[0])  # type: ignore[arg-type]
    return site, applier, events, clock


def test_failsafe_applies_from_start_until_the_energy_manager_speaks_then_after_silence() -> None:
    site, applier, events, clock = _site()
    site.start()
    assert site.failsafe_active and applier.limits.effective() == {1: 8.0, 2: 8.0}  # nobody has an EV: 8 each
    applier.limits.set_sharing([1, 2])
    assert applier.limits.effective() == {1: 4.0, 2: 4.0}
    clock[0] = 3.0
    site.set_limit(SetLimit(1, 20.0))
    assert not site.failsafe_active and applier.limits.effective() == {1: 20.0, 2: 32.0}
    assert [e["event"] for e in events] == ["failsafe_engaged", "failsafe_released"]
    clock[0] = 12.9
    assert not site.check()
    clock[0] = 13.0
    assert site.check() and site.failsafe_active
    assert applier.limits.effective() == {1: 4.0, 2: 4.0}  # the site's 20 A cap is gone, the fail-safe rules
    assert events[-1]["event"] == "failsafe_engaged" and "10 s" in events[-1]["reason"]
    assert not site.check()  # engaged once, not again


def test_without_failsafe_site_limits_stay_until_changed() -> None:
    site, applier, events, clock = _site(None, None)
    site.start()
    assert not site.failsafe_active and applier.limits.effective() == {1: 32.0, 2: 32.0}
    site.set_limit(SetLimit(None, 40.0))
    clock[0] = 1e6
    assert not site.check() and applier.limits.charger_limit == 40.0 and events == []
    site.set_limit(SetLimit(None, None))
    assert applier.limits.charger_limit is None


def test_record_never_raises_into_the_billing_commit() -> None:
    """``record`` runs inside the connector's durable commit: a telemetry failure must not roll billing back."""
    from types import SimpleNamespace

    from firmware.charger.limit_applier import LimitApplier
    from firmware.config import AgentConfig
    from firmware.telemetry.service import MqttTelemetry

    class BrokenLedger:
        def get(self, connector: int, local_id: int) -> None:
            raise RuntimeError("boom")

    ctrl = SimpleNamespace(id=1, config=SimpleNamespace(max_current_amps=32.0))
    connectors: Any = {1: ctrl}
    cfg = AgentConfig(path="a.toml", charge_point_id="CP", state_dir="/tmp",
                      mqtt=MqttConfig(host="127.0.0.1", port=1))
    telemetry = MqttTelemetry(cfg, connectors, LimitApplier(connectors), health=dict,
                              ledger=BrokenLedger())  # type: ignore[arg-type]
    card = IdToken("04A1B2C3", IdTokenType.ISO14443)
    stopped = TransactionStopped(local_id=7, reason=StopReason.POWER_LOSS, trigger=Trigger.ABNORMAL_CONDITION,
                                 id_token=card)
    telemetry.record(ctrl, [stopped], None, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    started = TransactionStarted(local_id=8, id_token=card, trigger=Trigger.AUTHORIZED)
    telemetry.record(ctrl, [started], None, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    assert [e["event"] for e in telemetry._pending[1]] == ["started"]
