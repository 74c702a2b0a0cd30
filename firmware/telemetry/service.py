"""MQTT telemetry and site control wired into the agent (docs/mqtt.md).

A connector observer like the OCPP adapter: ``record`` (inside the durable commit) only builds the
session payloads from the start/stop meter reading, ``notify`` queues them — publishing is never
awaited by a connector, so a slow or absent broker cannot delay charging. OCPP data never goes here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import RuntimeLimits, SmartChargingScheduler
from firmware.config import AgentConfig, MqttConfig
from firmware.session import AvailabilityChanged, Effect, StatusChanged, TransactionStarted, TransactionStopped
from firmware.storage.ledger import Ledger
from firmware.telemetry import payloads
from firmware.telemetry.codec import encode
from firmware.telemetry.commands import Command, CommandRules, Rejected, SetAvailability, SetLimit, parse_command
from firmware.telemetry.discovery import discovery_messages
from firmware.telemetry.link import MqttLink
from firmware.telemetry.site_control import FAILSAFE, SiteControl
from firmware.telemetry.topics import Topics
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)


class MqttTelemetry:
    def __init__(self, config: AgentConfig, connectors: dict[int, ConnectorController], applier: LimitApplier,
                 health: Callable[[], dict[str, Any]], ledger: Ledger | None = None,
                 smart_charging: SmartChargingScheduler | None = None) -> None:
        """``smart_charging``: its next change goes with each limit published (None: no charging profiles)."""
        assert config.mqtt is not None
        self.agent_config = config
        self.config: MqttConfig = config.mqtt
        self.connectors = connectors
        self.applier = applier
        self.fmt = self.config.payload_format
        self.topics = Topics(self.config.base_topic, config.charge_point_id)
        self.rules = CommandRules({cid: c.config.max_current_amps for cid, c in connectors.items()}, self.fmt,
                                  self.config.site_limits, self.config.local_availability)
        client_id = self.config.client_id or f"evse-agent-{config.charge_point_id}"
        self.link = MqttLink(self.config, client_id, self.topics, self._on_command, self._republish)
        self.site = SiteControl(self.config, applier, self._publish_event)
        self.health = health
        self.ledger = ledger  # the billing records: the start of a transaction from before a restart
        self.unencodable = 0
        self.rejected = 0
        applier.listeners.append(self._limit_applied)
        self.smart_charging = smart_charging
        self._next_change: datetime | None = None  # smart charging's, as last published
        if smart_charging is not None:
            smart_charging.listeners.append(self._profiles_applied)
        self._status: dict[int, dict[str, Any]] = {}
        self._starts: dict[tuple[int, int], tuple[float | None, datetime | None]] = {}
        self._pending: dict[int, list[dict[str, Any]]] = {}
        self._meter_sent: dict[int, datetime] = {}
        self._started = time.monotonic()
        self.site.start()  # now: the fail-safe limit is in place before the connectors' first limit is applied

    def _publish(self, topic: str, value: Any, *, retain: bool = False) -> None:
        try:
            payload = encode(value, self.fmt)
        except (ValueError, TypeError) as exc:  # a bug in a payload builder must not stop telemetry
            self.unencodable += 1
            log.error("telemetry payload not encodable", extra={"topic": topic, "error": str(exc)})
            return
        self.link.publish(topic, payload, retain=retain)

    # --- connector observer -------------------------------------------------------------------

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Runs inside the billing commit: whatever goes wrong here must not roll it back."""
        try:
            self._record(connector, effects, reading, now)
        except Exception:
            log.exception("telemetry could not prepare session events", extra={"connector": connector.id})

    def _record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
                now: datetime) -> None:
        wh = None if reading is None else round(reading.energy_import_wh, 1)
        for e in effects:
            if isinstance(e, TransactionStarted):
                self._starts[(connector.id, e.local_id)] = (wh, now)
                self._pending.setdefault(connector.id, []).append(payloads.session_started(connector.id, e, now, wh))
            elif isinstance(e, TransactionStopped):
                known = self._starts.pop((connector.id, e.local_id), None)
                start_wh, started_at = known if known is not None else self._start_from_ledger(connector.id, e.local_id)
                self._pending.setdefault(connector.id, []).append(payloads.session_stopped(
                    connector.id, e, now, meter_stop_wh=wh, meter_start_wh=start_wh, started_at=started_at))

    def _start_from_ledger(self, connector: int, local_id: int) -> tuple[float | None, datetime | None]:
        """A transaction started before a restart (stopped with PowerLoss after it): its start as billed."""
        record = self.ledger.get(connector, local_id) if self.ledger is not None else None
        if record is None:
            return None, None
        return float(record.meter_start_wh), datetime.fromisoformat(record.started_at)

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                self._status[connector.id] = payloads.status(connector.id, e, utcnow(), connector.view.offered_amps)
                self._publish(self.topics.status(connector.id), self._status[connector.id], retain=True)
        for event in self._pending.pop(connector.id, []):
            self._publish(self.topics.session(connector.id), event)

    # --- what the site sends ------------------------------------------------------------------

    async def _on_command(self, topic: str, payload: bytes, retained: bool = False) -> None:
        command: Command | Rejected
        try:
            command = parse_command(topic, payload, self.topics, self.rules)
        except Exception:  # a bug: parsing is meant to refuse, never raise; still refused and answered
            log.exception("MQTT command parser failed", extra={"topic": topic, "bytes": len(payload)})
            command = Rejected(topic, "internal error while parsing the command")
        if retained and not isinstance(command, Rejected):
            # a retained command would come back after every reconnect, however old: it could release the
            # fail-safe for an energy manager long gone, or undo a later decision
            command = Rejected(topic, "retained commands are refused (they are replayed after every reconnect, "
                                      "however old): publish commands without the retain flag")
        if isinstance(command, Rejected):
            self.rejected += 1
            log.warning("MQTT command rejected", extra={"topic": topic, "reason": command.reason})
            self._publish(self.topics.reply, payloads.reply(topic, False, command.reason, utcnow()))
            return
        if isinstance(command, SetLimit):
            self.site.set_limit(command)
            what = "limit removed" if command.amps is None else f"limit {command.amps:g} A applied"
        else:
            await self._set_availability(command)
            what = "operative" if command.operative else "inoperative"
        log.info("MQTT command applied", extra={"topic": topic, "result": what})
        self._publish(self.topics.reply, payloads.reply(topic, True, what, utcnow()))

    async def _set_availability(self, command: SetAvailability) -> None:
        targets = [command.connector] if command.connector is not None else list(self.connectors)
        for cid in targets:
            await self.connectors[cid].handle(AvailabilityChanged(command.operative), availability_source="site")

    # --- what the charger says ----------------------------------------------------------------

    def _publish_event(self, event: dict[str, Any]) -> None:
        self._publish(self.topics.event, {**event, "ts": utcnow().isoformat(timespec="milliseconds")})

    def _limit_applied(self, connector: int, amps: float) -> None:
        self._publish(self.topics.limit(connector), self._limit_state(connector, amps), retain=True)

    def _profiles_applied(self, limits: RuntimeLimits) -> None:
        """Smart charging's limits were applied: when its next change moved, every connector's limit is published
        again with it (a moved limit itself is published by the applier, once the connector has it)."""
        if limits.next_change != self._next_change:
            self._next_change = limits.next_change
            for cid, amps in self.applier.applied.items():
                self._publish(self.topics.limit(cid), self._limit_state(cid, amps), retain=True)

    def _limit_state(self, connector: int, amps: float) -> dict[str, Any]:
        limits = self.applier.limits
        return payloads.limit(connector, amps, limits.sources(connector), limits.sources(None),
                              FAILSAFE in limits.sources(None), utcnow(), self._next_change)

    def _republish(self) -> None:
        """After each (re)connect: discovery and the current state, retained."""
        if self.config.discovery and self.fmt == "json":
            ident = self.agent_config.identity
            for topic, config in discovery_messages(
                    self.topics, self.config.discovery_prefix, self.rules.ratings, vendor=ident.vendor,
                    model=ident.model, sw_version=ident.firmware_version, site_limits=self.config.site_limits,
                    local_availability=self.config.local_availability):
                self.link.publish(topic, encode(config, "json"), retain=True)
        for cid, ctrl in self.connectors.items():
            if cid not in self._status:  # no change since start: what the machine holds now
                m = ctrl.machine
                change = StatusChanged(m.status, ev_connected=m.ev_connected, error=m.current_error)
                self._status[cid] = payloads.status(cid, change, utcnow(), ctrl.view.offered_amps)
            self._publish(self.topics.status(cid), self._status[cid], retain=True)
        for cid, amps in self.applier.applied.items():
            self._publish(self.topics.limit(cid), self._limit_state(cid, amps), retain=True)

    def health_payload(self) -> dict[str, Any]:
        stats = self.link.buffer.stats()
        return {"uptime_s": round(time.monotonic() - self._started, 1),
                "mqtt": {"queued": stats.queued, "dropped": stats.dropped, "published": stats.published,
                         "connects": self.link.connects, "rejected_commands": self.rejected,
                         "unencodable": self.unencodable},
                "failsafe": self.site.failsafe_active, **self.health(),
                "ts": utcnow().isoformat(timespec="milliseconds")}

    async def _meter_loop(self) -> None:
        """The latest reading of each connector every ``meter_interval_s`` (never per raw poll), if new."""
        while True:
            await asyncio.sleep(self.config.meter_interval_s)
            for cid, ctrl in self.connectors.items():
                reading = ctrl.latest_reading
                if reading is None or self._meter_sent.get(cid) == reading.taken_at:
                    continue
                self._meter_sent[cid] = reading.taken_at
                self._publish(self.topics.meter(cid), payloads.meter(cid, reading))

    async def _health_loop(self) -> None:
        while True:
            self._publish(self.topics.health, self.health_payload())
            await asyncio.sleep(self.config.health_interval_s)

    async def run(self) -> None:
        tasks = [asyncio.create_task(coro, name=name) for coro, name in (
            (self.link.run(), "mqtt-link"), (self._meter_loop(), "mqtt-meter"),
            (self._health_loop(), "mqtt-health"), (self.site.watch(), "mqtt-failsafe"))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
