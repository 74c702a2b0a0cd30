"""Board file for an RP2040 I/O board (e.g. a Raspberry Pi Pico on the charger's I/O PCB).

Everything that names a pin, a peripheral or a calibration lives here; iob/ knows none of it. To
port the firmware to another MCU, write another board file with the same class (docs/ioboard-
firmware.md, "Adding a board") and flash it as board.py.

Wiring (GPn = RP2040 GPIO n):
  GP0/GP1  UART0 TX/RX to the host (115200 8N1)
  GP2      pilot PWM to the +-12 V pilot driver (1 kHz; held high = X1 +12 V, held low = F -12 V)
  GP26     ADC0: pilot sense, -15..+15 V scaled to 0..3.3 V (0 V pilot at mid-scale)
  GP27     ADC1: NTC divider of the connector temperature sensor
  GP3      contactor coil driver (high = coil energized)
  GP4      contactor mirror (auxiliary) contact, to GND when the contactor is closed; pull-up
  GP5      RCD module fault output (high = residual current above the trip threshold)
  GP6      RCD module test winding (high = inject the test current)
  GP7/GP8  cable lock motor H-bridge inputs (GP7 high = drive towards locked, GP8 high = towards unlocked;
           both low = off; never both high)
  GP9      cable lock position switch, to GND when the lock is engaged; pull-up

The coil driver (GP3) needs a pull-down on its input (e.g. 10 kOhm at the MOSFET gate): in reset (power-on,
watchdog bite) the RP2040's pads are inputs with only their weak internal pull-down, and the coil must drop
then. The contactor with its coil suppression (a zener or TVS, not a bare flyback diode) must drop out within
100 - WDT_TIMEOUT_MS = 50 ms, so that a hung firmware opens it within B8's 100 ms (see WDT_TIMEOUT_MS).
"""

import math
import select
import time

import machine
import micropython
from iob import proto
from micropython import const

_PILOT_PWM_HZ = const(1000)
_ADC_BASE = const(0x4004C000)  # RP2040 datasheet 4.9.6: CS at +0, RESULT at +4
_ADC_CS_START_ONCE = const(0x04)
_ADC_CS_READY = const(0x100)
_WATCHDOG_SCRATCH0 = const(0x4005800C)  # survives a watchdog reboot, which machine.reset() is
_HOST_RESET_MAGIC = const(0x10B0A4D5)
_MAINTENANCE_RESET_MAGIC = const(0x10B0A4D6)
_WDT_MAINTENANCE_MS = const(8388)  # the RP2040 watchdog's longest timeout (24-bit count, erratum RP2040-E1)
_FEED_SLICE_MS = const(20)  # longest sleep inside a pass without feeding the watchdog
_BURST_SAMPLES = const(600)  # ~1.2 ms at 2 us per conversion: more than one PWM period


@micropython.viper
def _burst(n: int) -> int:
    """Min and max of ``n`` back-to-back conversions of the selected ADC input, packed max << 16 | min:
    the positive and negative halves of the pilot PWM. Viper: the interpreter is too slow for a
    100 us high phase at 10 % duty."""
    adc = ptr32(_ADC_BASE)  # noqa: F821 - a viper built-in
    lo = 0xFFFF
    hi = 0
    i = 0
    while i < n:
        adc[0] = (adc[0] & 0x7000) | _ADC_CS_START_ONCE | 1  # keep AINSEL; EN | START_ONCE
        while not (adc[0] & _ADC_CS_READY):
            pass
        v = adc[1] & 0xFFF
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        i += 1
    return (hi << 16) | lo


def _pilot_mv(raw12):
    return (raw12 - 2048) * 15000 // 2048


def reset_after_maintenance():
    """Restart after flashing (tools/flash.py mcu runs it over the raw REPL). machine.reset() reboots through
    the watchdog, so without the mark BOARD_HELLO would report MCU_WATCHDOG; with it, OTHER."""
    machine.mem32[_WATCHDOG_SCRATCH0] = _MAINTENANCE_RESET_MAGIC
    machine.reset()


