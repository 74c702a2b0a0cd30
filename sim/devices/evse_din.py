"""A simulated EVSE-DIN (Stegen "SimpleEVSE-WB") board: its firmware's register behaviour on Modbus RTU.

Attach it to a :class:`sim.devices.rs485_bus.SimulatedRs485Bus`; the EV model drives it through
:meth:`set_ev_pilot`. What it does follows the board's published register list (see
docs/hal.md (EVSE-DIN section)): the runtime block 1000-1010 is computed from the EV's pilot, the configured
current, the configuration bits 2005 and the injected faults; 2000-2017 is the persistent
configuration. Only holding registers exist (FC 03 / FC 16).

Modelled: PWM only while an EV is present and 1000 >= 6 A; the relay closes in C (or D when 2005 bit 3
allows it) while PWM is generated; "turn off charging now" (1004 bit 0) is a one-shot that opens the
relay and stops the PWM, after which the board restarts by itself (as reported by users) once the EV has
left C/D or ``turn_off_hold_s`` has passed (the real delay is not documented: an assumption);
"disable EVSE" (2005 bit 14, EVSE state 3 OFF,
steady +12 V); "disable after charge" (2005 bit 13); the high-resolution current bit (2005 bit 7, from
firmware 18); the PP cable limit on the PWM output. Not modelled: the RCD self test and its countdowns
(1008/1009 read 0), the error recovery delay (1007 bit 3), buttons and analog input, address changes.
"""

from __future__ import annotations

import time
from typing import Literal

from hal.evse_din.codec import (
    HIGH_RESOLUTION_MIN_FIRMWARE,
    MAX_OFFER_A,
    MIN_OFFER_A,
    CommandBits,
    ConfigBits,
    EvseState,
    StatusBits,
    VehicleState,
)
from hal.interfaces import PilotState
from sim.devices.interfaces import BoardFault, DeviceCounters

# Modbus exception codes
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3

#: 2005 as read from a board with firmware 18: button current change, charge in D, pilot auto recover delay.
DEFAULT_CONFIG_BITS = int(ConfigBits.BUTTON_CURRENT_CHANGE | ConfigBits.CHARGE_IN_STATE_D
                          | ConfigBits.PILOT_AUTO_RECOVER_DELAY)

RUNTIME_REGISTERS = range(1000, 1011)  # 1000-1010 (1008/1009 countdowns, 1010 reserved)
CONFIG_REGISTERS = range(2000, 2018)  # 2000-2017
WRITABLE_RUNTIME = (1000, 1004)
READ_ONLY_CONFIG = (2009,)  # bootloader firmware revision

_VEHICLE = {PilotState.A: VehicleState.READY, PilotState.B: VehicleState.EV_PRESENT,
            PilotState.C: VehicleState.CHARGING, PilotState.D: VehicleState.CHARGING_WITH_VENTILATION}


