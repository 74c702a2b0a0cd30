"""The one place that picks the OCPP adapter for ``[ocpp] version`` (apart from :mod:`firmware.ocpp.adapter`,
which both adapters import: an adapter never imports another, so the choice lives beside them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.charger.coordinator import Coordinator
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import SmartChargingScheduler
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.maintenance.diagnostics import DiagnosticsSources
from firmware.maintenance.updater import FirmwareUpdater
from firmware.ocpp.adapter import OcppAdapter, Spawn
from firmware.storage import Database
from firmware.storage.ledger import Ledger


def create_adapter(config: AgentConfig, db: Database, connectors: dict[int, ConnectorController], *,
                   coordinator: Coordinator, ledger: Ledger, smart_charging: SmartChargingScheduler,
                   request_exit: Callable[[ExitCode], None],
                   diagnostics: Callable[[], dict[str, Any]], hardware: Callable[[], dict[str, Any]],
                   spawn: Spawn, firmware: FirmwareUpdater | None = None,
                   diagnostics_sources: DiagnosticsSources | None = None,
                   limits: LimitApplier | None = None) -> OcppAdapter:
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
                            smart_charging=smart_charging, limits=limits, firmware=firmware,
                            diagnostics_sources=diagnostics_sources)
    if config.ocpp.version == "2.0.1":
        from firmware.ocpp.v201.client import Ocpp201Client

        return Ocpp201Client(config, connectors, db, request_exit=request_exit, coordinator=coordinator, ledger=ledger,
                             spawn=spawn, firmware=firmware, diagnostics_sources=diagnostics_sources,
                             smart_charging=smart_charging, limits=limits, diagnostics=diagnostics,
                             hardware=hardware)
    raise ValueError(f"no OCPP adapter for version {config.ocpp.version!r}")  # the configuration refuses it first
