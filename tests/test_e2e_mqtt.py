"""End to end: the agent on a real mosquitto broker, watched and commanded by an independent client.

Simulated hardware on ptys, the simulated CSMS, the agent as a real process and a real broker
started by the test: statuses, meter values and session events as a subscriber sees them; the
retained status after a restart; the last will on kill -9; site limits lowering the current the
board offers, the fail-safe; a broker restart mid-session; authentication; bad commands refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import cbor2

from tests.mqtt_broker import Mosquitto, Subscriber, make_tls_files
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"
ROOT = f"evse/{CP_ID}"


def mqtt_section(broker: Mosquitto, **extra: object) -> str:
    lines = [f'url = "mqtt://127.0.0.1:{broker.port}"', "meter_interval_s = 0.5", "health_interval_s = 1",
             "reconnect_min_s = 0.1", "reconnect_max_s = 0.5", "keepalive_s = 5"]
    for key, value in extra.items():
        lines.append(f"{key} = {value!r}".replace("'", '"') if not isinstance(value, bool)
                     else f"{key} = {str(value).lower()}")
    return "\n[mqtt]\n" + "\n".join(lines) + "\n"


async def test_status_meter_values_and_session_events_reach_a_subscriber(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, f"{ROOT}/#") as sub, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(broker)) as s:
        await s.start_agent()
        online = await sub.wait_for(f"{ROOT}/availability")
        assert online.payload == b"online"
        status = await sub.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Available")
        assert status.json()["ev_connected"] is False
        mark = sub.mark()
        await s.start_session(1, CARD)
        charging = await sub.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Charging",
                                      since=mark)
        assert charging.json()["offered_a"] > 0
        started = (await sub.wait_for(f"{ROOT}/connector/1/session", since=mark)).json()
        assert started["event"] == "started" and started["id_token"].endswith(CARD[-4:])
        assert CARD not in started["id_token"]  # masked: it identifies a person
        meter1 = (await sub.wait_for(f"{ROOT}/connector/1/meter", lambda m: m.json()["power_w"] > 0,
                                     since=mark)).json()
        loop = asyncio.get_running_loop()
        mark_meter, since = sub.mark(), loop.time()
        await s.wait_until(lambda: len(sub.on(f"{ROOT}/connector/1/meter", since=mark_meter)) >= 2,
                           what="two more meter messages")
        await asyncio.sleep(max(0.0, 2.0 - (loop.time() - since)))  # counted over 2 s at least
        meters = [m.json() for m in sub.on(f"{ROOT}/connector/1/meter", since=mark_meter)]
        elapsed = loop.time() - since
        assert meters[-1]["energy_wh"] > meter1["energy_wh"] and meters[-1]["ts"] > meter1["ts"]
        assert meters[-1]["current_a"][0] > 0 and len(meters[-1]["voltage_v"]) == 3
        # one message per interval (0.5 s), not one per raw meter poll
        assert 2 <= len(meters) <= elapsed / 0.5 + 1, (len(meters), elapsed)
        mark = sub.mark()
        s.ev(1).unplug()
        stop = await s.wait_call("StopTransaction")
        stopped = (await sub.wait_for(f"{ROOT}/connector/1/session", since=mark)).json()
        assert stopped["event"] == "stopped" and stopped["reason"] == "EVDisconnected"
        # the same readings as the billing data (OCPP rounds to whole Wh)
        assert abs(stopped["meter_stop_wh"] - stop.payload["meterStop"]) <= 0.5
        assert stopped["energy_wh"] == round(stopped["meter_stop_wh"] - started["meter_start_wh"], 1) > 0
        assert stopped["duration_s"] > 1
        health = (await sub.wait_for(f"{ROOT}/health", lambda m: m.json()["ocpp_connected"])).json()
        assert health["mqtt"]["dropped"] == 0 and health["outbox"]["queued"] == 0
        assert health["devices"] and health["uptime_s"] >= 0


async def test_retained_status_last_will_on_kill_and_online_again_after_restart(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(broker)) as s:
        async with Subscriber(broker, f"{ROOT}/#") as sub:
            await s.start_agent()
            await sub.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
            await s.start_session(1, CARD)
            await sub.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Charging")
            mark = sub.mark()
            await s.kill_agent()  # kill -9: no clean disconnect, the broker publishes the last will
            will = await sub.wait_for(f"{ROOT}/availability", since=mark)
            assert will.payload == b"offline"
        # a client arriving later learns from retained messages: the agent is gone, the connector was charging
        async with Subscriber(broker, f"{ROOT}/#") as late:
            await late.wait_for(f"{ROOT}/availability", lambda m: m.retain and m.payload == b"offline")
            await late.wait_for(f"{ROOT}/connector/1/status",
                                lambda m: m.retain and m.json()["status"] == "Charging")
            mark = late.mark()
            await s.start_agent()
            await late.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online", since=mark)
            # the restart stops the transaction cut by the power loss; the new status replaces the retained one
            stopped = (await late.wait_for(f"{ROOT}/connector/1/session", since=mark)).json()
            assert stopped["event"] == "stopped" and stopped["reason"] == "PowerLoss"
            # its start is from before the restart: energy and duration come from the billing record
            stop = await s.wait_call("StopTransaction")
            assert stopped["energy_wh"] is not None and stopped["energy_wh"] >= 0 and stopped["duration_s"] > 0
            assert abs(stopped["meter_stop_wh"] - stop.payload["meterStop"]) <= 0.5
            await s.wait_status(1, "Finishing")  # EV still plugged in, the transaction ended
            after = await late.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Finishing",
                                        since=mark)
        async with Subscriber(broker, f"{ROOT}/connector/1/status") as fresh:
            retained = await fresh.wait_for(f"{ROOT}/connector/1/status", lambda m: m.retain)
            assert retained.json() == after.json()
        await s.stop_agent()
        async with Subscriber(broker, f"{ROOT}/availability") as after_stop:
            gone = await after_stop.wait_for(f"{ROOT}/availability", lambda m: m.retain)
            assert gone.payload == b"offline"  # a clean stop says so too (a DISCONNECT fires no last will)


def _offered(s: Station, connector: int) -> float:
    return float(s.charger.connectors[connector].board.offered_current_a)


async def _offered_within(s: Station, connector: int, amps: float, timeout_s: float = WAIT_S) -> float:
    """Seconds until the simulated board offers ``amps`` (PWM duty on the pilot, to its 0.1 A resolution),
    failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await s.wait_until(lambda: abs(_offered(s, connector) - amps) < 0.1, timeout_s,
                       f"connector {connector} offers {amps} A (offers {_offered(s, connector)} A)")
    return loop.time() - t0


