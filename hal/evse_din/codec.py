"""EVSE-DIN registers and the pure decoding of its status block: registers <-> values, no I/O.

The register list and where each entry comes from are in docs/hal.md (EVSE-DIN section). Used by
:mod:`hal.evse_din.driver` and, for the register constants and bits, by the simulated board in ``sim/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from hal.bounded_repr import bounded_repr
from hal.interfaces import DeviceError, FaultCode, PilotState

# --- register map (holding registers: read with FC 03, written with FC 16) -------------------------

REG_AMPS_CONFIG = 1000  # R/W  configured amps (0 = off, else 2002 .. 80)
REG_AMPS_OUTPUT = 1001  # R    amps currently offered on the PWM output
REG_VEHICLE_STATE = 1002  # R  see VehicleState
REG_CABLE_LIMIT = 1003  # R    cable current limit from the PP resistor (A)
REG_COMMAND = 1004  # R/W      see CommandBits
REG_FIRMWARE = 1005  # R       firmware revision
REG_EVSE_STATE = 1006  # R     see EvseState
REG_STATUS = 1007  # R         see StatusBits
STATUS_BLOCK_START = REG_AMPS_CONFIG
STATUS_BLOCK_COUNT = 8  # 1000-1007, one transaction

REG_DEFAULT_AMPS = 2000  # R/W amps after boot
REG_MODBUS_ADDRESS = 2001  # R/W
REG_MIN_AMPS = 2002  # R/W
REG_CONFIG_BITS = 2005  # R/W  see ConfigBits

MIN_OFFER_A = 6  # IEC 61851-1: the smallest current a PWM may offer
MAX_OFFER_A = 80  # the board's documented maximum for register 1000
HIGH_RESOLUTION_MIN_FIRMWARE = 18  # openWB / SimpleEVSE-WiFi: 0.01 A steps from firmware 18 on

DEFAULT_BAUDRATE = 9600  # 8N1, unit id 1 (evcc / openWB / EVSE-WiFi defaults, manual)
DEFAULT_UNIT = 1


class VehicleState(IntEnum):
    """Register 1002."""

    READY = 1  # no EV (A)
    EV_PRESENT = 2  # B
    CHARGING = 3  # C
    CHARGING_WITH_VENTILATION = 4  # D
    FAILURE = 5  # e.g. diode check or RCD failure


class EvseState(IntEnum):
    """Register 1006."""

    STEADY_12V = 1
    PWM = 2  # only while 1000 >= 6 and an EV is present
    OFF = 3  # disabled / turned off


class CommandBits(IntFlag):
    """Register 1004: one-shot commands."""

    TURN_OFF_CHARGING_NOW = 1 << 0
    RUN_RCD_TEST = 1 << 1  # self test and RCD test (about 30 s)
    CLEAR_RCD_ERROR = 1 << 2


class StatusBits(IntFlag):
    """Register 1007: status and failure bits.

    Bit 4 is "RCD check error" in the older register list and "RCD test in progress" (with the RCD
    error moved to bit 5) in the list used by newer firmware; see :func:`active_faults`.
    """

    RELAY_ON = 1 << 0
    DIODE_CHECK_FAIL = 1 << 1
    VENT_REQUIRED_FAIL = 1 << 2
    WAITING_FOR_PILOT_RELEASE = 1 << 3  # error recovery delay
    RCD_BIT4 = 1 << 4
    RCD_CHECK_ERROR = 1 << 5


class ConfigBits(IntFlag):
    """Register 2005 (persistent configuration)."""

    BUTTON_CURRENT_CHANGE = 1 << 0
    BUTTON_STOPS_CHARGING = 1 << 1
    PILOT_READY_LED_STEADY = 1 << 2
    CHARGE_IN_STATE_D = 1 << 3  # charge with ventilation requested (default on)
    RCD_FEEDBACK = 1 << 4
    AUTO_CLEAR_RCD_ERROR = 1 << 5
    AN_PULLUP_DISABLED = 1 << 6
    HIGH_RESOLUTION_CURRENT = 1 << 7  # 1000/1001 in 0.01 A (one source: "PWM debug")
    ERROR_LED_ON_AN = 1 << 8
    PILOT_AUTO_RECOVER_DELAY = 1 << 9
    STARTUP_DELAY = 1 << 12
    DISABLE_AFTER_CHARGE = 1 << 13
    DISABLE_EVSE = 1 << 14
    BOOTLOADER_MODE = 1 << 15


_PILOT = {
    VehicleState.READY: PilotState.A,
    VehicleState.EV_PRESENT: PilotState.B,
    VehicleState.CHARGING: PilotState.C,
    VehicleState.CHARGING_WITH_VENTILATION: PilotState.D,
}


class EvseDinError(DeviceError):
    """An EVSE-DIN answer that cannot be decoded, or a write the board refused."""


# --- status block ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvseDinStatus:
    """One decoded read of the status block 1000-1007 (raw register values)."""

    amps_config: int
    amps_output: int
    vehicle_state: int
    cable_limit_a: int
    command_bits: int
    firmware: int
    evse_state: int
    status_bits: int

    @property
    def relay_on(self) -> bool:
        return bool(self.status_bits & StatusBits.RELAY_ON)

    @property
    def pilot(self) -> PilotState | None:
        """Sensed pilot state; ``None`` for "failure" or a value the documentation does not define."""
        try:
            return _PILOT.get(VehicleState(self.vehicle_state))
        except ValueError:
            return None

    def high_resolution(self, config_bits: int) -> bool:
        return self.firmware >= HIGH_RESOLUTION_MIN_FIRMWARE and bool(
            config_bits & ConfigBits.HIGH_RESOLUTION_CURRENT)


def decode_status(registers: Sequence[int]) -> EvseDinStatus:
    """Decode registers 1000-1007. Raises :class:`EvseDinError` for a wrong count or non-16-bit values."""
    if len(registers) != STATUS_BLOCK_COUNT:
        raise EvseDinError(f"EVSE-DIN status block: expected {STATUS_BLOCK_COUNT} registers, "
                           f"got {len(registers)}")
    for value in registers:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise EvseDinError(f"EVSE-DIN status block: {bounded_repr(value)} is not a 16-bit register value")
    return EvseDinStatus(*registers)


# Every code :func:`active_faults` can report: what one status block lists in full. The driver also raises
# DEVICE_ERROR for a board that refuses the poll or the host's commands, until a status clears it.
STATUS_FAULT_CODES = frozenset({FaultCode.DIODE_FAILURE, FaultCode.VENTILATION_REQUIRED, FaultCode.RCD_TRIP,
                                FaultCode.DEVICE_ERROR})


def active_faults(status: EvseDinStatus) -> dict[FaultCode, str]:
    """Faults the status block reports, with a detail text.

    Bit 4 of 1007 is only taken as an RCD error while the vehicle state is "failure": under the newer
    register list it means "RCD test in progress", which does not stop the board.
    """
    faults: dict[FaultCode, str] = {}
    bits = status.status_bits
    failure = status.vehicle_state == VehicleState.FAILURE
    if bits & StatusBits.DIODE_CHECK_FAIL:
        faults[FaultCode.DIODE_FAILURE] = "1007 bit 1: diode check fail"
    if bits & StatusBits.VENT_REQUIRED_FAIL:
        faults[FaultCode.VENTILATION_REQUIRED] = "1007 bit 2: vent required fail (state D not enabled)"
    if bits & StatusBits.RCD_CHECK_ERROR:
        faults[FaultCode.RCD_TRIP] = "1007 bit 5: RCD check error"
    elif failure and bits & StatusBits.RCD_BIT4:
        faults[FaultCode.RCD_TRIP] = "1007 bit 4: RCD check error (older register list)"
    if failure and not faults:
        faults[FaultCode.DEVICE_ERROR] = f"vehicle state 5 (failure), 1007 = {bits:#06x}"
    elif status.vehicle_state not in tuple(VehicleState):
        faults[FaultCode.DEVICE_ERROR] = f"undocumented vehicle state {status.vehicle_state}"
    return faults


def relay_expected(status: EvseDinStatus, *, power_allowed: bool, config_bits: int) -> bool:
    """Whether the board's firmware should have its relay closed now (the documented rule).

    This is the "commanded" side of contactor supervision: the EVSE-DIN closes by itself when the EV is
    in C (or D with 2005 bit 3) while it generates PWM, unless a failure bit is set.
    """
    if not power_allowed or status.evse_state != EvseState.PWM:
        return False
    if status.status_bits & (StatusBits.DIODE_CHECK_FAIL | StatusBits.VENT_REQUIRED_FAIL
                             | StatusBits.RCD_CHECK_ERROR):
        return False
    if status.vehicle_state == VehicleState.CHARGING:
        return True
    return status.vehicle_state == VehicleState.CHARGING_WITH_VENTILATION and bool(
        config_bits & ConfigBits.CHARGE_IN_STATE_D)


def amps_to_register(amps: float, high_resolution: bool = False) -> int:
    """Register 1000 value offering at most ``amps``: 0 (off) below 6 A, capped at 80 A, never rounded up."""
    if math.isnan(amps) or amps < MIN_OFFER_A:
        return 0
    amps = min(amps, float(MAX_OFFER_A))
    return math.floor(amps * 100 + 1e-6) if high_resolution else math.floor(amps)


def register_to_amps(value: int, high_resolution: bool = False) -> float:
    return value / 100 if high_resolution else float(value)
