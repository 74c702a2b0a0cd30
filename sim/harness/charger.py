"""A whole simulated charger's hardware: boards, meters and a reader on pseudo-terminals, plus EVs.

``SimulatedCharger`` wires the simulated devices to :class:`sim.devices.serial_wire.SerialWire` lines the way a real
charger is cabled (one RS-485 line shared by all Modbus devices, one UART per I/O board, one for the
reader), runs the physics (EV pilot -> board, PWM offer -> EV draw -> meter registers), injects faults
into devices and lines, and writes the agent configuration that points the agent at the host ends of
those lines.

Pilot physics (IEC 61851-1 annex A): a plugged-in EV presents B with switch S2 open and closes S2
(state C, or D with ventilation) only once the EVSE offers a current by PWM (B2 -> C2); when the PWM
goes away it stops drawing and opens S2 again (C1 is only a transition state). So a freshly plugged EV
reads B until the agent starts offering current.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from hal.interfaces import PilotState
from sim.devices.ev import EvModel
from sim.devices.evse_din import SimulatedEvseDin
from sim.devices.interfaces import BoardFault, ElectricalState, SimulatedBoard, SimulatedMeter, SimulatedReader
from sim.devices.ioboard import SimulatedIoBoard
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.meters import SimulatedModbusMeter
from sim.devices.pn532 import SimulatedPn532
from sim.devices.rdm6300 import SimulatedRdm6300
from sim.devices.rs485_bus import SimulatedRs485Bus
from sim.devices.serial_wire import Direction, SerialWire

log = logging.getLogger(__name__)

BoardKind = Literal["ioboard", "ioboard-mcu", "evse_din"]
MeterKind = Literal["sdm630", "sdm120", "abb_b23"]
ReaderKind = Literal["pn532", "rdm6300"]

#: Unit ids on the shared RS-485 line: meter of connector n at n, EVSE-DIN board of connector n at 10 + n.
BOARD_UNIT_OFFSET = 10

_EV_READY = (PilotState.C, PilotState.D)


class FaultDevice(StrEnum):
    PILOT = "pilot"  # the connector's EVSE board (pilot, contactor, RCD, temperature); alias "board"
    METER = "meter"
    RFID = "rfid"


class LineFault(StrEnum):
    """Faults of the serial line a device hangs on (the :class:`SerialWire` relay), not of the device."""

    LINE_SILENT = "line_silent"  # the cable is cut: nothing passes (persistent until cleared)
    GARBAGE = "garbage"  # ``count`` random bytes are put on the line now (one shot)
    TRUNCATE = "truncate"  # the next ``count`` chunks are cut in half (one shot)
    NOISE = "noise"  # every byte has a bit flipped with ``probability`` (persistent until cleared)


#: Device-level fault kinds per device (board kinds are :class:`BoardFault`).
DEVICE_FAULT_KINDS: dict[FaultDevice, tuple[str, ...]] = {
    FaultDevice.PILOT: tuple(f.value for f in BoardFault),
    FaultDevice.METER: ("silent",),
    FaultDevice.RFID: ("silent",),
}
LINE_DIRECTIONS = ("to_host", "to_device", "both")


class UnknownTarget(LookupError):
    """A connector or reader that this charger does not have."""


class FaultNotApplicable(ValueError):
    """A fault request that names no fault of that device, or one the device cannot have."""


@dataclass(frozen=True)
class FaultRequest:
    device: FaultDevice
    kind: str
    active: bool = True
    connector: int | None = None  # required for pilot and meter
    count: int | None = None  # garbage: bytes (default 16); truncate: chunks (default 1)
    probability: float = 0.01  # noise: per-byte bit-flip probability
    direction: str | None = None  # line faults: to_host (device -> agent, the default), to_device, both;
    # line_silent defaults to both (a cut cable)


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
    #: the agent's ``cable`` setting for every connector (None: the agent's default for the board)
    cable: str | None = None


@dataclass(frozen=True)
class OcppSettings:
    """The ``[ocpp]`` section the simulator writes: base URL (the agent appends its identity)."""

    csms_url: str
    password: str | None = field(default=None, repr=False)
    presets: dict[str, str] = field(default_factory=dict)  # OCPP configuration keys set at first boot
    security_profile: int | None = None  # None: what the URL and password amount to
    csms_ca: str | None = None  # the CentralSystemRootCertificate(s) the agent trusts (profiles 2/3)
    cp_cert: str | None = None  # profile 3: the charge point certificate and key
    cp_key: str | None = None


@dataclass
class SimulatedConnector:
    id: int
    ev: EvModel
    board: SimulatedBoard
    meter: SimulatedMeter
    electrical: ElectricalState = field(default_factory=ElectricalState)
    s2_closed: bool = False  # the EV's switch S2: closed = C/D presented
    presented: PilotState = PilotState.A  # what the EV's resistors present on the pilot now

    @property
    def sensed_pilot(self) -> PilotState:
        """The pilot as the board senses it (an I/O board driving -12 V reads F whatever the EV does)."""
        if isinstance(self.board, SimulatedIoBoard | McuIoBoard):
            return self.board.pilot
        return self.presented


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class SimulatedCharger:
    def __init__(self, spec: ChargerSpec) -> None:
        self.spec = spec
        self.wires: dict[str, SerialWire] = {}
        self.connectors: dict[int, SimulatedConnector] = {}
        self.reader: SimulatedReader | None = None
        self.card: str | None = None  # UID on the reader now
        self._rs485: SimulatedRs485Bus | None = None
        self._closers: list[SimulatedIoBoard | McuIoBoard | SimulatedPn532 | SimulatedRdm6300] = []
        self._physics: asyncio.Task[None] | None = None
        self._removal: asyncio.Task[None] | None = None
        self._faults: dict[tuple[str, int | None, str], dict[str, Any]] = {}

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
                # ioboard-mcu: the board's own MicroPython firmware behind the pty instead of the CPython model
                io = McuIoBoard(wire.device_port) if spec.board == "ioboard-mcu" else SimulatedIoBoard(wire.device_port)
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
        for task in (self._physics, self._removal):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._physics = self._removal = None
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = closer.close()
                if inspect.isawaitable(result):
                    await result
        self._closers.clear()
        if self._rs485 is not None:
            await self._rs485.close()
            self._rs485 = None
        for wire in self.wires.values():
            wire.close()

    # ---- physics ---------------------------------------------------------------------------------

    def step(self, dt_s: float) -> None:
        """Advance the physics by ``dt_s``: pilot from EV to board, current from offer, energy into meters."""
        for c in self.connectors.values():
            wanted = c.ev.pilot()
            offered = c.board.offered_current_a > 0.0
            if wanted not in _EV_READY or not offered:
                c.s2_closed = False  # not ready, or no PWM (C1/D1 is only a transition): S2 opens
            elif not c.s2_closed:
                c.s2_closed = True  # B2 -> C2: the EV closes S2 once it sees the PWM offer
            c.presented = wanted if wanted not in _EV_READY or c.s2_closed else PilotState.B
            c.board.set_ev_pilot(c.presented)
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
            try:
                self.step(now - last)
            except Exception:  # a bug in one tick must not freeze the simulated world
                log.exception("physics step failed")
            last = now

    # ---- what an operator does -------------------------------------------------------------------

    def connector(self, n: int) -> SimulatedConnector:
        c = self.connectors.get(n)
        if c is None:
            raise UnknownTarget(f"no connector {n} (connectors: {', '.join(map(str, self.connectors))})")
        return c

    def tap(self, uid: str, hold_s: float = 1.0) -> None:
        """Put a card on the reader for ``hold_s`` seconds (ValueError if the reader cannot carry that UID).

        A new tap while a card is still held replaces it."""
        if self.reader is None:
            raise UnknownTarget("this charger has no reader")
        self.reader.present(uid)  # validates first: nothing changes on a bad UID
        self.card = uid
        if self._removal is not None:
            self._removal.cancel()
        self._removal = asyncio.create_task(self._remove_after(hold_s), name="sim-card-removal")

    async def _remove_after(self, hold_s: float) -> None:
        await asyncio.sleep(hold_s)
        if self.reader is not None:
            self.reader.remove()
        self.card = None

    # ---- fault injection -------------------------------------------------------------------------

    def wire_of(self, device: FaultDevice, connector: int | None) -> SerialWire:
        """The line a device hangs on. The RS-485 line is shared by every meter (and EVSE-DIN board)."""
        if device is FaultDevice.RFID:
            return self.wires["reader"]
        if device is FaultDevice.PILOT and self.spec.board != "evse_din":
            return self.wires[f"board{connector}"]
        return self.wires["rs485"]

    def apply_fault(self, req: FaultRequest) -> dict[str, Any]:
        """Inject or clear one fault. Raises :class:`UnknownTarget` / :class:`FaultNotApplicable`."""
        if req.device is not FaultDevice.RFID:
            if req.connector is None:
                raise FaultNotApplicable(f"{req.device} faults need a connector")
            self.connector(req.connector)
        connector = req.connector if req.device is not FaultDevice.RFID else None
        record: dict[str, Any] = {"device": str(req.device), "connector": connector, "kind": req.kind}
        if req.kind in tuple(LineFault):
            record.update(self._line_fault(req))
        elif req.kind in DEVICE_FAULT_KINDS[req.device]:
            self._device_fault(req)
        else:
            kinds = [*DEVICE_FAULT_KINDS[req.device], *LineFault]
            raise FaultNotApplicable(f"unknown {req.device} fault kind {req.kind!r} (known: {', '.join(kinds)})")
        key = (str(req.device), connector, req.kind)
        persistent = req.kind not in (LineFault.GARBAGE, LineFault.TRUNCATE)
        if req.active and persistent:
            self._faults[key] = record
        else:
            self._faults.pop(key, None)
        log.info("fault %s", "injected" if req.active else "cleared", extra=record)
        return {**record, "active": req.active and persistent}

    @property
    def active_faults(self) -> list[dict[str, Any]]:
        """Persistent faults injected and not cleared yet (one-shot line faults are not listed)."""
        return list(self._faults.values())

    def _device_fault(self, req: FaultRequest) -> None:
        if req.device is FaultDevice.RFID:
            assert self.reader is not None
            self.reader.set_silent(req.active)
            return
        assert req.connector is not None
        c = self.connector(req.connector)
        if req.device is FaultDevice.METER:
            c.meter.set_silent(req.active)
            return
        try:
            c.board.inject(BoardFault(req.kind), req.active)
        except ValueError as exc:  # e.g. EVSE-DIN has no temperature sensor
            raise FaultNotApplicable(str(exc)) from None

    def _line_fault(self, req: FaultRequest) -> dict[str, Any]:
        direction = req.direction or ("both" if req.kind == LineFault.LINE_SILENT else "to_host")
        if direction not in LINE_DIRECTIONS:
            raise FaultNotApplicable(f"direction must be one of {', '.join(LINE_DIRECTIONS)}")
        wire = self.wire_of(req.device, req.connector)
        directions = list(Direction) if direction == "both" else [Direction(direction)]
        count = req.count if req.count is not None else (16 if req.kind == LineFault.GARBAGE else 1)
        details: dict[str, Any] = {"wire": wire.name, "direction": direction}
        for d in directions:
            faults = wire.faults[d]
            match LineFault(req.kind):
                case LineFault.LINE_SILENT:
                    wire.set_silent(d, req.active)
                case LineFault.NOISE:
                    wire.set_noise(d, req.probability if req.active else 0.0)
                    details["probability"] = req.probability if req.active else 0.0
                case LineFault.GARBAGE:
                    if req.active:
                        wire.inject_garbage(d, count)
                    else:
                        faults.garbage_next = 0
                    details["count"] = count
                case LineFault.TRUNCATE:
                    if req.active:
                        wire.truncate_next(d, count)
                    else:
                        faults.truncate_next = 0
                    details["count"] = count
        return details

    # ---- observation -----------------------------------------------------------------------------

    def connector_state(self, n: int) -> dict[str, Any]:
        c = self.connector(n)
        ev = c.ev
        return {
            "id": n,
            "plugged": ev.plugged,
            "pilot": str(c.sensed_pilot),
            "ev_pilot": str(c.presented),
            "contactor_closed": c.board.contactor_closed,
            # the cable lock's position switch (None: a board without a lock)
            "cable_locked": c.board.cable_locked if isinstance(c.board, SimulatedIoBoard | McuIoBoard) else None,
            "offered_current_a": round(c.board.offered_current_a, 2),
            "ev_current_a": [round(a, 2) for a in c.electrical.current_a],
            "power_w": round(c.electrical.power_w, 1),
            "energy_wh": round(c.electrical.energy_import_wh, 3),
            "ev": {"max_current_a": ev.max_current_a, "paused": ev.paused, "ventilation": ev.ventilation,
                   "phases": ev.phases, "battery_wh": round(ev.battery_wh, 1), "full": ev.full},
        }

    def reader_state(self) -> dict[str, Any]:
        return {"id": 1, "model": self.spec.reader, "card": self.card,
                "silent": ("rfid", None, "silent") in self._faults}

    # ---- agent configuration ---------------------------------------------------------------------

    def agent_config(self, state_dir: str, ocpp: OcppSettings | None = None) -> str:
        """The agent's TOML configuration for this hardware (what a technician writes when commissioning)."""
        spec, q = self.spec, toml_string
        lines = [
            "# written by the simulator (python -m sim up)",
            "[charge_point]", f"id = {q(spec.charge_point_id)}", "",
            "[storage]", f"dir = {q(state_dir)}", "",
        ]
        if ocpp is not None:
            lines += ["[ocpp]", f"csms_url = {q(ocpp.csms_url)}"]
            if ocpp.password is not None:
                lines.append(f"password = {q(ocpp.password)}")
            if ocpp.security_profile is not None:
                lines.append(f"security_profile = {ocpp.security_profile}")
            for name in ("csms_ca", "cp_cert", "cp_key"):
                if (value := getattr(ocpp, name)) is not None:
                    lines.append(f"{name} = {q(value)}")
            lines.append("")
            if ocpp.presets:
                lines.append("[ocpp.presets]")
                lines += [f"{q(k)} = {q(v)}" for k, v in ocpp.presets.items()]
                lines.append("")
        lines += ["[buses.rs485]", f"port = {q(self.wires['rs485'].host_port)}", "baudrate = 9600", ""]
        for n in self.connectors:
            lines += ["[[connectors]]", f"id = {n}", f"max_current_a = {spec.max_current_a}",
                      f"phases = {1 if spec.meter == 'sdm120' else 3}"]
            if spec.board == "evse_din":
                lines.append(f'board = {{ driver = "evse_din", bus = "rs485", unit = {BOARD_UNIT_OFFSET + n} }}')
            else:
                lines.append(f'board = {{ driver = "ioboard", port = {q(self.wires[f"board{n}"].host_port)} }}')
            if spec.cable is not None:
                lines.append(f"cable = {q(spec.cable)}")
            lines += [f'meter = {{ model = "{spec.meter}", bus = "rs485", unit = {n}, poll_interval_s = 1.0 }}', ""]
        lines += ["[[readers]]", f'driver = "{spec.reader}"', f"port = {q(self.wires['reader'].host_port)}", ""]
        return "\n".join(lines)
