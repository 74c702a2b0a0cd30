"""End to end: the agent on a real mosquitto broker, watched and commanded by an independent client.

Simulated hardware on ptys, the simulated CSMS, the agent as a real process and a real broker
started by the test: statuses, meter values and session events as a subscriber sees them; the
retained status after a restart; the last will on kill -9; site limits lowering the current the
board offers, the fail-safe; a broker restart mid-session; authentication; bad commands refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.mqtt_broker import Mosquitto, Subscriber
from tests.station import CP_ID, Station

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
        mark_meter = sub.mark()
        await asyncio.sleep(2.0)
        meters = [m.json() for m in sub.on(f"{ROOT}/connector/1/meter", since=mark_meter)]
        assert meters[-1]["energy_wh"] > meter1["energy_wh"] and meters[-1]["ts"] > meter1["ts"]
        assert meters[-1]["current_a"][0] > 0 and len(meters[-1]["voltage_v"]) == 3
        # one message per interval (0.5 s), not one per raw meter poll
        assert 2 <= len(meters) <= 5
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
