"""What the agent needs of an OCPP adapter, and the one place that picks the adapter for ``[ocpp] version``.

The agent depends on :class:`OcppAdapter` only: OCPP 1.6 today (:class:`~firmware.ocpp.v16.client.Ocpp16Client`),
2.0.1 next, on the same charger layer. An adapter is a connector observer (``record`` in the event's commit,
``notify`` after it), decides the session machine's settings its configuration controls, and hands the agent
its long-running loops to supervise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Protocol

from firmware.charger.connector import ConnectorController
from firmware.charger.coordinator import Coordinator
from firmware.charger.smart_charging import SmartChargingScheduler
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.maintenance.diagnostics import DiagnosticsSources
from firmware.maintenance.updater import FirmwareUpdater
from firmware.session import Effect, SessionConfig
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import OutboxStats
from hal.interfaces import MeterReading

#: Starts a worker of one CSMS connection: ``spawn(coro, name)`` (the agent's task supervisor).
Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


class OcppAdapter(Protocol):
    @property
    def online(self) -> bool:
        """Connected to the CSMS and accepted by it."""

    @property
    def response_timeout_s(self) -> float: ...

    def session_config(self, base: SessionConfig) -> SessionConfig:
        """``base`` (a connector's rating) with the settings this adapter's configuration controls."""

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The adapter's long-running loops by task name (the CSMS link, metering), for the task supervisor."""

    def outbox_stats(self) -> OutboxStats: ...

    def reset_retries(self) -> int:
        """How often a Hard reset whose reboot did not happen is asked again (1.6 ResetRetries, 2.0.1
        OCPPCommCtrlr.ResetRetries)."""

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None: ...

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None: ...

    async def close_orphaned_transactions(self) -> int:
        """After a restart: stop transactions the ledger has open that no connector holds."""

    async def drain(self, timeout_s: float) -> None:
        """Before the agent exits: let a delivery in flight finish."""

    async def close(self) -> None: ...


def create_adapter(config: AgentConfig, db: Database, connectors: dict[int, ConnectorController], *,
                   coordinator: Coordinator, ledger: Ledger, smart_charging: SmartChargingScheduler,
                   request_exit: Callable[[ExitCode], None],
                   diagnostics: Callable[[], dict[str, Any]], hardware: Callable[[], dict[str, Any]],
                   spawn: Spawn, firmware: FirmwareUpdater | None = None,
                   diagnostics_sources: DiagnosticsSources | None = None) -> OcppAdapter:
    """The adapter ``config.ocpp.version`` names. ``connectors`` may still be empty: the adapter keeps the dict
    (it decides the connectors' session settings, so it exists before them)."""
    assert config.ocpp is not None
    if config.ocpp.version == "1.6":
        from firmware.ocpp.v16.client import Ocpp16Client
        from firmware.ocpp.v16.configuration import ConfigurationKeys
        from firmware.ocpp.v16.reservation import fixed_keys

        keys = ConfigurationKeys(db, len(config.connectors), presets=config.ocpp.presets,
                                 fixed=fixed_keys(config.ocpp))
        return Ocpp16Client(config, connectors, db, keys, request_exit=request_exit, coordinator=coordinator,
                            diagnostics=diagnostics, hardware=hardware, ledger=ledger, spawn=spawn,
                            smart_charging=smart_charging, firmware=firmware,
                            diagnostics_sources=diagnostics_sources)
    raise ValueError(f"no OCPP adapter for version {config.ocpp.version!r}")  # the configuration refuses it first
