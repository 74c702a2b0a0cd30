"""The safety half of the board, independent of the host link: pilot measurement and debounce, the
diode check, the contactor interlock (closed only in state C2/D2, and only with the cable locked once the
host drives the lock), fault bits, the cable lock's drive and feedback (docs/ioboard-protocol.md §3.6,
B7, B8, B15, B16).

Pure logic: the loop hands in the inputs it sampled and the time, and reads back the pilot output
and the coil. Nothing here waits or touches a pin, so the same code decides on the chip and in the
tests.
"""

from time import ticks_diff

from micropython import const

from iob import proto

# IEC 61851-1 pilot levels (positive half, mV at the pilot): A 12 V, B 9 V, C 6 V, D 3 V, E 0 V, F -12 V;
# the thresholds sit half-way between the nominal levels.
_A_MIN = const(10500)
_B_MIN = const(7500)
_C_MIN = const(4500)
_D_MIN = const(1500)
_E_MIN = const(-1500)
_DIODE_MAX = const(-10500)  # the negative half must reach about -12 V through the EV's diode

DEBOUNCE_MS = const(10)  # a reading must hold this long to count (B9: at most 50 ms)
MIRROR_SETTLE_MS = const(300)  # mirror contact vs coil disagreement before it is logged
TEMP_LIMIT_DC = const(800)  # 80.0 degC
#: IEC 61851-1 Table A.6 sequence 10.2: the EV left in C/D after the PWM stopped (C1/D1) is switched off within
#: 6 s. A board file may choose less (C1_TIMEOUT_MS); never more.
C1_TIMEOUT_MS = const(6000)
TEMP_HYSTERESIS_DC = const(50)
#: T_lock (§5): the lock's feedback must reach the commanded position within this, else FAULT and the drive stops
LOCK_TIMEOUT_MS = const(1000)
# the lock motor's drive (an H-bridge): off, towards locked, towards unlocked
DRIVE_OFF = const(0)
DRIVE_LOCK = const(1)
DRIVE_UNLOCK = const(2)


def classify(high_mv, low_mv, pwm_running):
    """(pilot code, diode failed) of one pair of positive/negative half readings."""
    if high_mv >= _A_MIN:
        pilot = proto.PILOT_A
    elif high_mv >= _B_MIN:
        pilot = proto.PILOT_B
    elif high_mv >= _C_MIN:
        pilot = proto.PILOT_C
    elif high_mv >= _D_MIN:
        pilot = proto.PILOT_D
    elif high_mv >= _E_MIN:
        pilot = proto.PILOT_E
    elif high_mv <= -_A_MIN:
        pilot = proto.PILOT_F
    else:
        pilot = proto.PILOT_E  # between the bands: not a state IEC 61851-1 defines, treated as a short
    diode_failed = pwm_running and proto.PILOT_B <= pilot <= proto.PILOT_D and low_mv > _DIODE_MAX
    return pilot, diode_failed


