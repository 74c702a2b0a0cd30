"""The OCPP 1.6J charge point: composes the 1.6 features and keeps one session with the CSMS at a time.

The features live in their own modules and share one :class:`~firmware.ocpp.v16.context.V16Context`:
:mod:`core` (BootNotification, Heartbeat), :mod:`status_report` (StatusNotification),
:mod:`transactions` (Start/StopTransaction through the durable outbox), :mod:`meter_values`,
:mod:`authorization` (Authorize, the cache, ClearCache), :mod:`local_auth_list` (SendLocalList,
GetLocalListVersion), :mod:`remote_control` (remote start/stop, availability, unlock, reset),
:mod:`remote_trigger` (TriggerMessage), :mod:`reservation` (ReserveNow, CancelReservation), :mod:`data_transfer`,
:mod:`firmware_management` (UpdateFirmware, GetDiagnostics), :mod:`configuration` and :mod:`session_settings`.
Each declares its configuration keys and its CALL handlers; this module only routes:

* connector effects to the features (``record`` inside the connector's commit, ``notify`` after it);
* each connection (:class:`~firmware.ocpp.link.OcppLink`, :func:`~firmware.ocpp.connection.serve_connection`):
  BootNotification once per run of the agent, then the connection's workers (statuses, the outbox, heartbeat)
  until it ends;
* the CSMS's CALLs to the features' handlers (:class:`~firmware.ocpp.rpc.RpcChargePoint`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.charger.coordinator import Coordinator
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import SmartChargingScheduler
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.maintenance.diagnostics import DiagnosticsSources
from firmware.maintenance.log_upload import LogUploads
from firmware.maintenance.updater import FirmwareUpdater
from firmware.ocpp.adapter import Spawn
from firmware.ocpp.connection import serve_adapter_session
from firmware.ocpp.link import Backoff, OcppLink
from firmware.ocpp.security_events import SecurityEvents
from firmware.ocpp.session_context import ContextViews
from firmware.ocpp.v16.authorization import Authorization
from firmware.ocpp.v16.certificates import Certificates
from firmware.ocpp.v16.configuration import Configuration, ConfigurationKeys
from firmware.ocpp.v16.context import VENDOR_ID, V16Context
from firmware.ocpp.v16.core import Core
from firmware.ocpp.v16.data_transfer import DataTransfer
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v16.firmware_management import FirmwareManagement
from firmware.ocpp.v16.local_auth_list import LocalAuthList
from firmware.ocpp.v16.meter_values import MeterValuesReporter
from firmware.ocpp.v16.remote_control import RemoteControl
from firmware.ocpp.v16.remote_trigger import RemoteTrigger
from firmware.ocpp.v16.reservation import Reservation
from firmware.ocpp.v16.security import Security
from firmware.ocpp.v16.session_settings import SessionSettings, session_config_from_keys
from firmware.ocpp.v16.smart_charging import SmartCharging
from firmware.ocpp.v16.status_report import StatusReporter
from firmware.ocpp.v16.transactions import Transactions, check_queued
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials
from firmware.session import Effect, RequestAuthorization, SessionConfig, StatusChanged
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from hal.interfaces import MeterReading

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"


class Ocpp16Client(ContextViews):
    """One charge point's OCPP 1.6J session with the CSMS; also a connector observer."""

    ctx: V16Context

    def __init__(self, config: AgentConfig, connectors: dict[int, ConnectorController], db: Database,
                 keys: ConfigurationKeys, *, request_exit: Callable[[ExitCode], None],
                 coordinator: Coordinator | None = None,
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 hardware: Callable[[], dict[str, Any]] | None = None, spawn: Spawn | None = None,
                 ledger: Ledger | None = None, smart_charging: SmartChargingScheduler | None = None,
                 firmware: FirmwareUpdater | None = None, diagnostics_sources: DiagnosticsSources | None = None,
                 limits: LimitApplier | None = None) -> None:
        """``spawn(coro, name)`` starts the workers of each connection (the agent's task supervisor lists them
        and can inject faults; their ends are handled here: the connection is closed and the link reconnects).
        ``ledger``: the charge point's billing records (the agent's, shared with telemetry; default: on ``db``).
        ``smart_charging``: the charger's charging profiles (without: SetChargingProfile and its kin are
        NotSupported, and a RemoteStartTransaction's chargingProfile is refused); ``limits``: the charger's limit
        sources, whose external ones bound GetCompositeSchedule (None: none do). ``firmware``: the update
        pipeline (UpdateFirmware); ``diagnostics_sources``: what GetDiagnostics archives."""
        assert config.ocpp is not None
        self.ctx = ctx = V16Context(config, connectors, db, keys, ledger or Ledger(db),
                                    Outbox(db, max_queued=config.max_queued_messages, check=check_queued), request_exit)
        self._start_worker: Spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        self.security_events = SecurityEvents(ctx)
        ctx.report_security_event = self.security_events.report
        self.certificate_store = CertificateStore(
            Path(config.state_dir) / "certs", max_certificates=keys.get_int("CertificateStoreMaxLength"),
            commissioned_csms_roots=config.ocpp.csms_ca)
        self.credentials = ChargePointCredentials(Path(config.state_dir) / "certs", config.ocpp.cp_cert,
                                                  config.ocpp.cp_key)
        self.security = Security(ctx, self.security_events, self.certificate_store, self.credentials)
        self.link = OcppLink(config.ocpp.csms_url, config.charge_point_id, SUBPROTOCOL,
                             backoff=Backoff(config.ocpp.reconnect_min_s, config.ocpp.reconnect_max_s),
                             ping_interval_s=keys.get_int("WebSocketPingInterval") or None,
                             stable_after_s=config.ocpp.stable_connection_s,
                             settings=self.security.link_settings, on_attempt_failed=self.security.attempt_failed)
        self.security.reconnect = self.link.reconnect
        self.certificates = Certificates(ctx, self.certificate_store, self.credentials, self.link.peer_certificate,
                                         lambda: self.security.profile, self.link.reconnect)
        coordinator = coordinator or Coordinator(connectors, db)
        self.statuses = StatusReporter(connectors, keys, db, VENDOR_ID)
        self.meter_values = MeterValuesReporter(connectors, keys, ctx.outbox, lambda: ctx.wake_delivery())
        self.core = Core(ctx, self.link.set_ping_interval)
        self.local_auth_list = LocalAuthList(ctx, self.statuses.charge_point_error)
        self.authorization = Authorization(ctx, self.local_auth_list)
        self.transactions = Transactions(ctx, self.meter_values, self.authorization.learn)
        base_diagnostics = diagnostics or (lambda: {})
        self.data_transfer = DataTransfer(lambda: {**base_diagnostics(), "security": self.security.report()},
                                          hardware)
        self.firmware_management = FirmwareManagement(ctx, firmware, LogUploads(
            config.charge_point_id, Path(config.state_dir), diagnostics_sources, self.security_events.log.files,
            firmware.settings.transfer_timeout_s if firmware is not None else 30.0,
            tls=firmware.settings.transfer_tls if firmware is not None else None))
        self._handlers: tuple[object, ...] = (
            Configuration(keys), self.security, self.authorization, self.local_auth_list, self.certificates,
            RemoteControl(ctx, coordinator, self.statuses, smart_charging), self.data_transfer,
            RemoteTrigger(ctx, self.core, self.statuses, self.certificates),
            self.firmware_management,
            Reservation(ctx, coordinator.reservations))
        if smart_charging is not None:
            self._handlers += (SmartCharging(smart_charging, limits),)
        self._session_settings = SessionSettings(keys, connectors)
        self.security_events.started(f"evse-agent {config.identity.firmware_version} started")

    def session_config(self, base: SessionConfig) -> SessionConfig:
        return session_config_from_keys(base, self.ctx.keys)

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {"ocpp": self.run, "metering": self.meter_values.run}

    def reset_retries(self) -> int:
        return self.ctx.keys.get_int("ResetRetries")

    # --- connector observer -------------------------------------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        # what this step queues is sent once the step has switched the hardware (tap -> contactor)
        ctrl.after_step(self.transactions.delivery.hold())
        self.transactions.record(ctrl, effects, reading, now)

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                self.statuses.connector_changed(ctrl, e)
            elif isinstance(e, RequestAuthorization):
                self.ctx.spawn(self.authorization.authorize(ctrl, e))

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        self.ctx.spawn(self.security_events.watch())  # MemoryExhaustion, SettingSystemTime
        self.firmware_management.resume_uploads()  # what a stop interrupted
        await self.link.run(self._session)

    async def _session(self, connection: Any) -> None:
        """One connection (:func:`~firmware.ocpp.connection.serve_adapter_session`, shared with 2.0.1)."""
        await serve_adapter_session(
            connection, self.ctx, OCPP16, self._handlers, self._start_worker, boot=self.core.boot,
            heartbeat=self.core.heartbeat, statuses=self.statuses, delivery=self.transactions.delivery,
            hardware=self.data_transfer,
            on_accepted=(self.link.mark_accepted,  # the back-off resets only once the connection stayed up a while
                         self.security.accepted, self.certificates.connected))

    async def close_orphaned_transactions(self) -> int:
        return await self.transactions.close_orphaned_transactions()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Before the agent exits: let a delivery in flight finish (see :meth:`OutboxDelivery.drain`)."""
        await self.transactions.delivery.drain(timeout_s)

    async def close(self) -> None:
        await self.ctx.close()


__all__ = ["Ocpp16Client", "session_config_from_keys"]
