"""Builds the charger's hardware (HAL drivers) from the configuration, and owns their lifetime.

RS-485 buses are shared: every Modbus device configured on the same ``[buses.NAME]`` talks through
one :class:`hal.modbus_bus.ModbusBus`, which serializes their transactions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from firmware.config import AgentConfig, ConnectorConfig, ReaderConfig
from hal.evse_din.driver import EvseDinBoard
from hal.interfaces import EnergyMeter, EvseBoard, IdReader
from hal.ioboard.driver import IoBoard
from hal.meter_modbus import ModbusMeter, load_register_map
from hal.modbus_bus import ModbusBus
from hal.pn532.driver import Pn532Reader
from hal.rdm6300.driver import Rdm6300Reader
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)


@dataclass
class ConnectorHardware:
    id: int
    board: EvseBoard
    meter: EnergyMeter | None
    max_current_a: float
    phases: int


@dataclass
class ReaderHardware:
    reader: IdReader
    connectors: tuple[int, ...]  # empty: all connectors


@dataclass
class ChargerHardware:
    buses: dict[str, ModbusBus] = field(default_factory=dict)
    connectors: dict[int, ConnectorHardware] = field(default_factory=dict)
    readers: list[ReaderHardware] = field(default_factory=list)

    def devices(self) -> list[EvseBoard | EnergyMeter | IdReader]:
        out: list[EvseBoard | EnergyMeter | IdReader] = []
        for c in self.connectors.values():
            out.append(c.board)
            if c.meter is not None:
                out.append(c.meter)
        out.extend(r.reader for r in self.readers)
        return out

    async def start(self) -> None:
        """Open every bus and start every device. A device that does not answer yet is logged and keeps
        being retried by its driver; the charger starts anyway (that connector reports its fault)."""
        for bus in self.buses.values():
            await bus.open()
        results = await asyncio.gather(*(d.start() for d in self.devices()), return_exceptions=True)
        for device, result in zip(self.devices(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("device did not start", extra={"device": device.name, "error": str(result)})

    async def close(self) -> None:
        for d in self.devices():
            try:
                await d.close()
            except Exception as exc:  # closing is best effort; report and go on with the rest
                log.warning("device close failed", extra={"device": d.name, "error": str(exc)})
        for bus in self.buses.values():
            await bus.close()


def _board(c: ConnectorConfig, buses: dict[str, ModbusBus], spawn: Spawn) -> EvseBoard:
    name = f"board{c.id}"
    if c.board.driver == "ioboard":
        assert c.board.port is not None
        return IoBoard(name, c.board.port, baudrate=c.board.baudrate or 115200, spawn=spawn)
    assert c.board.bus is not None
    return EvseDinBoard(name, buses[c.board.bus], c.board.unit, spawn=spawn)


def _reader(r: ReaderConfig, index: int, spawn: Spawn) -> IdReader:
    name = f"reader{index + 1}"
    if r.driver == "pn532":
        return Pn532Reader(name, r.port, baudrate=r.baudrate or 115200, spawn=spawn)
    return Rdm6300Reader(name, r.port, baudrate=r.baudrate or 9600, spawn=spawn)


def build_hardware(config: AgentConfig, spawn: Spawn = create_task) -> ChargerHardware:
    """``spawn`` starts the drivers' loops (the agent's task supervisor watches them)."""
    hw = ChargerHardware()
    for name, b in config.buses.items():
        hw.buses[name] = ModbusBus(b.port, baudrate=b.baudrate, parity=b.parity, stopbits=b.stopbits,
                                   timeout_s=b.timeout_s, name=name)
    for c in config.connectors:
        meter: EnergyMeter | None = None
        if c.meter is not None:
            meter = ModbusMeter(f"meter{c.id}", hw.buses[c.meter.bus], c.meter.unit,
                                load_register_map(c.meter.model), poll_interval_s=c.meter.poll_interval_s,
                                spawn=spawn)
        hw.connectors[c.id] = ConnectorHardware(c.id, _board(c, hw.buses, spawn), meter, c.max_current_a, c.phases)
    for i, r in enumerate(config.readers):
        hw.readers.append(ReaderHardware(_reader(r, i, spawn), r.connectors))
    return hw