class _EnergyManager:
    """The energy manager's limit commands. While :meth:`speaking` it repeats each topic's latest command every
    0.5 s, as the fail-safe requires of it, so that no slow step of the test looks like silence to the agent."""

    def __init__(self, client: Subscriber) -> None:
        self.client = client
        self.latest: dict[str, str] = {}

    async def command(self, topic: str, payload: str) -> None:
        self.latest[topic] = payload
        await self.client.publish(topic, payload)

    @contextlib.asynccontextmanager
    async def speaking(self) -> AsyncIterator[None]:
        silent = asyncio.Event()

        async def repeat() -> None:
            # ``silent`` as well as the cancel: on Python 3.11 a cancel that lands as aiomqtt's publish completes is
            # swallowed by its asyncio.wait_for (gh-86296), and the manager would never fall silent
            while not silent.is_set():
                await asyncio.sleep(0.5)
                for topic in list(self.latest):
                    if silent.is_set():
                        return
                    await self.client.publish(topic, self.latest[topic])  # read and sent in one step: the latest

        task = asyncio.create_task(repeat())
        try:
            yield
        finally:
            silent.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_site_limit_lowers_the_offered_current_within_1s_and_the_failsafe_takes_over(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, f"{ROOT}/#") as em, \
            Station(tmp_path, connectors=2, extra_config=mqtt_section(
                broker, failsafe_timeout_s=2.0, failsafe_limit_a=20.0)) as s:
        await s.start_agent()
        await em.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        # until the energy manager speaks, the fail-safe limit applies (20 A for the whole charger)
        await s.start_session(1, CARD)
        await _offered_within(s, 1, 20.0)
        manager = _EnergyManager(em)
        async with manager.speaking():
            # the energy manager caps connector 1 at 10 A: the pilot offers 10 A within 1 s
            mark = em.mark()
            await manager.command(f"{ROOT}/cmd/connector/1/limit", "10")
            assert await _offered_within(s, 1, 10.0) < 1.0
            reply = (await em.wait_for(f"{ROOT}/reply", since=mark)).json()
            assert reply["accepted"] is True and reply["topic"] == f"{ROOT}/cmd/connector/1/limit"
            released = await em.wait_for(f"{ROOT}/event", lambda m: m.json()["event"] == "failsafe_released")
            assert released.json()["event"] == "failsafe_released"
            state = (await em.wait_for(f"{ROOT}/connector/1/limit", lambda m: m.json()["limit_a"] == 10,
                                       since=mark)).json()
            assert state["sources"] == {"site": 10.0} and state["failsafe"] is False
            # the site's limit bounds the composite schedule the CSMS asks for (§5.7: "possible local limits")
            composite = await s.csms.call(CP_ID, "GetCompositeSchedule",
                                          {"connectorId": 1, "duration": 600, "chargingRateUnit": "A"})
            assert composite["status"] == "Accepted"
            assert [p["limit"] for p in composite["chargingSchedule"]["chargingSchedulePeriod"]] == [10.0]
            # a whole-charger limit of 24 A with a second EV: shared, 12 A each, but connector 1 keeps its 10 A
            # cap and leaves the rest to connector 2 (14 A)
            await manager.command(f"{ROOT}/cmd/limit", '{"amps": 24}')
            await s.start_session(2, "04D4E5F6")
            await _offered_within(s, 2, 14.0)
            assert abs(_offered(s, 1) - 10.0) < 0.1
            # the connector's own limit removed: 12 A each
            await manager.command(f"{ROOT}/cmd/connector/1/limit", "null")
            await _offered_within(s, 1, 12.0)
            await _offered_within(s, 2, 12.0)
        # the energy manager falls silent: after 2 s the fail-safe (20 A for the charger: 10 A each) takes over
        mark = em.mark()
        engaged = await em.wait_for(f"{ROOT}/event", lambda m: m.json()["event"] == "failsafe_engaged",
                                    since=mark)
        assert engaged.json()["limit_a"] == 20.0
        await _offered_within(s, 1, 10.0)
        await _offered_within(s, 2, 10.0)
        state = (await em.wait_for(f"{ROOT}/connector/2/limit", lambda m: m.json()["failsafe"], since=mark)).json()
        assert state["limit_a"] == 10.0 and state["charger_sources"] == {"failsafe": 20.0}
        assert any(line.get("msg") == "site limit fail-safe engaged" for line in s.log())
        # charging went on throughout: both transactions still open
        assert not s.calls("StopTransaction") and s.statuses(1)[-1] == "Charging"


