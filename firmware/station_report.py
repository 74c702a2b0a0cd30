"""What the charger says about itself: diagnostics for the CSMS (DataTransfer), health for MQTT, and the hardware
as commissioned. Read-only views over the running pieces; the adapter is attached once it exists (it needs
these views when it is built)."""

from __future__ import annotations

import dataclasses
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.config import AgentConfig
from firmware.hardware import ChargerHardware
from firmware.ocpp.adapter import OcppAdapter
from firmware.task_supervisor import TaskSupervisor


class StationReport:
    def __init__(self, config: AgentConfig, hardware: ChargerHardware, connectors: dict[int, ConnectorController],
                 tasks: TaskSupervisor) -> None:
        self.config, self.hardware, self.connectors, self.tasks = config, hardware, connectors, tasks
        self.ocpp: OcppAdapter | None = None
        self.callback_errors = 0  # exceptions in event-loop callbacks (serial reads, ...): faults of ours

    def _devices(self) -> dict[str, Any]:
        return {d.name: dataclasses.asdict(d.stats) for d in self.hardware.devices()}

    def _outbox(self) -> dict[str, Any] | None:
        return dataclasses.asdict(self.ocpp.outbox_stats()) if self.ocpp is not None else None

    def diagnostics(self) -> dict[str, Any]:
        """Link counters of every device and each connector's state (for DataTransfer Diagnostics)."""
        return {"devices": self._devices(), "connectors": [c.describe() for c in self.connectors.values()],
                "outbox": self._outbox(), "tasks": self.tasks.report(), "callbackErrors": self.callback_errors}

    def health(self) -> dict[str, Any]:
        """For the MQTT health message: the CSMS link, the outbox, the devices' link counters and the tasks."""
        return {"ocpp_connected": self.ocpp.online if self.ocpp is not None else None, "outbox": self._outbox(),
                "devices": self._devices(), "tasks": self.tasks.report(), "callback_errors": self.callback_errors}

    def hardware_summary(self) -> dict[str, Any]:
        """The devices as commissioned (for the Hardware DataTransfer): drivers, models, ports, addresses."""
        cfg, ident = self.config, self.config.identity
        connectors = []
        for c in cfg.connectors:
            hw = self.hardware.connectors[c.id]
            # lockSupported: what the board says it can drive (the I/O board's CABLE_LOCK; never on an EVSE-DIN)
            board: dict[str, Any] = {"name": hw.board.name, "driver": c.board.driver,
                                     "lockSupported": hw.board.lock_supported}
            board.update({"port": c.board.port} if c.board.port is not None else {"bus": c.board.bus,
                                                                                 "unit": c.board.unit})
            meter = None if c.meter is None or hw.meter is None else {
                "name": hw.meter.name, "model": c.meter.model, "bus": c.meter.bus, "unit": c.meter.unit}
            connectors.append({"connector": c.id, "maxCurrentA": c.max_current_a, "phases": c.phases,
                               "cable": c.cable, "board": board, "meter": meter})
        readers = [{"name": rh.reader.name, "driver": r.driver, "port": r.port,
                    "connectors": list(r.connectors or self.connectors)}
                   for r, rh in zip(cfg.readers, self.hardware.readers, strict=True)]
        summary: dict[str, Any] = {"chargePointVendor": ident.vendor, "chargePointModel": ident.model,
                                   "firmwareVersion": ident.firmware_version}
        if ident.serial_number:
            summary["chargePointSerialNumber"] = ident.serial_number
        summary["buses"] = [{"name": b.name, "port": b.port, "baudrate": b.baudrate} for b in cfg.buses.values()]
        summary["connectors"] = connectors
        summary["readers"] = readers
        return summary
