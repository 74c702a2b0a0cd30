"""A whole simulated charger's hardware: boards, meters and a reader on pseudo-terminals, plus EVs.

``SimulatedCharger`` wires the simulated devices to :class:`sim.wire.SerialWire` lines the way a real
charger is cabled (one RS-485 line shared by all Modbus devices, one UART per I/O board, one for the
reader), runs the physics (EV pilot -> board, PWM offer -> EV draw -> meter registers), and writes the
agent configuration that points the agent at the host ends of those lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from sim.ev import EvModel
from sim.evse_din import SimulatedEvseDin
from sim.interfaces import ElectricalState, SimulatedBoard, SimulatedMeter, SimulatedReader
from sim.ioboard import SimulatedIoBoard
from sim.meters import SimulatedModbusMeter
from sim.modbus_server import SimulatedRs485Bus
from sim.pn532 import SimulatedPn532
from sim.rdm6300 import SimulatedRdm6300
from sim.wire import SerialWire

log = logging.getLogger(__name__)

BoardKind = Literal["ioboard", "evse_din"]
MeterKind = Literal["sdm630", "sdm120", "abb_b23"]
ReaderKind = Literal["pn532", "rdm6300"]

#: Unit ids on the shared RS-485 line: meter of connector n at n, EVSE-DIN board of connector n at 10 + n.
BOARD_UNIT_OFFSET = 10


@dataclass
class ChargerSpec:
    charge_point_id: str = "SIM-CP-0001"
    connectors: int = 2
    board: BoardKind = "ioboard"
    meter: MeterKind = "sdm630"
    reader: ReaderKind = "pn532"
    max_current_a: float = 32.0
    ev_max_current_a: float = 32.0
    tick_s: float = 0.05


@dataclass
class SimulatedConnector:
    id: int
    ev: EvModel
    board: SimulatedBoard
    meter: SimulatedMeter
    electrical: ElectricalState = field(default_factory=ElectricalState)


class SimulatedCharger:
    def __init__(self, spec: ChargerSpec) -> None:
        self.spec = spec
        self.wires: dict[str, SerialWire] = {}
        self.connectors: dict[int, SimulatedConnector] = {}
        self.reader: SimulatedReader | None = None
        self._rs485: SimulatedRs485Bus | None = None
        self._closers: list[SimulatedIoBoard | SimulatedPn532 | SimulatedRdm6300] = []
        self._physics: asyncio.Task[None] | None = None

    async def start(self) -> None:
        spec = self.spec
        phases = 1 if spec.meter == "sdm120" else 3
        rs485 = await self._wire("rs485")
        self._rs485 = SimulatedRs485Bus(rs485.device_port)
        for n in range(1, spec.connectors + 1):
            meter = SimulatedModbusMeter(unit=n, model=spec.meter)
            self._rs485.attach(meter)
            board: SimulatedBoard
            if spec.board == "evse_din":
                din = SimulatedEvseDin(unit=BOARD_UNIT_OFFSET + n)
                self._rs485.attach(din)
                board = din
            else:
                wire = await self._wire(f"board{n}")
                io = SimulatedIoBoard(wire.device_port)
                await io.start()
                self._closers.append(io)
                board = io
            ev = EvModel(max_current_a=spec.ev_max_current_a, phases=phases)
            self.connectors[n] = SimulatedConnector(n, ev, board, meter)
        await self._rs485.start()
        reader_wire = await self._wire("reader")
        reader: SimulatedPn532 | SimulatedRdm6300
        reader = SimulatedPn532(reader_wire.device_port) if spec.reader == "pn532" else \
            SimulatedRdm6300(reader_wire.device_port)
        await reader.start()
        self._closers.append(reader)
        self.reader = reader
        self._physics = asyncio.create_task(self._run_physics(), name="sim-physics")

    async def _wire(self, name: str) -> SerialWire:
        wire = SerialWire(name)
        await wire.start()
        self.wires[name] = wire
        return wire

    async def close(self) -> None:
        if self._physics is not None:
            self._physics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._physics
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = closer.close()
                if inspect.isawaitable(result):
                    await result
        if self._rs485 is not None:
            await self._rs485.close()
        for wire in self.wires.values():
            wire.close()

    def step(self, dt_s: float) -> None:
        """Advance the physics by ``dt_s``: pilot from EV to board, current from offer, energy into meters."""
        for c in self.connectors.values():
            c.board.set_ev_pilot(c.ev.pilot())
            c.electrical.current_a = c.ev.draw(c.board.offered_current_a, c.board.contactor_closed)
            before = c.electrical.energy_import_wh
            c.electrical.advance(dt_s)
            c.ev.absorb(c.electrical.energy_import_wh - before)
            c.meter.update(c.electrical)

    async def _run_physics(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.spec.tick_s)
            now = time.monotonic()
            self.step(now - last)
            last = now

    def agent_config(self, state_dir: str) -> str:
        """The agent's TOML configuration for this hardware (what a technician writes when commissioning)."""
        spec = self.spec
        lines = [
            "# written by the simulator (python -m sim up)",
            "[charge_point]", f'id = "{spec.charge_point_id}"', "",
            "[storage]", f'dir = "{state_dir}"', "",
            "[buses.rs485]", f'port = "{self.wires["rs485"].host_port}"', "baudrate = 9600", "",
        ]
        for n in self.connectors:
            lines += ["[[connectors]]", f"id = {n}", f"max_current_a = {spec.max_current_a}",
                      f"phases = {1 if spec.meter == 'sdm120' else 3}"]
            if spec.board == "evse_din":
                lines.append(f'board = {{ driver = "evse_din", bus = "rs485", unit = {BOARD_UNIT_OFFSET + n} }}')
            else:
                lines.append(f'board = {{ driver = "ioboard", port = "{self.wires[f"board{n}"].host_port}" }}')
            lines += [f'meter = {{ model = "{spec.meter}", bus = "rs485", unit = {n}, poll_interval_s = 1.0 }}', ""]
        lines += ["[[readers]]", f'driver = "{spec.reader}"', f'port = "{self.wires["reader"].host_port}"', ""]
        return "\n".join(lines)