async def test_broker_restart_mid_session_charging_goes_on_and_drops_are_counted(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, \
            Station(tmp_path, connectors=1, presets={"MeterValueSampleInterval": 1},
                    extra_config=mqtt_section(broker, buffer_size=4)) as s:
        async with Subscriber(broker, f"{ROOT}/#") as sub:
            await s.start_agent()
            await s.start_session(1, CARD)
            await sub.wait_for(f"{ROOT}/connector/1/meter", lambda m: m.json()["power_w"] > 0)
        seen = len(s.log())
        await broker.stop()
        mark = s.mark()
        # meter values (every 0.5 s) and health (every 1 s) pile up: at most 4 kept, the oldest dropped
        await s.wait_log(lambda e: e.get("msg") == "MQTT broker unreachable, retrying" and e["dropped"] > 0,
                         since=seen, what="telemetry dropped while the broker is away")
        # charging and billing never noticed: meter values went on to the CSMS, no stop, still Charging
        await s.wait_until(lambda: len(s.calls("MeterValues", mark)) >= 2, what="meter values to the CSMS")
        assert not s.calls("StopTransaction") and s.statuses(1)[-1] == "Charging"
        assert s.agent_running
        await broker.start()  # same port
        async with Subscriber(broker, f"{ROOT}/#") as sub:
            health = (await sub.wait_for(f"{ROOT}/health", lambda m: m.json()["mqtt"]["connects"] >= 2)).json()
            assert health["mqtt"]["dropped"] > 0  # the oldest telemetry went, counted
            meter = await sub.wait_for(f"{ROOT}/connector/1/meter", lambda m: m.json()["power_w"] > 0)
            assert meter.json()["energy_wh"] > 0
            # the broker lost its retained messages (no persistence): the agent published its state again
            status = await sub.wait_for(f"{ROOT}/connector/1/status")
            assert status.json()["status"] == "Charging"
            await sub.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        assert not s.calls("StopTransaction")
        assert any(line.get("msg") == "MQTT broker unreachable, retrying" for line in s.log())


async def test_username_and_password_and_the_password_never_logged(tmp_path: Path) -> None:
    users = {"charger": "charger-secret-4711", "em": "em-secret-0815"}
    async with Mosquitto(tmp_path / "broker", users=users) as broker, \
            Subscriber(broker, f"{ROOT}/#", username="em", password=users["em"]) as sub, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(
                broker, username="charger", password=users["charger"])) as s:
        await s.start_agent()
        await sub.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        await sub.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Available")
        await s.stop_agent()
        assert users["charger"] not in s.log_path.read_text()
        # the broker really requires it: an anonymous client is refused
        anonymous = Subscriber(broker, "#")
        try:
            async with anonymous:
                raise AssertionError("an anonymous client was let in")
        except aiomqtt.MqttError as exc:
            assert "not authorized" in str(exc).lower()