class Board:
    HW_REVISION = "RP2040-A"
    CAPABILITIES = (proto.CAP_RCD | proto.CAP_TEMPERATURE | proto.CAP_MIRROR_CONTACT | proto.CAP_DIODE_CHECK
                    | proto.CAP_CABLE_LOCK)
    KEEPALIVE_TIMEOUT_MS = 1000
    REPORT_INTERVAL_MS = 500
    #: B8 for a hung firmware: a loop that stops passing is reset by the watchdog within this, the reset drops the
    #: coil (pads: inputs with pull-downs), and the contactor drops out in the remaining 50 ms of the 100 ms. The
    #: RP2040 watchdog counts 1 us ticks (1..8388 ms); a pass takes a few ms (the 1.2 ms ADC burst, the logic, a
    #: collection between passes), and what sleeps inside a pass (the RCD re-test) feeds it (_sleep_fed).
    WDT_TIMEOUT_MS = 50
    C1_TIMEOUT_MS = 6000  # IEC 61851-1 Table A.6 sequence 10.2: at most 6 s in C1/D1 before opening
    NTC_BETA = 3950
    NTC_R25 = 10000
    NTC_RSERIES = 10000

    def __init__(self):
        self._pwm = machine.PWM(machine.Pin(2), freq=_PILOT_PWM_HZ, duty_u16=65535)
        self._coil = machine.Pin(3, machine.Pin.OUT, value=0)
        self._mirror = machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP)
        self._rcd = machine.Pin(5, machine.Pin.IN, machine.Pin.PULL_DOWN)
        self._rcd_test = machine.Pin(6, machine.Pin.OUT, value=0)
        self._lock_a = machine.Pin(7, machine.Pin.OUT, value=0)
        self._lock_b = machine.Pin(8, machine.Pin.OUT, value=0)
        self._lock_fb = machine.Pin(9, machine.Pin.IN, machine.Pin.PULL_UP)
        self._pilot_adc = machine.ADC(26)
        self._ntc_adc = machine.ADC(27)
        self._uart = machine.UART(0, 115200, tx=machine.Pin(0), rx=machine.Pin(1), rxbuf=1024, txbuf=1024,
                                  timeout=0)
        self._poll = select.poll()
        self._poll.register(self._uart, select.POLLIN)
        self._wdt = None
        self._wdt_timer = None

    def reset_cause(self):
        mark = machine.mem32[_WATCHDOG_SCRATCH0]
        machine.mem32[_WATCHDOG_SCRATCH0] = 0
        if mark == _HOST_RESET_MAGIC:
            return proto.RESET_HOST_REQUEST
        if mark == _MAINTENANCE_RESET_MAGIC:
            return proto.RESET_OTHER
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            return proto.RESET_WATCHDOG
        if cause == machine.PWRON_RESET:
            return proto.RESET_POWER_ON
        return proto.RESET_OTHER

    def self_test(self):
        """RCD test winding on for 60 ms: the module must report a fault, and clear after."""
        self._rcd_test.value(1)
        self._sleep_fed(60)
        tripped = self._rcd.value() == 1
        self._rcd_test.value(0)
        self._sleep_fed(60)
        return tripped and self._rcd.value() == 0

    def _sleep_fed(self, ms):
        """Sleep inside a pass (the re-test of CLEAR_FAULTS runs in one; the coil is off then, SELFTEST_FAILED being
        blocking) without letting the short watchdog bite."""
        while ms > 0:
            time.sleep_ms(min(ms, _FEED_SLICE_MS))
            ms -= _FEED_SLICE_MS
            if self._wdt is not None:
                self._wdt.feed()

    def pilot_output(self, permille):
        self._pwm.duty_u16(permille * 65535 // 1000)

    def coil(self, on):
        self._coil.value(1 if on else 0)

    def sample(self):
        self._pilot_adc.read_u16()  # selects ADC0 as the converter's input for _burst
        packed = _burst(_BURST_SAMPLES)
        high = _pilot_mv(packed >> 16)
        low = _pilot_mv(packed & 0xFFFF)
        return (high, low, self._mirror.value() == 0, self._rcd.value() == 1, self._temperature_dc(),
                self._lock_fb.value() == 0)

    def lock_drive(self, direction):
        """0 off, 1 towards locked, 2 towards unlocked: one side low before the other goes high (no shoot-through)."""
        self._lock_a.value(0)
        self._lock_b.value(0)
        if direction == 1:
            self._lock_a.value(1)
        elif direction == 2:
            self._lock_b.value(1)

    def _temperature_dc(self):
        raw = self._ntc_adc.read_u16()
        if raw < 64 or raw > 65471:
            return 2000  # open or shorted sensor reads as hot: it must stop the charge, not allow it
        r = self.NTC_RSERIES * raw / (65535 - raw)
        kelvin = 1 / (1 / 298.15 + math.log(r / self.NTC_R25) / self.NTC_BETA)
        return max(-1000, min(2000, int((kelvin - 273.15) * 10)))

    def uart_read(self, buf):
        return self._uart.readinto(buf) or 0

    def uart_write(self, data):
        self._uart.write(data)

    def wait(self, ms):
        if ms > 0:
            self._poll.poll(ms)

    def wdt_arm(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        self._wdt.feed()

    def hold_watchdog(self):
        """Maintenance (Ctrl-C on the USB console): the watchdog cannot be stopped once armed, so it is re-armed
        with its longest timeout (the outputs are already safe; writing the flash stalls the chip for a sector
        erase, up to 400 ms, longer than WDT_TIMEOUT_MS) and a timer feeds it, so the REPL session lasts."""
        if self._wdt is not None:
            self._wdt = machine.WDT(timeout=_WDT_MAINTENANCE_MS)
            self._wdt_timer = machine.Timer(period=_WDT_MAINTENANCE_MS // 8, callback=lambda t: self._wdt.feed())

    def reset(self):
        machine.mem32[_WATCHDOG_SCRATCH0] = _HOST_RESET_MAGIC
        machine.reset()

    def observe(self, fw):
        pass
