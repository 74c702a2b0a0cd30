"""The firmware's main loop: one pass every LOOP_MS, or sooner when the host sent bytes.

Each pass: read the UART and carry out commands, run the host watchdog, sample the pilot and the
other inputs, let :class:`iob.safety.Safety` decide, drive the outputs, then send the answers and
reports (after the outputs: an ACK means "done"), feed the hardware watchdog and wait.
"""

import gc
from time import ticks_diff, ticks_ms, ticks_us

from micropython import const

from iob import proto
from iob.link import Link
from iob.safety import Safety

LOOP_MS = const(5)
#: main.py collects between passes once this much is allocated: the collector then never runs in the middle
#: of a pass (no pause while the pilot is being judged), and the heap stays far from full.
GC_AT_BYTES = const(48 * 1024)


class Firmware:
    def __init__(self, board):
        self.board = board
        now = ticks_ms()
        board.pilot_output(1000)  # B1: X1 and the coil off before anything is sent
        board.coil(False)
        self.reset_reason = board.reset_cause()
        self.safety = Safety(board.CAPABILITIES, self.reset_reason, now, board.C1_TIMEOUT_MS)
        if board.CAPABILITIES & proto.CAP_RCD:
            self.safety.self_test_result(board.self_test())
        self.link = Link(self.safety, board, self.reset_reason, now)
        self._out = (1000, False)
        self._lock_drive = 0  # the lock motor is off after a reset (the board file's pins start so)
        self._rx = bytearray(256)
        # figures (the board file may report them; a technician's REPL can read them)
        self.passes = 0
        self.work_us_max = 0  # one pass, host I/O included
        self.period_ms_max = 0  # pass start to pass start: the pass, a collection, the wait
        self.late_passes = 0  # passes that started more than 2 * LOOP_MS after the one before
        self.gc_us_max = 0  # one collection between passes
        self.wait_over_us_max = 0  # a wait that lasted longer than asked (the scheduler, not the firmware)
        self.heap_live = 0  # gc.mem_alloc() after the latest collection: what the firmware holds
        self.heap_peak = 0  # gc.mem_alloc() before a collection after start-up, the most: the heap the loop needs
        self.heap_boot = gc.mem_alloc()  # start-up with its import garbage, before any collection
        self._pass_at = now
        self._gc_at = 0
        board.wdt_arm(board.WDT_TIMEOUT_MS)

    def step(self):
        """One pass of the loop (main.py calls it, then collects garbage if due, then :meth:`idle`)."""
        t0 = ticks_us()
        now = ticks_ms()
        period = ticks_diff(now, self._pass_at)
        if self.passes:
            if period > self.period_ms_max:
                self.period_ms_max = period
            if period > 2 * LOOP_MS:
                self.late_passes += 1
        self._pass_at = now
        self._pass(now)
        self.passes += 1
        work = ticks_diff(ticks_us(), t0)
        if work > self.work_us_max:
            self.work_us_max = work

    def _pass(self, now):
        board, link, safety = self.board, self.link, self.safety
        n = board.uart_read(self._rx)
        if n:
            link.feed(memoryview(self._rx)[:n], now)
        link.tick(now)
        high, low, mirror, rcd, temperature, lock_fb = board.sample()
        safety.step(now, high, low, mirror, rcd, temperature, lock_fb)
        if safety.lock_drive != self._lock_drive:
            self._lock_drive = safety.lock_drive
            board.lock_drive(self._lock_drive)
        permille, coil = safety.output_permille, safety.coil
        was_permille, was_coil = self._out
        if coil != was_coil or permille != was_permille:
            if was_coil and not coil:
                board.coil(False)  # open first, then change the pilot
            if permille != was_permille:
                board.pilot_output(permille)
            if coil and not was_coil:
                board.coil(True)  # and close after it (C2: the PWM is already running)
            self._out = (permille, coil)
        link.report(now)
        board.observe(self)
        data = link.take_tx()
        if data:
            board.uart_write(data)
        if link.reset_requested:
            board.reset()  # B12: after the ACK went out
        board.wdt_feed()


    def fail_safe(self):
        """An exception is leaving the loop: coil off, then X1, whatever else is broken. The hardware
        watchdog, no longer fed, restarts the chip within WDT_TIMEOUT_MS."""
        try:
            self.board.coil(False)
        finally:
            try:
                self.board.pilot_output(1000)
            finally:
                self.board.lock_drive(0)  # the lock stays where it is

    def maintenance(self):
        """Ctrl-C on the USB console: outputs safe, and the watchdog fed by the board (a timer) from now on,
        so a technician's session (flashing) is not cut short by it. Only a reset ends maintenance."""
        self.fail_safe()
        self.board.hold_watchdog()

    def idle(self):
        """Wait for the next pass: LOOP_MS after this one started, sooner when the host sends."""
        ms = LOOP_MS - ticks_diff(ticks_ms(), self._pass_at)
        t0 = ticks_us()
        self.board.wait(ms)
        over = ticks_diff(ticks_us(), t0) - max(ms, 0) * 1000
        if over > self.wait_over_us_max:
            self.wait_over_us_max = over

    def collecting(self, allocated):
        """main.py is about to collect (between passes) with ``allocated`` bytes in use (the first time, start-up's
        garbage too: heap_boot tells that one)."""
        if self.heap_live and allocated > self.heap_peak:
            self.heap_peak = allocated
        self._gc_at = ticks_us()

    def collected(self, live):
        took = ticks_diff(ticks_us(), self._gc_at)
        if took > self.gc_us_max:
            self.gc_us_max = took
        self.heap_live = live