async def test_wrong_password_charging_goes_on_and_the_agent_keeps_trying(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker", users={"charger": "right-password-1"}) as broker, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(
                broker, username="charger", password="wrong-password-2")) as s:
        await s.start_agent()
        await s.start_session(1, CARD)
        def refusals() -> int:
            return sum(line.get("msg") == "MQTT broker unreachable, retrying" for line in s.log())
        await s.wait_until(lambda: refusals() >= 2, what="two refused connection attempts")
        assert s.statuses(1)[-1] == "Charging"
        assert "wrong-password-2" not in s.log_path.read_text()


async def test_malformed_and_out_of_range_commands_are_refused_with_a_reason(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, f"{ROOT}/#") as em, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(broker)) as s:
        await s.start_agent()
        await em.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        limit = f"{ROOT}/cmd/connector/1/limit"
        # a limit published with the retain flag is applied when it arrives live ...
        mark = em.mark()
        await em.publish(limit, b"8", retain=True)
        await em.wait_for(f"{ROOT}/connector/1/limit", lambda m: m.json()["limit_a"] == 8, since=mark)
        # ... but the broker replays it at every (re)subscribe, however old: then it is refused
        await s.stop_agent()
        mark = em.mark()
        await s.start_agent()
        reply = (await em.wait_for(f"{ROOT}/reply", since=mark)).json()
        assert reply["accepted"] is False and "retained commands are refused" in reply["reason"]
        await em.publish(limit, b"", retain=True)  # clears the broker's retained copy
        await s.start_session(1, CARD)
        await _offered_within(s, 1, 32.0)  # site limits are not kept across a restart (docs/mqtt.md)
        bad: list[tuple[str, bytes, str]] = [
            (limit, b"abc", "malformed payload: not valid JSON"),
            (limit, b"-5", "got -5 (negative)"),
            (limit, b"40", "expected a number from 0 to 32"),
            (limit, b"NaN", "NaN is not a JSON number"),
            (limit, b'{"amps": true}', "expected a number of amperes or null"),
            (limit, b'{"amps": 10, "phases": 1}', "exactly the key 'amps'"),
            (limit, b"\xff\xfe\x00", "not UTF-8"),
            (f"{ROOT}/cmd/limit", b"65", "sum of the connectors' ratings"),
            (f"{ROOT}/cmd/connector/9/limit", b"10", "unknown connector 9"),
            (f"{ROOT}/cmd/reboot", b"1", "unknown command topic"),
            (f"{ROOT}/cmd/available", b"false", "local availability control is disabled"),
        ]
        for topic, payload, reason in bad:
            mark = em.mark()
            await em.publish(topic, payload)
            reply = (await em.wait_for(f"{ROOT}/reply", since=mark)).json()
            assert reply["accepted"] is False and reply["topic"] == topic, reply
            assert reason in reply["reason"], (reason, reply)
        # nothing was applied, nothing crashed: still 32 A, the agent alive and answering
        assert abs(_offered(s, 1) - 32.0) < 0.1 and s.agent_running
        rejected = [line for line in s.log() if line.get("msg") == "MQTT command rejected"]
        # + the replayed retained limit and the empty payload that cleared it (delivered live: malformed)
        assert len(rejected) == len(bad) + 2 and all(line["reason"] for line in rejected)
        mark = em.mark()
        await em.publish(limit, b'{"amps": 16}')
        assert (await em.wait_for(f"{ROOT}/reply", since=mark)).json()["accepted"] is True
        await _offered_within(s, 1, 16.0)


