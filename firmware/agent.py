"""The composition root: builds the pieces from the configuration, wires them, starts and stops them.

Start-up order matters for power-loss recovery: the database first (a damaged one stops us with a
clear message), then the devices, then each connector — a connector restored from its snapshot is
told that the power came back, which ends an open transaction with PowerLoss (or Reboot after a
requested reset) using a fresh meter reading; a transaction the ledger still has open that no connector
holds is stopped then too — and only then the CSMS link, which delivers whatever is queued, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.charger.card_routing import card_id_token
from firmware.charger.connector import ConnectorController, pending_reset, restart_pending
from firmware.charger.coordinator import Coordinator
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.maintenance_hold import MaintenanceHold
from firmware.charger.smart_charging import (
    ChargerSetup,
    ConnectorSetup,
    SmartChargingScheduler,
    running_transactions,
)
from firmware.config import TETHERED, AgentConfig
from firmware.event_log import StatusLog, log_device_events
from firmware.exitcodes import ExitCode
from firmware.hardware import ChargerHardware, ReaderHardware, build_hardware
from firmware.maintenance.diagnostics import DiagnosticsSources
from firmware.maintenance.installers import choose_installer, updater_settings
from firmware.maintenance.privileged import clear_stale_reboot, request_reboot
from firmware.maintenance.updater import FirmwareUpdater
from firmware.ocpp.adapter import OcppAdapter
from firmware.ocpp.versions import create_adapter
from firmware.security.security_log import FILE_NAME as SECURITY_LOG
from firmware.security.security_log import SecurityLog
from firmware.session import AvailabilityChanged, SessionConfig
from firmware.station_report import StationReport
from firmware.storage import Database
from firmware.storage.charging_profiles import ChargingProfileStore
from firmware.storage.ledger import Ledger
from firmware.storage.settings import Settings
from firmware.systemd_notify import SystemdNotifier
from firmware.task_supervisor import OnFailure, TaskSupervisor
from hal.events import Subscription
from hal.interfaces import CardPresented as ReaderCard
from hal.interfaces import ReaderEvent, utcnow

if TYPE_CHECKING:  # imported where [mqtt] is configured: MQTT (aiomqtt, paho) costs start-up time otherwise
    from firmware.telemetry.service import MqttTelemetry

log = logging.getLogger("firmware.agent")
#: Where this agent's code was imported from, links resolved (which A/B slot runs), for the log.
CODE_DIR = str(Path(__file__).resolve().parent)

#: Settings key: how many times in a row a Hard reset's reboot was asked again (ResetRetries).
REBOOT_RETRIES_KEY = "agent.reboot_retries"


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.installer = choose_installer(config)
        version = self.installer.running()[1]
        if version is not None:  # what runs is what the active slot holds, whatever the file says
            config = replace(config, identity=replace(config.identity, firmware_version=version))
        self.config = config
        self.exit_code = ExitCode.OK
        self.db = Database(Path(config.state_dir) / "agent.db")
        self.db.on_failure = self._storage_failed
        self.ledger = Ledger(self.db)  # billing records: written by the OCPP adapter, read by telemetry
        self.tasks = TaskSupervisor(self._task_failed)  # every long-running task, watched (docs/architecture.md)
        self.hardware: ChargerHardware = build_hardware(config, spawn=self.tasks.spawn)
        self.connectors: dict[int, ConnectorController] = {}
        self.report = StationReport(config, self.hardware, self.connectors, self.tasks)
        self.coordinator = Coordinator(self.connectors, self.db)
        # effective current limits: rating, site (MQTT), smart charging — the lowest wins
        self.limits = LimitApplier(self.connectors, {c.id: c.max_current_a for c in config.connectors})
        self.updater = FirmwareUpdater(Path(config.state_dir), updater_settings(config), self.installer,
                                       MaintenanceHold(self.coordinator, self.connectors),
                                       lambda: self.request_exit(ExitCode.RESTART))
        self.ocpp: OcppAdapter | None = None  # the adapter [ocpp] version names; it decides the session settings
        self.smart_charging: SmartChargingScheduler | None = None  # charging profiles, from the CSMS
        if config.ocpp is not None:
            self.smart_charging = SmartChargingScheduler(
                ChargingProfileStore(self.db), self.limits,
                ChargerSetup({c.id: ConnectorSetup(c.max_current_a, c.phases) for c in config.connectors},
                             config.nominal_voltage_v),
                running_transactions(self.connectors, self.ledger))
            self.ocpp = create_adapter(config, self.db, self.connectors, coordinator=self.coordinator,
                                       ledger=self.ledger, smart_charging=self.smart_charging, limits=self.limits,
                                       request_exit=self.request_exit,
                                       diagnostics=self.report.diagnostics, hardware=self.report.hardware_summary,
                                       spawn=lambda coro, name: self.tasks.spawn(coro, name=name,
                                                                                 on_failure=OnFailure.OWNER),
                                       firmware=self.updater, diagnostics_sources=DiagnosticsSources(
                                           config.charge_point_id, config.path, Path(config.state_dir), self.db,
                                           self.report.diagnostics))
        self.report.ocpp = self.ocpp
        status_log = StatusLog()
        for c in config.connectors:
            base = SessionConfig(max_current_amps=c.max_current_a, cable_lock=c.cable_lock,
                                 tethered_cable=c.cable == TETHERED)
            ctrl = ConnectorController(self.hardware.connectors[c.id],
                                       self.ocpp.session_config(base) if self.ocpp is not None else base, self.db)
            if self.ocpp is not None:
                ctrl.observers.append(self.ocpp)
            if self.smart_charging is not None:
                ctrl.observers.append(self.smart_charging)
            ctrl.observers.append(status_log)
            self.coordinator.reservations.attach(ctrl)  # a charger-wide reservation (connector 0)
            self.coordinator.master_pass.attach(ctrl)  # a master pass stops every connector's transaction
            self.connectors[c.id] = ctrl
        self.telemetry: MqttTelemetry | None = None  # with [mqtt]: telemetry and site control (docs/mqtt.md)
        if config.mqtt is not None:
            from firmware.telemetry.service import MqttTelemetry

            self.telemetry = MqttTelemetry(config, self.connectors, self.limits, health=self.report.health,
                                           smart_charging=self.smart_charging,
                                           ledger=self.ledger)
        for ctrl in self.connectors.values():
            ctrl.observers.append(self.limits)
            if self.telemetry is not None:
                ctrl.observers.append(self.telemetry)
        self._stop = asyncio.Event()

    def _storage_failed(self, exc: Exception) -> None:
        """The database failed under us (disk full, I/O error), wherever it was used: stop with 74, saying
        where (docs/storage.md). Once: the way out (draining, closing) may fail again."""
        if self.exit_code is ExitCode.STORAGE:
            return
        log.critical("storage failed; stopping", extra={"db": str(self.db.path), "error": str(exc)})
        if "full" in str(exc):  # SQLITE_FULL: the security event can no longer be queued, but the log keeps it
            SecurityLog(Path(self.config.state_dir) / SECURITY_LOG).write(
                "MemoryExhaustion", utcnow(), f"storage failed: {exc}"[:255], sent=False)
        print(f"storage error: {self.db.path}: {exc}", file=sys.stderr)
        self.request_exit(ExitCode.STORAGE)

    def _task_failed(self, name: str, error: BaseException | None) -> None:
        """A task whose end the agent cannot repair ended (logged by the supervisor): exit 1, so that systemd
        starts a fresh process that syncs the hardware from scratch."""
        print(f"agent task {name} failed: {error!r}; exiting for a restart", file=sys.stderr)
        self.request_exit(ExitCode.FAILURE)

    def _callback_failed(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception in an event-loop callback (a serial port's reader, a done-callback): no task owns it,
        so it is logged here as the fault of ours it is, with its traceback, instead of asyncio's plain text."""
        self.report.callback_errors += 1
        error = context.get("exception")
        log.error("unhandled error in a callback", exc_info=error if isinstance(error, BaseException) else None,
                  extra={"asyncio_message": str(context.get("message", "")),  # "message" is LogRecord's own
                         "callback_errors": self.report.callback_errors})

    def _inject_fault(self) -> None:
        """Test hook, only with ``EVSE_AGENT_FAULT_INJECTION=FILE``: on SIGUSR2, raise InjectedFault in the task
        named in FILE (docs/architecture.md, "Supervised tasks")."""
        path = os.environ.get("EVSE_AGENT_FAULT_INJECTION", "")
        try:
            name = Path(path).read_text().strip()
        except OSError as exc:
            log.warning("fault injection file unreadable", extra={"file": path, "error": str(exc)})
            return
        injected = self.tasks.inject(name)
        log.warning("fault injected", extra={"task": name, "injected": injected, "tasks": self.tasks.names()})

    def request_exit(self, code: ExitCode = ExitCode.OK) -> None:
        if not self._stop.is_set() or code is ExitCode.STORAGE:  # the first reason stands; storage trumps all
            self.exit_code = code
        self._stop.set()

    def _reader_runs(self, rh: ReaderHardware, early: Subscription[ReaderEvent]
                     ) -> Callable[[], Coroutine[Any, Any, None]]:
        """The reader task's body: its first run serves ``early``; a run after a restart subscribes anew."""
        first = [early]
        return lambda: self._serve_reader(rh, first.pop() if first else None)

    async def _serve_reader(self, rh: ReaderHardware, early: Subscription[ReaderEvent] | None = None) -> None:
        """A reader's taps to the connector each belongs to (its faults are logged with the device events: a reader
        is not a connector's fault). ``early``: the subscription taken before the hardware started, so that a card
        already on the reader at start-up is not reported into the gap before this task runs (a restart of the
        task subscribes afresh)."""
        with early if early is not None else rh.reader.events.subscribe() as sub:
            async for event in sub:
                if isinstance(event, ReaderCard):
                    card = card_id_token(event.uid, event.technology)
                    await self.coordinator.card_presented(card, rh.connectors, rh.reader.name)

    async def run(self) -> ExitCode:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_exit)
        if os.environ.get("EVSE_AGENT_FAULT_INJECTION"):
            loop.add_signal_handler(signal.SIGUSR2, self._inject_fault)
        loop.set_exception_handler(self._callback_failed)
        notifier = SystemdNotifier()  # Type=notify + WatchdogSec in the unit (tools/flash.py installs it)
        stale = False
        with contextlib.suppress(OSError):
            stale = clear_stale_reboot()
        if stale:
            log.warning("the reboot asked for before this start did not happen (is evse-agent-reboot.path "
                        "enabled?); request removed")
        try:
            if self._retry_reboot(stale):
                self.request_exit(ExitCode.RESTART)  # and the way out asks for the reboot again
            else:
                await self._start()
                log.info("agent running")
                notifier.notify("READY=1")
                if notifier.enabled and notifier.watchdog_interval_s is not None:  # else it would return at once
                    self.tasks.start("watchdog", notifier.watchdog)
            await self._stop.wait()
        finally:
            # also after a failed start: whatever was started is stopped, so the process ends (and the
            # supervisor restarts it) instead of lingering with the devices half-driven
            log.info("agent stopping", extra={"exit_code": int(self.exit_code)})
            notifier.notify("STOPPING=1")
            await self._shutdown()
        return self.exit_code

    async def _start(self) -> None:
        for device in self.hardware.devices():
            self.tasks.start(f"watch-{device.name}", functools.partial(log_device_events, device.events))
        log.info("agent starting", extra={"charge_point_id": self.config.charge_point_id, "pid": os.getpid(),
                                          "version": self.config.identity.firmware_version,
                                          "code": CODE_DIR,  # which slot's code runs
                                          "connectors": len(self.connectors), "readers": len(self.hardware.readers),
                                          "csms": self.config.ocpp.csms_url if self.config.ocpp else None,
                                          "started_at": utcnow().isoformat()})
        # taken before the readers start; served once the connectors have started (below)
        early = [rh.reader.events.subscribe() for rh in self.hardware.readers]
        await self.hardware.start()
        reboot = restart_pending(self.db)
        for ctrl in self.connectors.values():
            await ctrl.start(reboot=reboot, run=self.tasks.start)
            if "site" in ctrl.inoperative_by and not (self.config.mqtt and self.config.mqtt.local_availability):
                # local availability control was switched off in the configuration: nobody could release it
                await ctrl.handle(AvailabilityChanged(True), availability_source="site")
        await self.coordinator.reservations.start()  # expired during the outage, or re-armed
        if self.ocpp is not None:
            await self.ocpp.close_orphaned_transactions()
        for rh, sub in zip(self.hardware.readers, early, strict=True):
            self.tasks.start(f"reader-{rh.reader.name}", self._reader_runs(rh, sub))
        self.tasks.start("limits", self.limits.run)
        if self.smart_charging is not None:
            self.tasks.start("smart-charging", self.smart_charging.run)
        if self.telemetry is not None:
            self.tasks.start("telemetry", self.telemetry.run)
        if self.ocpp is not None:
            for name, loop in self.ocpp.loops().items():
                self.tasks.start(name, loop)
            self.tasks.start("firmware-update", self.updater.run)  # resumes a job a restart interrupted

    async def _shutdown(self) -> None:
        """Each step runs even if an earlier one failed: the hardware must end up in its safe state."""
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self.ocpp is not None:
            ocpp = self.ocpp
            steps.append(("drain", lambda: ocpp.drain(min(5.0, ocpp.response_timeout_s))))
        steps.append(("tasks", self.tasks.stop))
        if self.ocpp is not None:
            steps.append(("ocpp", self.ocpp.close))
        steps.append(("reservations", self.coordinator.reservations.close))
        steps.append(("master pass", self.coordinator.master_pass.close))
        steps += [(f"connector {c.id}", c.close) for c in self.connectors.values()]
        steps.append(("hardware", self.hardware.close))
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception("shutdown step failed", extra={"step": name})
        reboot = self.exit_code is ExitCode.RESTART and self._hard_reset_pending()
        self.db.close()
        if reboot:
            self._request_reboot()

    def _retry_reboot(self, stale: bool) -> bool:
        """ResetRetries: the previous run ended for a Hard reset and the reboot it asked for did not happen
        (``stale``: its request was still there). Ask again — end this run before anything starts, as the reset's
        own run did — up to ResetRetries times in a row; then run on without the reboot. Where nobody can reboot
        (not run by the agent's unit) there is no request, and no retry."""
        settings = Settings(self.db)
        tried = int(settings.get(REBOOT_RETRIES_KEY) or 0)
        if not stale or not self._hard_reset_pending():
            if tried:
                settings.put(REBOOT_RETRIES_KEY, "")
            return False
        allowed = self.ocpp.reset_retries() if self.ocpp is not None else 0
        if tried >= allowed:
            log.error("Hard reset: the controller did not reboot; retries used up, running without the reboot",
                      extra={"retries": tried})
            settings.put(REBOOT_RETRIES_KEY, "")
            return False
        settings.put(REBOOT_RETRIES_KEY, str(tried + 1))
        log.warning("Hard reset: the controller did not reboot; asking again", extra={"retry": tried + 1,
                                                                                      "retries": allowed})
        return True

    def _hard_reset_pending(self) -> bool:
        try:
            return pending_reset(self.db) == "hard"
        except Exception:  # the database failed on the way out: the restart still happens
            log.exception("reading the pending reset failed")
            return False

    def _request_reboot(self) -> None:
        """OCPP Hard reset: the controller reboots, through systemd (the agent may not: docs/technician-guide.md,
        "Privileges"); asked for last, with the hardware safe and the database closed. Without the agent's unit
        nobody reboots, and the reset is a restart of the agent (exit 75), as under the simulator."""
        try:
            path = request_reboot("OCPP Hard reset")
        except OSError as exc:
            log.error("reboot request failed; restarting the agent only", extra={"error": str(exc)})
            return
        if path is None:
            log.warning("no reboot path (not run by the evse-agent unit): restarting the agent only")
        else:
            log.info("reboot requested", extra={"request": str(path)})
