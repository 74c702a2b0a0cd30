"""Board file of the simulated I/O board: the pins are the simulation's (sim/devices/ioboard_mcu.py).

Used when the firmware runs in the MicroPython interpreter of the tests and of `python -m sim up
--board ioboard-mcu`: every pin, the UART and the watchdog are reached through ``host.call``, the
one hook out of that interpreter. Its constants come from the simulation so tests can shorten
timeouts; a real board file has them as constants.
"""

from binascii import unhexlify

import host


def reset_after_maintenance():
    """Restart after flashing (tools/flash.py mcu): BOARD_HELLO then reports reset reason OTHER."""
    host.call("rst_other", b"")


class Board:
    def __init__(self):
        cfg = host.call("cfg", b"").split(",")
        self.HW_REVISION = cfg[0]
        self.CAPABILITIES = int(cfg[1])
        self.KEEPALIVE_TIMEOUT_MS = int(cfg[2])
        self.REPORT_INTERVAL_MS = int(cfg[3])
        self.WDT_TIMEOUT_MS = int(cfg[4])
        self._reset_cause = int(cfg[5])
        self._self_test = cfg[6] == "1"
        self.C1_TIMEOUT_MS = int(cfg[7])
        self._rx = b""
        self._fed = False
        self._seen = None
        self._passes = 0

    def reset_cause(self):
        return self._reset_cause

    def self_test(self):
        return host.call("st", b"") == "1"

    def pilot_output(self, permille):
        host.call("po", str(permille))

    def coil(self, on):
        host.call("co", "1" if on else "0")

    def sample(self):
        high, low, mirror, rcd, temp, lock_fb = host.call("s", b"").split(",")
        return int(high), int(low), mirror == "1", rcd == "1", int(temp) if temp else None, lock_fb == "1"

    def lock_drive(self, direction):
        host.call("ld", str(direction))

    def uart_read(self, buf):
        n = min(len(buf), len(self._rx))
        if n:
            buf[:n] = self._rx[:n]
            self._rx = self._rx[n:]
        return n

    def uart_write(self, data):
        host.call("w", data)

    def wait(self, ms):
        """Sleep up to ``ms`` (less when bytes arrive); the host hands them over with the wake-up."""
        if self._rx:
            ms = 0
        data = host.call("i", "%d,%d" % (max(ms, 0), self._fed))
        self._fed = False
        if data == "KI":  # Ctrl-C on the USB console (the chip's USB driver raises it in the running code)
            raise KeyboardInterrupt
        if data:
            self._rx += unhexlify(data)

    def wdt_arm(self, timeout_ms):
        host.call("wa", str(timeout_ms))

    def wdt_feed(self):
        self._fed = True  # delivered with the next wait()

    def hold_watchdog(self):
        host.call("wh", b"")  # a timer feeding it from now on, as on the chip

    def reset(self):
        host.call("rst", b"")  # does not return: the simulation restarts the interpreter

    def observe(self, fw):
        """Tell the simulation what the firmware holds (for tests; a real board has no such pin)."""
        link, safety = fw.link, fw.safety
        seen = (link.linked, safety.permission, safety.faults, link.requests, link.bad_frames, link.duplicates,
                link.nacks, link.keepalive_trips)
        self._passes += 1
        if seen != self._seen:
            self._seen = seen
            host.call("o", "%d,%d,%d,%d,%d,%d,%d,%d" % seen)
        if self._passes % 200 == 0:
            host.call("m", "%d,%d,%d,%d,%d,%d,%d,%d,%d" % (
                fw.passes, fw.work_us_max, fw.period_ms_max, fw.heap_live, fw.heap_peak, fw.heap_boot, fw.gc_us_max,
                fw.wait_over_us_max, fw.late_passes))
