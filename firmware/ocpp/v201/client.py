"""The OCPP 2.0.1 charging station: composes the 2.0.1 features and keeps one session with the CSMS at a time.

The same shape as the 1.6 adapter (:mod:`firmware.ocpp.v16.client`), on the same layers — the session machine,
the charger layer, the ledger and the durable outbox, the link and the RPC layer with the 2.0.1
:data:`~firmware.ocpp.v201.dialect.OCPP201` dialect. The features share one
:class:`~firmware.ocpp.v201.context.V201Context`: :mod:`provisioning` (BootNotification, Heartbeat,
Get/SetVariables on the :mod:`device_model`, its physical tiers from :mod:`inventory`), :mod:`reports`
(GetBaseReport, GetReport, NotifyReport), :mod:`status`
(StatusNotification), :mod:`transactions` (TransactionEvent through the outbox, GetTransactionStatus),
:mod:`authorization` (Authorize, the cache, ClearCache), :mod:`local_auth_list` (SendLocalList, GetLocalListVersion),
:mod:`reservation` (ReserveNow, CancelReservation, ReservationStatusUpdate),
:mod:`smart_charging` (SetChargingProfile, GetChargingProfiles, ClearChargingProfile, GetCompositeSchedule),
:mod:`remote_control` (RequestStart/StopTransaction, UnlockConnector, ChangeAvailability, Reset),
:mod:`remote_trigger` (TriggerMessage), :mod:`notify_event` (NotifyEvent),
:mod:`security` (security profiles, SecurityCtrlr, BasicAuthPassword),
:mod:`certificates` (Install/Delete/GetInstalledCertificateIds, SignCertificate, CertificateSigned),
:mod:`data_transfer`, :mod:`firmware_management` (UpdateFirmware, GetLog) and :mod:`session_settings`;
security events go through the shared :mod:`~firmware.ocpp.security_events`.
This module only routes:

* connector effects to the features (``record`` inside the connector's commit, ``notify`` after it);
* each connection (:func:`~firmware.ocpp.connection.serve_connection`, shared with 1.6): BootNotification once per
  run of the agent, then the connection's workers (statuses, the outbox, heartbeat) until it ends;
* the CSMS's CALLs to the features' handlers (:class:`~firmware.ocpp.rpc.RpcChargePoint`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.charger.connector import ConnectorController, pending_reset
from firmware.charger.coordinator import Coordinator
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import SmartChargingScheduler
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.maintenance.diagnostics import DiagnosticsSources
from firmware.maintenance.log_upload import LogUploads
from firmware.maintenance.updater import FirmwareUpdater
from firmware.ocpp.adapter import Spawn
from firmware.ocpp.certificate_management import DEFAULT_STORE_MAX
from firmware.ocpp.connection import serve_adapter_session
from firmware.ocpp.link import Backoff, OcppLink
from firmware.ocpp.security_events import OCPP201_NAMES, SecurityEvents
from firmware.ocpp.session_context import ContextViews
from firmware.ocpp.v201.authorization import Authorization
from firmware.ocpp.v201.certificates import Certificates
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.data_transfer import DataTransfer
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey
from firmware.ocpp.v201.dialect import OCPP201
from firmware.ocpp.v201.firmware_management import FirmwareManagement
from firmware.ocpp.v201.inventory import describe_inventory
from firmware.ocpp.v201.network_profile import NetworkProfiles
from firmware.ocpp.v201.notify_event import NotifyEvents
from firmware.ocpp.v201.provisioning import Provisioning
from firmware.ocpp.v201.remote_control import RemoteControl
from firmware.ocpp.v201.remote_trigger import RemoteTrigger
from firmware.ocpp.v201.reports import Reports
from firmware.ocpp.v201.reservation import Reservation
from firmware.ocpp.v201.security import Security
from firmware.ocpp.v201.session_settings import SessionSettings, session_config
from firmware.ocpp.v201.smart_charging import SmartCharging
from firmware.ocpp.v201.status import StatusReporter
from firmware.ocpp.v201.transactions import Transactions, check_queued
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials
from firmware.session import Effect, RequestAuthorization, SessionConfig, StatusChanged, TransactionStopped
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from hal.interfaces import MeterReading

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp2.0.1"


class Ocpp201Client(ContextViews):
    """One charging station's OCPP 2.0.1 session with the CSMS; also a connector observer."""

    ctx: V201Context

    def __init__(self, config: AgentConfig, connectors: dict[int, ConnectorController], db: Database, *,
                 request_exit: Callable[[ExitCode], None], coordinator: Coordinator | None = None,
                 ledger: Ledger | None = None, spawn: Spawn | None = None,
                 firmware: FirmwareUpdater | None = None, diagnostics_sources: DiagnosticsSources | None = None,
                 smart_charging: SmartChargingScheduler | None = None, limits: LimitApplier | None = None,
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 hardware: Callable[[], dict[str, Any]] | None = None) -> None:
        """``firmware``: the update pipeline (UpdateFirmware); ``diagnostics_sources``: what GetLog
        DiagnosticsLog archives (without either, those requests are Rejected); ``smart_charging``: the charger's
        charging profiles (without: the K requests are NotSupported and a RequestStartTransaction's
        chargingProfile is ignored); ``diagnostics``: what the Diagnostics DataTransfer answers; ``hardware``: the
        Hardware DataTransfer sent once per run (none without it)."""
        assert config.ocpp is not None
        variables = DeviceModel(db, presets=config.ocpp.presets, evse_ids=[c.id for c in config.connectors])
        self.ctx = ctx = V201Context(config, connectors, db, variables, ledger or Ledger(db),
                                     Outbox(db, max_queued=config.max_queued_messages, check=check_queued),
                                     request_exit)
        self.notify_events = NotifyEvents(ctx)  # N07: AvailabilityState and problems of each EVSE
        describe_inventory(ctx, self.notify_events.has_problem)
        self._start_worker: Spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        ping = variables.get_int("OCPPCommCtrlr", "WebSocketPingInterval")  # RebootRequired: read once
        ocpp = config.ocpp
        self.security_events = SecurityEvents(ctx, OCPP201_NAMES)
        ctx.report_security_event = self.security_events.report
        certs = Path(config.state_dir) / "certs"
        capacity = variables.definitions[VariableKey("SecurityCtrlr", "CertificateEntries")].maximum  # its maxLimit
        store = CertificateStore(certs, max_certificates=int(capacity or DEFAULT_STORE_MAX),
                                 commissioned_csms_roots=ocpp.csms_ca)
        credentials = ChargePointCredentials(certs, ocpp.cp_cert, ocpp.cp_key)
        # the security profile and password (SecurityCtrlr) decide each connection attempt, as in 1.6
        self.security = Security(ctx, self.security_events, store, credentials)
        # B09/B10/A05: the network profile this start connects with (its URL, messageTimeout, security profile)
        # and the next one after NetworkProfileConnectionAttempts failed attempts
        network_profiles = NetworkProfiles(ctx, self.security)
        self.link = OcppLink(ocpp.csms_url, config.charge_point_id, SUBPROTOCOL,
                             backoff=Backoff(ocpp.reconnect_min_s, ocpp.reconnect_max_s), ping_interval_s=ping or None,
                             stable_after_s=ocpp.stable_connection_s, settings=self.security.link_settings,
                             on_attempt_failed=network_profiles.attempt_failed)
        self.security.reconnect = self.link.reconnect
        self._network_profiles = network_profiles
        self.certificates = Certificates(ctx, store, credentials, self.link.peer_certificate,
                                         lambda: self.security.profile, self.link.reconnect)
        base_diagnostics = diagnostics or (lambda: {})
        self.data_transfer = DataTransfer(lambda: {**base_diagnostics(), "security": self.security.report()},
                                          hardware)
        # B01: the reason of this boot; the reset that ended the previous run is still flagged at this point, and
        # so is the firmware update's switch of slots (L01: the boot into the new firmware says FirmwareUpdate)
        updating = firmware is not None and firmware.restarted_for_update
        self.provisioning = Provisioning(ctx, "FirmwareUpdate" if updating
                                         else "RemoteReset" if pending_reset(db) else "PowerUp")
        self.statuses = StatusReporter(
            connectors, lambda: float(variables.get_int("OCPPCommCtrlr", "OfflineThreshold")))
        self.authorization = Authorization(ctx)
        self.transactions = Transactions(ctx, self.authorization.learn)
        self.smart_charging = None if smart_charging is None else SmartCharging(ctx, smart_charging,
                                                                                self.transactions, limits)
        self.remote_control = RemoteControl(ctx, coordinator or Coordinator(connectors, db), self.transactions,
                                            self.smart_charging)
        self.firmware = FirmwareManagement(ctx, firmware, LogUploads(
            config.charge_point_id, Path(config.state_dir), diagnostics_sources, self.security_events.log.files,
            firmware.settings.transfer_timeout_s if firmware is not None else 30.0,
            tls=firmware.settings.transfer_tls if firmware is not None else None))
        trigger = RemoteTrigger(ctx, self.provisioning, self.statuses, self.transactions, self.firmware,
                                self.certificates)
        self._handlers: tuple[object, ...] = (self.provisioning, Reports(ctx), self.authorization, self.transactions,
                                              self.remote_control, trigger, self.authorization.local_list,
                                              Reservation(ctx, self.remote_control.coordinator.reservations),
                                              self.firmware, self.security, network_profiles, self.certificates,
                                              self.data_transfer)
        if self.smart_charging is not None:
            self._handlers += (self.smart_charging,)
        self._session_settings = SessionSettings(variables, connectors)
        self.security_events.started(f"evse-agent {config.identity.firmware_version} started")

    @property
    def variables(self) -> DeviceModel:
        return self.ctx.variables

    def session_config(self, base: SessionConfig) -> SessionConfig:
        return session_config(base, self.ctx.variables)

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        loops: dict[str, Callable[[], Awaitable[None]]] = {"ocpp": self.run,
                                                           "metering": self.transactions.run_metering}
        if self.smart_charging is not None and self.smart_charging.limits is not None:
            loops["external-limits"] = self.smart_charging.report_external_limits
        return loops

    def reset_retries(self) -> int:
        return self.ctx.variables.get_int("OCPPCommCtrlr", "ResetRetries")

    # --- connector observer -------------------------------------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        # what this step queues is sent once the step has switched the hardware (tap -> contactor)
        ctrl.after_step(self.transactions.delivery.hold())
        self.transactions.record(ctrl, effects, reading, now)
        if self.smart_charging is not None:  # after the transaction's own events
            self.smart_charging.record(ctrl, effects, reading, now)
        self.notify_events.record(ctrl, now)

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                self.statuses.connector_changed(ctrl, e)
            elif isinstance(e, RequestAuthorization):
                self.ctx.spawn(self.authorization.authorize(ctrl, e))
            elif isinstance(e, TransactionStopped):
                self.remote_control.transaction_ended()

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        self.ctx.spawn(self.security_events.watch())  # MemoryExhaustion, SettingSystemTime
        self.firmware.resume_uploads()  # what a stop interrupted
        await self.link.run(self._session)

    async def _session(self, connection: Any) -> None:
        """One connection (:func:`~firmware.ocpp.connection.serve_adapter_session`, shared with 1.6)."""
        await serve_adapter_session(
            connection, self.ctx, OCPP201, self._handlers, self._start_worker, boot=self.provisioning.boot,
            heartbeat=self.provisioning.heartbeat, statuses=self.statuses, delivery=self.transactions.delivery,
            hardware=self.data_transfer,
            on_accepted=(self.link.mark_accepted,  # the back-off resets only once the connection stayed up a while
                         self.security.accepted, self._network_profiles.accepted, self.certificates.connected))

    async def close_orphaned_transactions(self) -> int:
        closed = await self.transactions.close_orphaned_transactions()
        if closed:
            self.transactions.delivery.wake()
        return closed

    async def drain(self, timeout_s: float = 5.0) -> None:
        await self.transactions.delivery.drain(timeout_s)

    async def close(self) -> None:
        await self.ctx.close()