class Safety:
    """Pilot output, permission, coil and faults of one connector."""

    def __init__(self, capabilities, reset_reason, now_ms, c1_timeout_ms=C1_TIMEOUT_MS):
        self.capabilities = capabilities
        self.c1_timeout_ms = min(c1_timeout_ms, C1_TIMEOUT_MS)
        self.mode = proto.X1
        self.duty = 0
        self.permission = False
        self.coil = False
        self.mirror = False
        self.temperature = None
        self.faults = proto.MCU_WATCHDOG if reset_reason == proto.RESET_WATCHDOG else 0
        self.ev_pilot = proto.PILOT_A  # debounced, as the EV presents it (frozen while we drive F)
        self.diode_failed = False
        self.pwm_seen = False  # the debounced reading was taken with the PWM running (the diode could be seen)
        self.stable = False  # the latest reading agrees with the debounced one
        self._sampled_mode = proto.X1  # the output in effect while this pass's inputs were sampled
        self._reading = -1
        self._reading_since = now_ms
        self._c1_since = None  # the PWM stopped with the contactor closed in C/D (state C1/D1) at
        self._rcd_input = False
        self._disagree_since = None
        self._mirror_logged = False
        # the cable lock (B15): what the host asked for (None: nothing since the start, the lock stays put), the
        # position switch, the state STATE reports, and the motor drive
        self.lock_wanted = None
        self.lock_fb = False
        self.lock = proto.LOCK_UNLOCKED
        self.lock_drive = DRIVE_OFF
        self._lock_since = None
        self._lock_reached = False  # the commanded position was confirmed since the last SET_LOCK
        self.logs = []  # (level, text) for the link to send
        if reset_reason == proto.RESET_WATCHDOG:  # B14: a technician wants to know
            self.logs.append((proto.ERROR, "restarted by the hardware watchdog: the firmware stopped feeding it"))

    # --- what the host sees ----------------------------------------------------------------------------

    @property
    def pilot(self):
        """STATE ``pilot``: F whenever the board drives F (§3.4), the debounced EV state otherwise."""
        return proto.PILOT_F if self.mode == proto.F else self.ev_pilot

    @property
    def output_permille(self):
        """The pilot generator's duty: 1000 = steady +12 V (X1), 0 = steady -12 V (F)."""
        if self.mode == proto.X1:
            return 1000
        if self.mode == proto.F:
            return 0
        return self.duty

    @property
    def blocking(self):
        return self.faults & proto.BLOCKING_FAULTS

    # --- commands (the link checks linkage; these check faults) ------------------------------------------

    def set_pwm(self, mode, duty):
        self.mode = mode
        self.duty = duty if mode == proto.PWM else 0

    def allow(self, on):
        """None when done, else the NACK reason (B7). The coil follows in this pass's :meth:`step`."""
        if on and self.blocking:
            return proto.FAULT_ACTIVE
        self.permission = on
        return None

    def set_lock(self, locked):
        """SET_LOCK (B15): a new attempt towards ``locked`` (also after a FAULT); the drive and T_lock start in
        this pass's :meth:`step`. None when done, else the NACK reason."""
        if not self.capabilities & proto.CAP_CABLE_LOCK:
            return proto.UNSUPPORTED
        self.lock_wanted = locked
        self._lock_since = None
        self._lock_reached = False
        return None

    def make_safe(self):
        """HOST_HELLO and the host watchdog: X1, permission withdrawn, coil off (B4, §4.4)."""
        self.mode = proto.X1
        self.duty = 0
        self.permission = False
        self.coil = False
        self._c1_since = None

    def trip_host_timeout(self):
        self.make_safe()
        self.faults |= proto.HOST_TIMEOUT

    def clear(self, mask, self_test):
        """CLEAR_FAULTS (B11): latched bits in ``mask`` whose cause has gone; live bits never. SELFTEST_FAILED
        goes only with a passing re-test, whose result is logged either way (B14)."""
        clear = mask & (proto.HOST_TIMEOUT | proto.MCU_WATCHDOG)
        if mask & proto.RCD_TRIP and not self._rcd_input:
            clear |= proto.RCD_TRIP
        if mask & proto.SELFTEST_FAILED and self.faults & proto.SELFTEST_FAILED \
                and self.self_test_result(self_test(), "re-test"):
            clear |= proto.SELFTEST_FAILED
        self.faults &= ~clear

    def self_test_result(self, passed, when="power-on"):
        """The RCD self test's outcome: SELFTEST_FAILED latched when it failed, and a LOG either way (B14: the
        technician sees that the RCD was tested, not only that it failed). Returns ``passed``."""
        if passed:
            self.logs.append((proto.INFO, "%s self test passed: the RCD tripped on its test current and cleared"
                              % when))
        else:
            self.faults |= proto.SELFTEST_FAILED
            self.logs.append((proto.ERROR, "%s self test failed: the RCD did not trip on its test current or did not"
                              " clear after it (SELFTEST_FAILED)" % when))
        return passed

    # --- the loop's step ---------------------------------------------------------------------------------

    def step(self, now_ms, high_mv, low_mv, mirror, rcd, temperature_dc, lock_fb=False):
        """Take one set of input samples; update faults, permission, the lock and the coil. The loop applies
        the outputs right after, so the next samples are taken with this pass's pilot output."""
        sampled = self._sampled_mode
        self._sampled_mode = self.mode
        if sampled != proto.F:  # driving -12 V hides the EV's resistors: keep the last state
            pwm = sampled == proto.PWM
            pilot, diode_failed = classify(high_mv, low_mv, pwm)
            reading = pilot * 4 + diode_failed * 2 + pwm
            if reading != self._reading:
                self._reading = reading
                self._reading_since = now_ms
                self.stable = False
            elif not self.stable and ticks_diff(now_ms, self._reading_since) >= DEBOUNCE_MS:
                self.ev_pilot = pilot
                self.diode_failed = diode_failed
                self.pwm_seen = pwm
                self.stable = True
        else:
            self.stable = False
            self._reading = -1  # back from F: the EV's state is debounced afresh
        if self.mode != proto.PWM or self.ev_pilot == proto.PILOT_A:
            self.diode_failed = False
        self.mirror = mirror
        self.temperature = temperature_dc
        self._rcd_input = rcd
        live = 0
        if self.diode_failed:
            live |= proto.DIODE_FAILURE
        if self.pilot == proto.PILOT_E:
            live |= proto.PILOT_SHORT
        if temperature_dc is not None:
            if temperature_dc > TEMP_LIMIT_DC or (self.faults & proto.OVERTEMPERATURE
                                                  and temperature_dc >= TEMP_LIMIT_DC - TEMP_HYSTERESIS_DC):
                live |= proto.OVERTEMPERATURE
        faults = (self.faults & ~proto.LIVE_FAULTS) | live
        if rcd:
            faults |= proto.RCD_TRIP
        new = faults & ~self.faults
        self.faults = faults
        if new & proto.BLOCKING_FAULTS and self.permission:  # B8: a blocking fault takes the permission
            self.permission = False
            self.logs.append((proto.WARNING, "blocking faults 0x%x: permission to energize dropped" % faults))
        elif new:
            self.logs.append((proto.WARNING, "faults 0x%x set" % new))
        self._step_lock(now_ms, lock_fb)
        self._decide_coil(now_ms)
        self._supervise_mirror(now_ms)

    def _step_lock(self, now_ms, lock_fb):
        """B15: drive the lock towards what the host asked for until the position switch says it is there;
        MOVING meanwhile; FAULT (drive off) when T_lock passed first, or when the lock leaves the position it had
        reached. Without a request since the start the switch is reported as it is and nothing is driven."""
        self.lock_fb = lock_fb
        if not self.capabilities & proto.CAP_CABLE_LOCK:
            return
        wanted = self.lock_wanted
        drive = DRIVE_OFF
        if wanted is None or wanted == lock_fb:
            state = proto.LOCK_LOCKED if lock_fb else proto.LOCK_UNLOCKED
            self._lock_reached = wanted is not None
        elif self._lock_reached:
            state = proto.LOCK_FAULT  # it left the position it had reached: not driven again by itself
        else:
            if self._lock_since is None:
                self._lock_since = now_ms
            if ticks_diff(now_ms, self._lock_since) < LOCK_TIMEOUT_MS:
                state = proto.LOCK_MOVING
                drive = DRIVE_LOCK if wanted else DRIVE_UNLOCK
            else:
                state = proto.LOCK_FAULT
        if state == proto.LOCK_FAULT and self.lock != proto.LOCK_FAULT:
            self.logs.append((proto.ERROR, "cable lock not %s within %d ms" % ("locked" if wanted else "unlocked",
                                                                              LOCK_TIMEOUT_MS)))
        self.lock = state
        self.lock_drive = drive

    def _decide_coil(self, now_ms):
        """B7/B8. Close only in C2/D2: permission, no blocking fault, the EV in C or D as measured with the
        PWM running (so the diode check has had its say) and the latest reading agreeing. Open at once when
        any of that ends, except when the host stops the PWM (X1) with the contactor closed: IEC 61851-1
        Table A.6 sequence 10.1/10.2 gives the EV up to 6 s in C1/D1 to go to B (it then opens within the
        debounce, without current); the board opens after c1_timeout_ms at the latest."""
        ready = self.permission and not self.blocking and self.ev_pilot in (proto.PILOT_C, proto.PILOT_D) \
            and (self.lock_wanted is None or (self.lock_wanted and self.lock == proto.LOCK_LOCKED))  # B16
        if not ready or self.mode == proto.F:
            coil = False
        elif self.mode == proto.PWM:
            coil = self.coil or (self.pwm_seen and self.stable)  # PWM back within C1: stays closed
        elif not self.coil:
            coil = False
        else:
            if self._c1_since is None:
                self._c1_since = now_ms
                self.logs.append((proto.INFO, "PWM stopped in state C/D: open in %d ms unless the EV goes to B"
                                  % self.c1_timeout_ms))
            coil = ticks_diff(now_ms, self._c1_since) < self.c1_timeout_ms
            if not coil:
                self.logs.append((proto.WARNING, "EV still in C/D %d ms after the PWM stopped: opened under load"
                                  % self.c1_timeout_ms))
        if not coil or self.mode != proto.X1:
            self._c1_since = None
        self.coil = coil

    def _supervise_mirror(self, now_ms):
        """Log a contactor whose mirror contact disagrees with the coil for longer than it takes to
        move: welded (closed with the coil off) or failed to close. The host decides what follows (§6)."""
        if not self.capabilities & proto.CAP_MIRROR_CONTACT or self.mirror == self.coil:
            self._disagree_since = None
            self._mirror_logged = False
            return
        if self._disagree_since is None:
            self._disagree_since = now_ms
        elif not self._mirror_logged and ticks_diff(now_ms, self._disagree_since) >= MIRROR_SETTLE_MS:
            self._mirror_logged = True
            what = "welded: mirror contact closed with the coil off" if self.mirror else \
                "failed to close: mirror contact open with the coil on"
            self.logs.append((proto.ERROR, "contactor " + what))
