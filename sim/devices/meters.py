"""Simulated Modbus energy meters: registers encoded from the electrical state per the model's map.

A :class:`SimulatedModbusMeter` sits on a :class:`sim.devices.rs485_bus.SimulatedRs485Bus` and answers
like the real meter: values at the map's addresses in the map's types, zeros in the other registers
the meter documents as readable, and exception 2 (illegal data address) for reads that touch an
undocumented address or only part of a multi-register value; more registers than the meter allows
per request is exception 3 (illegal data value).

The map is the same data file the driver uses; the driver tests therefore also pin the map's
addresses against the datasheets independently (tests/test_registermap.py).
"""

from __future__ import annotations

from typing import Final

from hal.meter_modbus import load_register_map
from hal.registermap import UNIT_FACTORS, Function, Quantity, encode_value
from sim.devices.interfaces import DeviceCounters, ElectricalState
from sim.devices.rs485_bus import RegisterKind

ILLEGAL_FUNCTION: Final = 1
ILLEGAL_DATA_ADDRESS: Final = 2
ILLEGAL_DATA_VALUE: Final = 3


class SimulatedModbusMeter:
    """One meter (model "sdm630", "sdm120", "abb_b23", ...) at one unit id; single-phase models
    measure L1 of the electrical state."""

    def __init__(self, unit: int, model: str) -> None:
        self.unit = unit
        self.model = model
        self.silent = False
        self.register_map = load_register_map(model)
        self.counters = DeviceCounters()
        self.state = ElectricalState()
        self._exception: int | None = None
        self._owner: dict[tuple[Function, int], Quantity] = {
            (q.function, a): q for q in self.register_map.quantities.values()
            for a in range(q.address, q.last + 1)
        }
        self._registers: dict[tuple[Function, int], int] = {}
        self.update(self.state)

    # --- sim.devices.interfaces.SimulatedMeter -------------------------------------------------

    def update(self, state: ElectricalState) -> None:
        """Reflect ``state`` in the registers from now on (raises ValueError if the meter's data
        types cannot hold it, e.g. a negative current in an unsigned register)."""
        registers: dict[tuple[Function, int], int] = {}
        for name, value in self._values(state).items():
            q = self.register_map.quantities.get(name)
            if q is None:
                continue
            words = encode_value(q, value / UNIT_FACTORS[q.unit])
            for offset, word in enumerate(words):
                registers[(q.function, q.address + offset)] = word
        self.state = state
        self._registers = registers

    def set_silent(self, silent: bool) -> None:
        self.silent = silent

    # --- fault injection -----------------------------------------------------------------------

    def inject_exception(self, code: int | None) -> None:
        """Answer every request with Modbus exception ``code`` (e.g. 4 device failure, 6 busy);
        ``None`` answers normally again."""
        self._exception = code

    # --- sim.devices.rs485_bus.SimulatedModbusDevice -------------------------------------------

    def read_registers(self, kind: RegisterKind, address: int, count: int) -> list[int] | int:
        self.counters.requests += 1
        if self._exception is not None:
            return self._exception
        if not 1 <= count <= self.register_map.max_registers_per_request:
            self.counters.extra["refused_too_many"] = self.counters.extra.get("refused_too_many", 0) + 1
            return ILLEGAL_DATA_VALUE
        last = address + count - 1
        first_owner, last_owner = self._owner.get((kind, address)), self._owner.get((kind, last))
        if (first_owner is not None and first_owner.address != address) or (
            last_owner is not None and last_owner.last != last
        ):
            return ILLEGAL_DATA_ADDRESS  # only part of a multi-register value
        values: list[int] = []
        for a in range(address, last + 1):
            if (kind, a) in self._registers:
                values.append(self._registers[(kind, a)])
            elif self.register_map.gap_readable(kind, a, a):
                values.append(0)  # documented, but not something this simulation models
            else:
                return ILLEGAL_DATA_ADDRESS
        return values

    def write_registers(self, address: int, values: list[int]) -> int | None:
        self.counters.requests += 1
        if self._exception is not None:
            return self._exception
        return ILLEGAL_DATA_ADDRESS  # the configuration registers are not simulated

    # --- physics -> quantities -----------------------------------------------------------------

    def _values(self, state: ElectricalState) -> dict[str, float]:
        """What the meter measures, in SI-coherent units (V, A, W, Wh, Hz)."""
        phases = self.register_map.phases
        values: dict[str, float] = {
            "frequency": state.frequency_hz,
            "energy_import": state.energy_import_wh,
            "energy_export": state.energy_export_wh,
        }
        for i in range(phases):
            values[f"voltage_l{i + 1}"] = state.voltage_v[i]
            values[f"current_l{i + 1}"] = state.current_a[i]
        if phases == 1:
            values["power_total"] = state.voltage_v[0] * state.current_a[0] * state.power_factor
        else:
            values["power_total"] = state.power_w
        return values