async def test_local_availability_and_ocpp_change_availability_either_inoperative_wins(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, f"{ROOT}/#") as em, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(broker, local_availability=True)) as s:
        await s.start_agent()
        await em.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        status = f"{ROOT}/connector/1/status"
        mark, m = s.mark(), em.mark()
        await em.publish(f"{ROOT}/cmd/connector/1/available", "OFF")
        await s.wait_status(1, "Unavailable", since=mark)  # the CSMS is told, as for its own ChangeAvailability
        await em.wait_for(status, lambda x: x.json()["status"] == "Unavailable", since=m)
        # the CSMS asks Operative: recorded, but the site still holds the connector inoperative
        mark = s.mark()
        assert (await s.csms.change_availability(CP_ID, 1, "Operative"))["status"] == "Accepted"
        await s.quiet(0.5)
        assert s.statuses(1, mark) == []
        # the site releases it: operative again
        await em.publish(f"{ROOT}/cmd/connector/1/available", '{"operative": true}')
        await s.wait_status(1, "Available", since=mark)
        # the CSMS makes it inoperative: the site cannot override that
        mark = s.mark()
        assert (await s.csms.change_availability(CP_ID, 1, "Inoperative"))["status"] == "Accepted"
        await s.wait_status(1, "Unavailable", since=mark)
        m = em.mark()
        await em.publish(f"{ROOT}/cmd/connector/1/available", "ON")
        assert (await em.wait_for(f"{ROOT}/reply", since=m)).json()["accepted"] is True
        await s.quiet(0.5)
        assert s.statuses(1, mark) == ["Unavailable"]
        # both holds survive a restart; the site's hold persists until the site releases it
        m = em.mark()
        await em.publish(f"{ROOT}/cmd/connector/1/available", "OFF")
        assert (await em.wait_for(f"{ROOT}/reply", since=m)).json()["accepted"] is True
        assert (await s.csms.change_availability(CP_ID, 1, "Operative"))["status"] == "Accepted"
        await s.stop_agent()
        mark = s.mark()
        await s.start_agent()
        await s.quiet(0.5)
        assert s.statuses(1, mark) == ["Unavailable"]
        await em.publish(f"{ROOT}/cmd/connector/1/available", "ON")
        await s.wait_status(1, "Available", since=mark)
        # local control switched off in the configuration: a hold the site left behind is released at start
        m = em.mark()
        await em.publish(f"{ROOT}/cmd/connector/1/available", "OFF")
        await em.wait_for(status, lambda x: x.json()["status"] == "Unavailable", since=m)
        await s.stop_agent()
        s.config_path.write_text(s.config_path.read_text().replace("local_availability = true\n", ""))
        mark = s.mark()
        await s.start_agent()
        await s.wait_status(1, "Available", since=mark)


