"""What the simulated CSMS knows about each charge point, kept as plain records tests can read.

Payload fragments are stored as they arrived on the wire (camelCase dicts), so a test compares against
what the charge point sent rather than against a re-interpretation of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class BootRecord:
    payload: dict[str, Any]  # the BootNotification.req as sent
    status: str  # what we answered
    interval: int
    at: datetime


@dataclass(frozen=True)
class ConnectorStatus:
    connector_id: int
    status: str
    error_code: str
    info: str | None
    vendor_id: str | None
    vendor_error_code: str | None
    timestamp: str | None  # the charge point's own timestamp, verbatim
    received_at: datetime


@dataclass
class Transaction:
    """One transaction as the CSMS saw it. ``started`` is False for a StopTransaction we never saw start."""

    transaction_id: int
    connector_id: int | None
    id_tag: str | None
    meter_start: int | None
    start_timestamp: str | None
    reservation_id: int | None = None
    id_tag_status: str | None = None  # the status we answered to StartTransaction
    started: bool = True
    meter_values: list[dict[str, Any]] = field(default_factory=list)  # MeterValue objects, verbatim
    meter_stop: int | None = None
    stop_timestamp: str | None = None
    stop_reason: str | None = None  # as sent; absent means "Local" (OCPP 1.6 Reason)
    stop_id_tag: str | None = None
    stop_count: int = 0  # > 1 when the charge point retried a StopTransaction we had already processed
    repeat_count: int = 0  # identical StartTransactions recognised after the first (answers it lost)

    @property
    def is_open(self) -> bool:
        return self.stop_count == 0

    @property
    def energy_wh(self) -> int | None:
        if self.meter_start is None or self.meter_stop is None:
            return None
        return self.meter_stop - self.meter_start


@dataclass
class Transaction201:
    """One OCPP 2.0.1 transaction as the CSMS saw it: the station's own id and every TransactionEvent of it, in
    the order received (``events``: the requests verbatim)."""

    transaction_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def event_types(self) -> list[str]:
        return [str(e["eventType"]) for e in self.events]

    @property
    def seq_nos(self) -> list[int]:
        return [int(e["seqNo"]) for e in self.events]

    @property
    def is_open(self) -> bool:
        return "Ended" not in self.event_types


@dataclass
class ChargePointState:
    cp_id: str
    connected: bool = False
    connected_at: datetime | None = None
    disconnected_at: datetime | None = None
    connection_count: int = 0
    remote_address: str | None = None
    boots: list[BootRecord] = field(default_factory=list)
    registration_status: str | None = None  # None until the first BootNotification was answered
    heartbeat_count: int = 0
    last_heartbeat_at: datetime | None = None
    connectors: dict[int, ConnectorStatus] = field(default_factory=dict)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    # MeterValues.req payloads not tied to a transaction we know ({connectorId, transactionId?, meterValue})
    meter_values: list[dict[str, Any]] = field(default_factory=list)
    data_transfers: list[dict[str, Any]] = field(default_factory=list)  # DataTransfer.req from the CP
    security_events: list[dict[str, Any]] = field(default_factory=list)  # SecurityEventNotification.req, in order
    notify_events: list[dict[str, Any]] = field(default_factory=list)  # 2.0.1 NotifyEventRequest, in order
    csrs: list[str] = field(default_factory=list)  # SignCertificate.req CSRs (PEM), in order
    firmware_status: str | None = None
    diagnostics_status: str | None = None
    signed_firmware_status: str | None = None  # SignedFirmwareStatusNotification.req (security whitepaper)
    log_status: str | None = None  # LogStatusNotification.req (security whitepaper)
    # OCPP 2.0.1: transactions by the station's id; TransactionEvent requests in the order received
    transactions201: dict[str, Transaction201] = field(default_factory=dict)
    transaction_events: list[dict[str, Any]] = field(default_factory=list)
    notify_reports: list[dict[str, Any]] = field(default_factory=list)  # NotifyReport requests, as received
    reservation_updates: list[dict[str, Any]] = field(default_factory=list)  # 2.0.1 ReservationStatusUpdate requests
    charging_profile_reports: list[dict[str, Any]] = field(default_factory=list)  # 2.0.1 ReportChargingProfiles
    #: 2.0.1 NotifyChargingLimit / ClearedChargingLimit: (action, payload), in arrival order
    charging_limits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def last_boot(self) -> BootRecord | None:
        return self.boots[-1] if self.boots else None

    @property
    def open_transactions(self) -> list[Transaction]:
        return [t for t in self.transactions.values() if t.is_open]

    @property
    def closed_transactions(self) -> list[Transaction]:
        return [t for t in self.transactions.values() if not t.is_open]

    def connector_status(self, connector_id: int) -> str | None:
        c = self.connectors.get(connector_id)
        return None if c is None else c.status
