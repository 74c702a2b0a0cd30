"""The board side of the host link (docs/ioboard-protocol.md §4): commands and their answers,
duplicate detection, the versioned hello, the host keepalive watchdog, STATE and LOG reports.

Pure logic like :mod:`iob.safety`: frames come in through :meth:`Link.feed`, frames to send pile up
in :attr:`Link.tx` until the loop writes them (after it has applied the outputs, so a host that reads
an ACK finds the command already carried out).
"""

from time import ticks_add, ticks_diff

from micropython import const

from iob import frame, proto

HELLO_REPEAT_MS = const(1000)  # B2
LOG_BUDGET_PER_S = const(10)  # B14


class Link:
    def __init__(self, safety, board, reset_reason, now_ms):
        self.safety = safety
        self.hw_revision = board.HW_REVISION
        self.capabilities = board.CAPABILITIES
        self.keepalive_ms = board.KEEPALIVE_TIMEOUT_MS
        self.report_ms = board.REPORT_INTERVAL_MS
        self.reset_reason = reset_reason
        self.self_test = board.self_test
        self.linked = False
        self.reset_requested = False
        self.tx = []
        self.reader = frame.FrameReader()
        self._seq = 0
        self._last_cmd_seq = None
        self._last_answer = None  # (ack_seq, reason or None, text)
        self._last_rx = now_ms
        self._hello_due = now_ms  # B1: BOARD_HELLO first, right after start-up
        self._last_report = None
        self._last_report_at = now_ms
        self._force_report = False
        self._log_window = now_ms
        self._log_count = 0
        self._now = now_ms
        # counters (reported to the simulation, and in LOG on request of a technician some day)
        self.requests = 0
        self.bad_frames = 0
        self.duplicates = 0
        self.nacks = 0
        self.keepalive_trips = 0
        self.logs_dropped = 0

    # --- sending -----------------------------------------------------------------------------------------

    def _next_seq(self):
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        return seq

    def _send(self, payload):
        self.tx.append(frame.encode_frame(payload))

    def take_tx(self):
        """The bytes to write now (None when nothing is due)."""
        if not self.tx:
            return None
        data = b"".join(self.tx)
        self.tx = []
        return data

    def _hello(self):
        self._send(proto.board_hello(self._next_seq(), self.hw_revision, self.capabilities, self.keepalive_ms,
                                     self.report_ms, self.reset_reason))

    def _answer(self, ack_seq, reason=None, text=""):
        self._last_answer = (ack_seq, reason, text)
        self._send_answer()

    def _send_answer(self):
        ack_seq, reason, text = self._last_answer
        if reason is None:
            self._send(proto.ack(self._next_seq(), ack_seq))
        else:
            self.nacks += 1
            self._send(proto.nack(self._next_seq(), ack_seq, reason, text))

    def log(self, level, text):
        """A LOG frame, at most LOG_BUDGET_PER_S a second (B14); the rest are counted."""
        if ticks_diff(self._now, self._log_window) >= 1000:
            self._log_window = self._now
            self._log_count = 0
        if self._log_count >= LOG_BUDGET_PER_S:
            self.logs_dropped += 1
            return
        self._log_count += 1
        self._send(proto.log(self._next_seq(), level, text))

    # --- receiving ---------------------------------------------------------------------------------------

    def feed(self, data, now_ms):
        self._now = now_ms
        dropped = self.reader.dropped
        self.reader.feed(data, self._on_payload)
        self.bad_frames += self.reader.dropped - dropped

    def _on_payload(self, payload):
        try:
            kind, seq, args = proto.parse_command(payload)
        except proto.Invalid as exc:
            self.bad_frames += 1
            if exc.seq is not None:  # §2.4: a readable seq gets a NACK instead of a host timeout
                self._last_cmd_seq = exc.seq
                self._answer(exc.seq, exc.reason, exc.text)
            return
        self.requests += 1
        self._last_rx = self._now  # §4.4: any valid host frame feeds the host watchdog
        if kind == proto.HOST_HELLO:
            self._last_cmd_seq = None  # B5: a new host session may repeat the old one's numbers
        elif seq == self._last_cmd_seq and self._last_answer is not None:
            self.duplicates += 1  # B5: a retransmission, answered again and not executed again
            self._send_answer()
            return
        self._last_cmd_seq = seq
        self._execute(kind, seq, args)

    def _execute(self, kind, seq, args):
        safety = self.safety
        if kind == proto.HOST_HELLO:
            safety.make_safe()  # B4: a new host session starts from the safe state
            major, minor = args
            if major != proto.PROTO_MAJOR:
                self.linked = False
                self._hello_due = ticks_add(self._now, HELLO_REPEAT_MS)
                self._answer(seq, proto.VERSION_MISMATCH,
                             "board speaks %d.x, host %d.%d" % (proto.PROTO_MAJOR, major, minor))
            else:
                self.linked = True
                self._answer(seq)
            self._hello()  # B4: right after the answer, nothing in between
        elif kind == proto.KEEPALIVE:
            self._answer(seq)
        elif kind == proto.SET_PWM:
            mode, duty = args
            if mode == proto.PWM and not self.linked:
                self._answer(seq, proto.NOT_LINKED, "PWM needs a HOST_HELLO first")
            elif mode == proto.PWM and safety.faults & proto.HOST_TIMEOUT:
                self._answer(seq, proto.FAULT_ACTIVE, "clear HOST_TIMEOUT first")
            else:
                safety.set_pwm(mode, duty)
                self._answer(seq)
        elif kind == proto.ALLOW_CONTACTOR:
            if args and not self.linked:
                self._answer(seq, proto.NOT_LINKED, "contactor needs a HOST_HELLO first")
            elif safety.allow(args) is not None:
                self._answer(seq, proto.FAULT_ACTIVE, "blocking faults 0x%x" % safety.blocking)
            else:
                self._answer(seq)
        elif kind == proto.SET_LOCK:
            if not self.capabilities & proto.CAP_CABLE_LOCK:
                self._answer(seq, proto.UNSUPPORTED, "no cable lock on this board")
            elif not self.linked:
                self._answer(seq, proto.NOT_LINKED, "the lock needs a HOST_HELLO first")
            else:
                safety.set_lock(args)
                self._answer(seq)
        elif kind == proto.REQUEST_STATE:
            self._answer(seq)
            self._force_report = True  # B10: the STATE follows the ACK in this loop pass
        elif kind == proto.CLEAR_FAULTS:
            safety.clear(args, self.self_test)
            self._answer(seq)
        elif kind == proto.RESET:
            self._answer(seq)
            self.reset_requested = True  # B12: the loop writes the ACK, then restarts

    # --- timers and reports --------------------------------------------------------------------------------

    def tick(self, now_ms):
        """Hello repeat while unlinked (B2) and the host watchdog (§4.4)."""
        self._now = now_ms
        if not self.linked:
            if ticks_diff(now_ms, self._hello_due) >= 0:
                self._hello_due = ticks_add(now_ms, HELLO_REPEAT_MS)
                self._hello()
        elif not self.safety.faults & proto.HOST_TIMEOUT:
            silent = ticks_diff(now_ms, self._last_rx)
            if silent > self.keepalive_ms:
                self.keepalive_trips += 1
                self.safety.trip_host_timeout()
                self.log(proto.WARNING, "host keepalive timeout after %d ms" % silent)

    def report(self, now_ms):
        """STATE on any change (B9), on REQUEST_STATE (B10) and at least every T_rep; then queued LOGs."""
        s = self.safety
        lock = s.lock if self.capabilities & proto.CAP_CABLE_LOCK else None
        snapshot = (s.pilot, s.mode, s.duty, s.coil, s.mirror, s.faults, lock)
        if self._force_report or snapshot != self._last_report \
                or ticks_diff(now_ms, self._last_report_at) >= self.report_ms:
            self._force_report = False
            self._last_report = snapshot
            self._last_report_at = now_ms
            temperature = s.temperature if self.capabilities & proto.CAP_TEMPERATURE else None
            self._send(proto.state(self._next_seq(), s.pilot, s.mode, s.duty, s.coil, s.mirror, s.faults,
                                   temperature, lock))
        while s.logs:
            level, text = s.logs.pop(0)
            self.log(level, text)
