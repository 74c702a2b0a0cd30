"""Home Assistant MQTT discovery: each connector appears as a device with its sensors. Pure.

Config messages go to ``<prefix>/<component>/<node>/<object>/config`` (retained), JSON always (Home
Assistant reads only JSON there). Their state templates read JSON states, so discovery is published
only with ``payload_format = "json"`` (docs/mqtt.md).
"""

from __future__ import annotations

import re
from typing import Any

from firmware.telemetry.topics import Topics


def node_id(charge_point_id: str) -> str:
    """Home Assistant's node and object ids allow [a-zA-Z0-9_-] only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", charge_point_id)


def discovery_messages(topics: Topics, prefix: str, ratings: dict[int, float], *, vendor: str, model: str,
                       sw_version: str, site_limits: bool,
                       local_availability: bool) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for every entity of every connector."""
    node = node_id(topics.charge_point_id)
    out: list[tuple[str, dict[str, Any]]] = []
    for cid, rating in sorted(ratings.items()):
        device = {"identifiers": [f"{node}_{cid}"], "name": f"{topics.charge_point_id} connector {cid}",
                  "manufacturer": vendor, "model": model, "sw_version": sw_version}
        common = {"availability_topic": topics.availability, "payload_available": "online",
                  "payload_not_available": "offline", "device": device}

        def entity(component: str, key: str, name: str, cid: int = cid, common: dict[str, Any] = common,
                   **fields: Any) -> None:
            object_id = f"connector{cid}_{key}"
            config = {"name": name, "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}",
                      **common, **fields}
            out.append((f"{prefix}/{component}/{node}/{object_id}/config", config))

        entity("sensor", "status", "Status", state_topic=topics.status(cid),
               value_template="{{ value_json.status }}", icon="mdi:ev-station")
        entity("sensor", "power", "Power", state_topic=topics.meter(cid), value_template="{{ value_json.power_w }}",
               device_class="power", unit_of_measurement="W", state_class="measurement")
        entity("sensor", "energy", "Energy", state_topic=topics.meter(cid),
               value_template="{{ value_json.energy_wh }}", device_class="energy", unit_of_measurement="Wh",
               state_class="total_increasing")
        entity("sensor", "current", "Current L1", state_topic=topics.meter(cid),
               value_template="{{ value_json.current_a[0] }}", device_class="current", unit_of_measurement="A",
               state_class="measurement")
        entity("sensor", "limit", "Current limit", state_topic=topics.limit(cid),
               value_template="{{ value_json.limit_a }}", device_class="current", unit_of_measurement="A")
        if site_limits:
            entity("number", "site_limit", "Site current limit", command_topic=topics.connector_limit_command(cid),
                   state_topic=topics.limit(cid), value_template="{{ value_json.limit_a }}", min=0, max=rating,
                   step=1, unit_of_measurement="A", mode="box")
        if local_availability:
            entity("switch", "available", "Available", command_topic=topics.connector_availability_command(cid),
                   state_topic=topics.status(cid),
                   value_template="{{ 'OFF' if value_json.status == 'Unavailable' else 'ON' }}",
                   payload_on="ON", payload_off="OFF")
    return out