class SimulatedEvseDin:
    """One EVSE-DIN board with Modbus unit id ``unit`` (a :class:`SimulatedModbusDevice` and
    :class:`~sim.devices.interfaces.SimulatedBoard`).

    ``legacy_status_bits`` reports an RCD error on 1007 bit 4 (older register list) instead of bit 5.
    """

    def __init__(self, unit: int = 1, *, firmware: int = 18, config_bits: int = DEFAULT_CONFIG_BITS,
                 default_amps: int = 32, min_amps: int = 5, cable_limit_a: int = 32,
                 legacy_status_bits: bool = False, turn_off_hold_s: float = 3.0) -> None:
        self.unit = unit
        self.silent = False
        self.firmware = firmware
        self.cable_limit_a = cable_limit_a
        self.legacy_status_bits = legacy_status_bits
        self.turn_off_hold_s = turn_off_hold_s
        self.counters = DeviceCounters()
        self._config: dict[int, int] = {
            2000: default_amps, 2001: unit, 2002: min_amps, 2003: 1, 2004: 0, 2005: config_bits,
            2006: 0, 2007: 0, 2008: 0, 2009: 3,
            2010: 6, 2011: 10, 2012: 16, 2013: 25, 2014: 32, 2015: 48, 2016: 63, 2017: 80,
        }
        self._ev = PilotState.A
        self._faults: set[BoardFault] = set()
        self.power_cycle()

    # --- SimulatedBoard ------------------------------------------------------------------------

    def set_ev_pilot(self, state: PilotState) -> None:
        self._ev = state
        self._evaluate()

    @property
    def offered_current_a(self) -> float:
        return self._output_amps() if self._evse_state == EvseState.PWM else 0.0

    @property
    def contactor_closed(self) -> bool:
        return self._relay

    def inject(self, fault: BoardFault, active: bool = True) -> None:
        """Inject (or clear) a fault. Clearing RCD_TRIP also resets the latched RCD error (as a power
        cycle or the auto-clear option would). OVERTEMPERATURE does not exist on this board."""
        if fault is BoardFault.OVERTEMPERATURE:
            raise ValueError("EVSE-DIN has no temperature sensor or overtemperature status bit: "
                             "OVERTEMPERATURE is not representable on this board")
        if fault is BoardFault.LOCK_STUCK:
            raise ValueError("EVSE-DIN has no cable lock: LOCK_STUCK is not representable on this board")
        if fault is BoardFault.SILENT:
            self.silent = active
            return
        if active:
            self._faults.add(fault)
        else:
            self._faults.discard(fault)
        self._evaluate()

    # --- board life ----------------------------------------------------------------------------

    def power_cycle(self) -> None:
        """Reboot: the runtime registers start again from the configuration (1000 := 2000)."""
        self._amps_config = self._config[2000] * (100 if self._high_resolution() else 1)
        self._turned_off_until: float | None = None
        self._charged = False
        self._relay = False
        self._evaluate()

    def holding(self, address: int) -> int:
        """One register as a master would read it now (for tests and diagnostics; not counted)."""
        self._evaluate()
        value = self._read(address)
        if value is None:
            raise KeyError(f"EVSE-DIN has no register {address}")
        return value

    # --- SimulatedModbusDevice -----------------------------------------------------------------

    def read_registers(self, kind: Literal["input", "holding"], address: int, count: int) -> list[int] | int:
        self.counters.requests += 1
        if kind != "holding":
            return ILLEGAL_FUNCTION
        if not 1 <= count <= 125:
            return ILLEGAL_DATA_VALUE
        self._evaluate()
        out: list[int] = []
        for a in range(address, address + count):
            value = self._read(a)
            if value is None:
                return ILLEGAL_DATA_ADDRESS
            out.append(value)
        return out

    def write_registers(self, address: int, values: list[int]) -> int | None:
        self.counters.requests += 1
        writes = list(zip(range(address, address + len(values)), values, strict=True))
        for a, v in writes:  # all or nothing
            error = self._check_write(a, v)
            if error is not None:
                return error
        for a, v in writes:
            self._apply_write(a, v)
        self._evaluate()
        return None

    # --- firmware --------------------------------------------------------------------------------

    def _high_resolution(self) -> bool:
        return self.firmware >= HIGH_RESOLUTION_MIN_FIRMWARE and bool(
            self._config[2005] & ConfigBits.HIGH_RESOLUTION_CURRENT)

    def _scale(self) -> int:
        return 100 if self._high_resolution() else 1

    def _output_amps(self) -> float:
        amps = self._amps_config / self._scale()
        return min(amps, float(self.cable_limit_a)) if self.cable_limit_a > 0 else amps

    def _evaluate(self) -> None:
        ev, cfg = self._ev, self._config[2005]
        if self._turned_off_until is not None and (ev not in (PilotState.C, PilotState.D)
                                                   or time.monotonic() >= self._turned_off_until):
            self._turned_off_until = None  # the board restarts by itself
        diode_fail = BoardFault.DIODE_FAILURE in self._faults and ev is not PilotState.A
        rcd_error = BoardFault.RCD_TRIP in self._faults
        vent_fail = ev is PilotState.D and not cfg & ConfigBits.CHARGE_IN_STATE_D
        failure = diode_fail or rcd_error or ev not in _VEHICLE
        self._vehicle = VehicleState.FAILURE if failure else _VEHICLE[ev]
        if cfg & ConfigBits.DISABLE_EVSE or self._turned_off_until is not None:
            self._evse_state = EvseState.OFF
        elif failure or ev is PilotState.A or self._amps_config / self._scale() < MIN_OFFER_A:
            self._evse_state = EvseState.STEADY_12V
        else:
            self._evse_state = EvseState.PWM
        wants_relay = (self._evse_state == EvseState.PWM and not vent_fail
                       and ev in (PilotState.C, PilotState.D))
        if BoardFault.WELDED in self._faults:
            self._relay = True
        elif BoardFault.STUCK_OPEN in self._faults:
            self._relay = False
        else:
            self._relay = wants_relay
        if self._relay:
            self._charged = True
        elif ev is PilotState.A and self._charged:
            self._charged = False
            if cfg & ConfigBits.DISABLE_AFTER_CHARGE:
                self._config[2005] = (cfg | ConfigBits.DISABLE_EVSE) & ~ConfigBits.DISABLE_AFTER_CHARGE
        bits = StatusBits(0)
        if self._relay:
            bits |= StatusBits.RELAY_ON
        if diode_fail:
            bits |= StatusBits.DIODE_CHECK_FAIL
        if vent_fail:
            bits |= StatusBits.VENT_REQUIRED_FAIL
        if rcd_error:
            bits |= StatusBits.RCD_BIT4 if self.legacy_status_bits else StatusBits.RCD_CHECK_ERROR
        self._status_bits = int(bits)

    def _read(self, address: int) -> int | None:
        if address in CONFIG_REGISTERS:
            return self._config[address]
        if address not in RUNTIME_REGISTERS:
            return None
        pwm = self._evse_state == EvseState.PWM
        return {
            1000: self._amps_config,
            1001: round(self._output_amps() * self._scale()) if pwm else 0,
            1002: int(self._vehicle),
            1003: self.cable_limit_a,
            1004: 0,  # commands are executed at once and read back as 0
            1005: self.firmware,
            1006: int(self._evse_state),
            1007: self._status_bits,
        }.get(address, 0)

    def _check_write(self, address: int, value: int) -> int | None:
        writable = address in WRITABLE_RUNTIME or (address in CONFIG_REGISTERS
                                                   and address not in READ_ONLY_CONFIG)
        if not writable:
            return ILLEGAL_DATA_ADDRESS  # read-only or not implemented
        if not 0 <= value <= 0xFFFF:
            return ILLEGAL_DATA_VALUE
        if address == 1000 and value != 0:
            scale = self._scale()
            if not self._config[2002] * scale <= value <= MAX_OFFER_A * scale:
                return ILLEGAL_DATA_VALUE  # documented range: 0 (off) or 2002 .. 80 A
        return None

    def _apply_write(self, address: int, value: int) -> None:
        if address == 1000:
            self._amps_config = value
        elif address == 1004:
            if value & CommandBits.TURN_OFF_CHARGING_NOW:
                self._turned_off_until = time.monotonic() + self.turn_off_hold_s
            self.counters.extra["commands"] = self.counters.extra.get("commands", 0) + 1
        else:
            self._config[address] = value