async def test_mqtts_with_a_ca_file_and_an_untrusted_broker_refused(tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path / "tls")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with Mosquitto(tmp_path / "broker", tls=(cert, key)) as broker, \
            Subscriber(broker, f"{ROOT}/#", ca_file=ca) as sub:
        section = mqtt_section(broker, ca_file=str(ca)).replace("mqtt://", "mqtts://")
        async with Station(tmp_path / "a", connectors=1, extra_config=section) as s:
            await s.start_agent()
            await sub.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
            await sub.wait_for(f"{ROOT}/connector/1/status", lambda m: m.json()["status"] == "Available")
        # without the CA the broker's certificate is not trusted: no connection, and the agent runs on
        other_ca, _, _ = make_tls_files(tmp_path / "other")
        section = mqtt_section(broker, ca_file=str(other_ca)).replace("mqtt://", "mqtts://")
        async with Station(tmp_path / "b", connectors=1, extra_config=section) as s:
            await s.start_agent()
            refused = await s.wait_log(lambda e: e.get("msg") == "MQTT broker unreachable, retrying",
                                       what="the untrusted broker refused")
            assert "CERTIFICATE_VERIFY_FAILED" in refused["error"]
            assert s.agent_running


async def test_cbor_payloads_and_no_discovery_then_json_with_home_assistant_discovery(tmp_path: Path) -> None:
    async with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, "#") as sub:
        async with Station(tmp_path, connectors=1, extra_config=mqtt_section(broker, payload_format="cbor")) as s:
            await s.start_agent()
            status = await sub.wait_for(f"{ROOT}/connector/1/status")
            assert cbor2.loads(status.payload)["status"] == "Available"
            health = await sub.wait_for(f"{ROOT}/health")
            assert cbor2.loads(health.payload)["mqtt"]["dropped"] == 0
            m = sub.mark()
            await sub.publish(f"{ROOT}/cmd/connector/1/limit", cbor2.dumps({"amps": 13.0}))
            assert cbor2.loads((await sub.wait_for(f"{ROOT}/reply", since=m)).payload)["accepted"] is True
            assert not [x for x in sub.seen if x.topic.startswith("homeassistant/")]
            await s.stop_agent()
        async with Station(tmp_path, connectors=1, extra_config=mqtt_section(broker)) as s:
            m = sub.mark()
            await s.start_agent()
            config = await sub.wait_for("homeassistant/sensor/E2E-CP-1/connector1_power/config", since=m)
            assert config.json()["state_topic"] == f"{ROOT}/connector/1/meter"
            number = await sub.wait_for("homeassistant/number/E2E-CP-1/connector1_site_limit/config", since=m)
            assert number.json()["command_topic"] == f"{ROOT}/cmd/connector/1/limit"
            async with Subscriber(broker, "homeassistant/#") as home_assistant:  # arriving later: retained
                late = await home_assistant.wait_for("homeassistant/sensor/E2E-CP-1/connector1_energy/config")
                assert late.retain and late.json()["device_class"] == "energy"


async def test_mqtts_with_a_client_certificate(tmp_path: Path) -> None:
    """Mutual TLS to the site broker: the broker asks for a certificate from its CA; the charger with one is let
    in, one without is refused and charges on."""
    from sim.harness.pki import issue_charge_point_cert, make_ca

    ca, cert, key = make_tls_files(tmp_path / "tls")
    clients = make_ca(tmp_path / "clients", "Site clients")
    mine = issue_charge_point_cert(clients, tmp_path / "clients", "charger-1")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with Mosquitto(tmp_path / "broker", tls=(cert, key), client_ca=clients.path) as broker, \
            Subscriber(broker, f"{ROOT}/#", ca_file=ca, client_cert=(mine.cert, mine.key)) as sub:
        section = mqtt_section(broker, ca_file=str(ca), client_cert=str(mine.cert), client_key=str(mine.key))
        async with Station(tmp_path / "a", connectors=1, extra_config=section.replace("mqtt://", "mqtts://")) as s:
            await s.start_agent()
            await sub.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
        section = mqtt_section(broker, ca_file=str(ca)).replace("mqtt://", "mqtts://")
        async with Station(tmp_path / "b", connectors=1, extra_config=section) as s:
            await s.start_agent()
            await s.wait_log(lambda e: e.get("msg") == "MQTT broker unreachable, retrying",
                             what="refused without a client certificate")
            assert s.agent_running
