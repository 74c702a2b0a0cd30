"""Energy meter driver for Modbus RTU meters described by a register map (hal/maps/*.json).

The driver is a thin translator: one poll reads the map's quantities in the block requests planned
by :func:`hal.registermap.plan_reads` (not one request per value), converts them to a
:class:`MeterReading` (SI-coherent units: V, A, W, Wh, Hz) and publishes it. It shares its
:class:`ModbusBus` with other devices on the same RS-485 line and never closes it.

Faults, latched by :class:`hal.faults.FaultLatch`: after ``fail_after`` consecutive polls without
an answer it publishes ``DeviceFault(LINK_LOST)`` once, and ``DeviceRecovered`` at the next good poll.
A meter that does answer but refuses (Modbus exception) or reports nonsense (NaN) is not a lost link:
that is logged as an error naming unit, address and exception, counted, and after ``fail_after``
polls in a row raised as ``DeviceFault(DEVICE_ERROR)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from importlib import resources
from typing import Final

from hal.events import EventStream
from hal.faults import FaultLatch
from hal.interfaces import (
    DeviceError,
    FaultCode,
    MeterEvent,
    MeterReading,
    utcnow,
)
from hal.modbus_bus import ModbusBus, ModbusExceptionResponse
from hal.registermap import (
    BlockRead,
    RegisterDecodeError,
    RegisterMap,
    RegisterMapError,
    decode_block,
    load_map_file,
    plan_reads,
    to_base_unit,
)
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)

# Quantity names a meter map uses, and the units each may be given in.
_UNITS_BY_KIND: Final[dict[str, frozenset[str]]] = {
    "voltage": frozenset({"V"}),
    "current": frozenset({"A"}),
    "power": frozenset({"W", "kW"}),
    "energy": frozenset({"Wh", "kWh"}),
    "frequency": frozenset({"Hz"}),
}
OPTIONAL_QUANTITIES: Final = ("frequency", "energy_export")
_MODEL_NAME = re.compile(r"^[a-z0-9_]+$")


def required_quantities(phases: int) -> tuple[str, ...]:
    per_phase = [f"{kind}_l{i}" for kind in ("voltage", "current") for i in range(1, phases + 1)]
    return (*per_phase, "power_total", "energy_import")


def check_meter_map(m: RegisterMap) -> None:
    """Check that a register map describes an energy meter this driver can read."""
    known = set(required_quantities(m.phases)) | set(OPTIONAL_QUANTITIES)
    missing = [n for n in required_quantities(m.phases) if n not in m.quantities]
    if missing:
        raise RegisterMapError(f"{m.source}: quantities: a {m.phases}-phase meter map needs "
                               f"{', '.join(missing)}")
    for name, q in m.quantities.items():
        if name not in known:
            raise RegisterMapError(f"{m.source}: quantities.{name}: not a meter quantity; expected some of "
                                   f"{', '.join(sorted(known))}")
        allowed = _UNITS_BY_KIND[name.split("_")[0]]
        if q.unit not in allowed:
            raise RegisterMapError(f"{m.source}: quantities.{name}.unit: expected {' or '.join(sorted(allowed))}, "
                                   f"got {q.unit!r}")


def available_models() -> list[str]:
    maps = resources.files("hal").joinpath("maps")
    return sorted(p.name.removesuffix(".json") for p in maps.iterdir() if p.name.endswith(".json"))


def load_register_map(model: str) -> RegisterMap:
    """The bundled register map of a meter model ("sdm630", "sdm120", "abb_b23", ...)."""
    models = available_models()
    if not _MODEL_NAME.match(model) or model not in models:
        raise RegisterMapError(f"unknown meter model {model!r}; available: {', '.join(models)}")
    with resources.as_file(resources.files("hal").joinpath("maps", f"{model}.json")) as path:
        m = load_map_file(path)
    if m.model != model:
        raise RegisterMapError(f"{m.source}: model: expected {model!r} (the file's name), got {m.model!r}")
    check_meter_map(m)
    return m


class InvalidMeterValue(DeviceError):
    """The meter answered, but with a value that is not a number (e.g. a float32 NaN)."""


class ModbusMeter:
    """An energy meter on a shared Modbus RTU line, read through its register map."""

    def __init__(
        self,
        name: str,
        bus: ModbusBus,
        unit: int,
        register_map: RegisterMap,
        *,
        poll_interval_s: float = 1.0,
        fail_after: int = 3,
        spawn: Spawn = create_task,
    ) -> None:
        if poll_interval_s <= 0 or fail_after < 1:
            raise ValueError("poll_interval_s must be > 0 and fail_after >= 1")
        check_meter_map(register_map)
        self.name = name
        self._spawn = spawn
        self.bus = bus
        self.unit = unit
        self.register_map = register_map
        self.poll_interval_s = poll_interval_s
        self.fail_after = fail_after
        self.events: EventStream[MeterEvent] = EventStream()
        self.stats = bus.unit_stats(unit)  # this unit's share of the line's counters
        self.plan: tuple[BlockRead, ...] = tuple(plan_reads(register_map))
        self._latest: MeterReading | None = None
        self._task: asyncio.Task[None] | None = None
        self._link_failures = 0  # consecutive polls without an answer
        self._device_failures = 0  # consecutive polls answered with an error
        self._faults = FaultLatch(name, self.events)

    @property
    def latest(self) -> MeterReading | None:
        return self._latest

    def __repr__(self) -> str:
        return f"ModbusMeter({self.name!r}, {self.register_map.model}, unit {self.unit} on {self.bus.port})"

    async def start(self) -> None:
        """Open the (shared) line if needed and begin polling every ``poll_interval_s``."""
        if self._task is not None:
            return
        await self.bus.open()
        self._task = self._spawn(self._poll_loop(), name=f"meter-poll-{self.name}")
        log.info("meter %s: polling %s unit %d on %s every %.3fs in %d request(s)", self.name,
                 self.register_map.model, self.unit, self.bus.port, self.poll_interval_s, len(self.plan))

    async def close(self) -> None:
        """Stop polling. The bus stays open: other devices may share it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def read(self) -> MeterReading:
        """One full poll now, in the planned block requests."""
        values: dict[str, float] = {}
        try:
            for block in self.plan:
                read = (self.bus.read_input_registers if block.function == "input"
                        else self.bus.read_holding_registers)
                registers = await read(self.unit, block.address, block.count)
                values.update(self._decode(block, registers))
            reading = self._reading(values)
        except (ModbusExceptionResponse, InvalidMeterValue) as exc:
            if isinstance(exc, InvalidMeterValue):  # the bus counted exception answers already
                self.stats.exceptions += 1
            self._device_failure(exc)
            raise
        except DeviceError as exc:
            self._link_failure(exc)
            raise
        self._success()
        self._latest = reading
        return reading

    def _decode(self, block: BlockRead, registers: list[int]) -> dict[str, float]:
        """The block's values; registers that cannot be decoded are the meter answering nonsense."""
        try:
            return decode_block(self.register_map, block, registers)
        except RegisterDecodeError as exc:
            raise InvalidMeterValue(f"meter {self.name}: unit {self.unit} answered the read at address "
                                    f"{block.address} (0x{block.address:04X}) with undecodable registers: "
                                    f"{exc}") from None

    def _reading(self, values: dict[str, float]) -> MeterReading:
        taken_at = utcnow()  # the last block's answer has just arrived
        quantities = self.register_map.quantities
        si_values: dict[str, float] = {}
        for name, value in values.items():
            q = quantities[name]
            si_value = to_base_unit(value, q.unit)
            if not math.isfinite(si_value):  # NaN or infinity from the meter, or overflowing its scale
                raise InvalidMeterValue(f"meter {self.name}: unit {self.unit} reported {value} {q.unit} for "
                                        f"{name} at address {q.address} (0x{q.address:04X})")
            si_values[name] = si_value

        def si(name: str) -> float:
            return si_values[name]

        def optional(name: str) -> float | None:
            return si(name) if name in values else None

        phases = range(1, self.register_map.phases + 1)
        return MeterReading(
            device=self.name,
            taken_at=taken_at,
            energy_import_wh=si("energy_import"),
            power_w=si("power_total"),
            current_a=tuple(si(f"current_l{i}") for i in phases),
            voltage_v=tuple(si(f"voltage_l{i}") for i in phases),
            frequency_hz=optional("frequency"),
            energy_export_wh=optional("energy_export"),
        )

    # --- fault bookkeeping ----------------------------------------------------------------------

    def _link_failure(self, exc: DeviceError) -> None:
        self._link_failures += 1
        if self._link_failures == 1:
            log.warning("meter %s: poll failed: %s", self.name, exc)
        else:
            log.debug("meter %s: poll failed (%d in a row): %s", self.name, self._link_failures, exc)
        if self._link_failures >= self.fail_after:
            self._raise_fault(FaultCode.LINK_LOST, f"no answer from unit {self.unit} on {self.bus.port} "
                                                   f"for {self._link_failures} polls: {exc}")

    def _device_failure(self, exc: DeviceError) -> None:
        self._device_failures += 1
        self._link_failures = 0
        self._clear_fault(FaultCode.LINK_LOST)  # it answers, so the line works
        if self._device_failures == 1:
            log.warning("meter %s: %s", self.name, exc)
        else:
            log.debug("meter %s: still failing (%d in a row): %s", self.name, self._device_failures, exc)
        if self._device_failures >= self.fail_after:
            self._raise_fault(FaultCode.DEVICE_ERROR, str(exc))

    def _success(self) -> None:
        if self._link_failures or self._device_failures:
            log.info("meter %s: answering again after %d failed poll(s)", self.name,
                     self._link_failures + self._device_failures)
        self._link_failures = self._device_failures = 0
        for code in list(self._faults.active):
            self._clear_fault(code)

    def _raise_fault(self, code: FaultCode, detail: str) -> None:
        if self._faults.raise_fault(code, detail):
            log.warning("meter %s: fault %s: %s", self.name, code, detail)

    def _clear_fault(self, code: FaultCode) -> None:
        if self._faults.clear(code):
            log.info("meter %s: recovered from %s", self.name, code)

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                reading = await self.read()
            except DeviceError:
                pass  # logged, counted and turned into fault events by read()
            except Exception:  # defence in depth: counted and logged, polling goes on
                self.stats.frames_dropped += 1
                log.exception("meter %s: unexpected error while polling; answer dropped", self.name)
            else:
                self.events.publish(reading)
            next_at += self.poll_interval_s
            delay = next_at - loop.time()
            if delay < 0:  # a slow poll: keep the interval from now rather than bursting to catch up
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)
