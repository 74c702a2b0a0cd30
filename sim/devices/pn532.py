"""A simulated NXP PN532 (firmware V1.6, PN532/C106) on the HSU side of a serial wire.

What it models, per UM0701-02 and the C106 application note:

* Power-up in LowVbat (asleep): the first byte on RX wakes it, and the chip loses the bytes that
  arrive while its oscillator starts (``wake_loss_bytes``, 2 by default). A host that sends the HSU
  wake-up (0x55 0x55 + zeros) loses only filler; one that does not loses the start of its first
  frame, gets no ACK and has to send it again.
* Until SAMConfiguration, only SAMConfiguration and GetFirmwareVersion are served; anything else gets
  the syntax-error frame. (Stricter than strictly needed, on purpose: it catches a host that forgets
  to take the chip out of LowVbat.)
* Every well-formed command frame (TFI D4, good LCS/DCS) is acknowledged with an ACK, then answered.
  Unknown commands and bad parameters get the syntax-error frame 00 00 FF 01 FF 7F 81 00.
* A **corrupt** command frame (bad LCS/DCS, wrong TFI, truncated) is **ignored**: no ACK, no NACK.
  The NACK frame only exists from host to PN532 (§6.2.1.4), so the chip has no way to complain; the
  host notices the missing ACK and sends the command again. Such frames are counted in
  ``counters.bad_frames``.
* A NACK from the host makes the chip send its last answer again; an ACK from the host is the abort
  mechanism (§6.2.1.3): it ends an InAutoPoll in progress (every other command is answered at once, so
  there is nothing else to abort) and is counted.
* InListPassiveTarget (106 kbps type A) lists the card on the reader, if any; other BrTy find none.
* InAutoPoll (§7.3.13) runs for a while: the chip polls each requested type in turn, one ``Period`` x
  150 ms each, ``PollNr`` times (0xFF: endless). It answers as soon as a poll finds the card: at once if
  the card is there when the command comes, else at the next period after it is placed; and with
  NbTg = 0 after PollNr x types x Period x 150 ms if no poll found one. Only type A cards exist here:
  types 0x00 (generic 106 kbps) and 0x10 (MIFARE) find them, reported as type 0x10; 0x20 (ISO/IEC
  14443-4A) finds none of them (their SAK says -3 only), nor does any other valid type. A PollNr of 0,
  a Period outside 1..15, no type, more than 15 or an undefined type code get the syntax-error frame.
  While it runs the chip takes no other command: a command frame is ignored (no ACK; counted in
  ``ignored_while_busy``) and so is a NACK (there is no answer to repeat yet); the host has to abort it
  first. Every InAutoPoll started and answered is recorded in ``autopolls``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from hal.interfaces import DeviceError
from hal.pn532.codec import (
    ACK_FRAME,
    AUTOPOLL_PERIOD_S,
    BRTY_106_TYPE_A,
    ERROR_FRAME,
    RF_CFG_MAX_RETRIES,
    TFI_HOST_TO_PN532,
    Ack,
    AutoPollRequest,
    AutoPollTarget,
    AutoPollType,
    Command,
    ErrorFrame,
    Frame,
    FrameDecoder,
    InformationFrame,
    Nack,
    Pn532ProtocolError,
    TargetTypeA,
    build_answer,
    encode_in_auto_poll,
    encode_in_list_passive_target_a,
    parse_in_auto_poll_command,
)
from hal.serial_port import AsyncSerialPort
from sim.devices.interfaces import DeviceCounters

FIRMWARE_VERSION = bytes([0x32, 0x01, 0x06, 0x07])  # IC PN532, Ver 1, Rev 6, ISO14443A/B + ISO18092

# ATQA (as the PN532 sends SENS_RES) and SAK of typical cards for each UID size
_CARD_PROFILE: dict[int, tuple[bytes, int]] = {
    4: (b"\x00\x04", 0x08),  # MIFARE Classic 1K, single-size UID
    7: (b"\x00\x44", 0x00),  # MIFARE Ultralight / NTAG, double-size UID
    10: (b"\x00\x84", 0x00),  # triple-size UID
}


# InAutoPoll types that activate the simulated cards (all ISO/IEC 14443-3 type A, none -4 compliant)
_FINDS_CARD = frozenset({AutoPollType.GENERIC_PASSIVE_106, AutoPollType.MIFARE})


@dataclass(frozen=True)
class AutoPollEvent:
    """A step of an InAutoPoll, in the order they happened: ``answered`` False when the chip took the
    command, True when it answered it (``uid``: the card it listed, ``None`` for NbTg = 0). An aborted
    InAutoPoll has no answer."""

    answered: bool
    uid: str | None = None


@dataclass
class _AutoPoll:
    request: AutoPollRequest
    polls_done: int = 0  # (type, period) slots polled so far
    timer: asyncio.TimerHandle | None = None


def parse_uid(uid: str) -> bytes:
    """Validate a card UID given as hex (4, 7 or 10 bytes) and return its bytes."""
    try:
        raw = bytes.fromhex(uid)
    except ValueError as exc:
        raise ValueError(f"UID {uid!r} is not hex") from exc
    if len(raw) not in _CARD_PROFILE:
        raise ValueError(f"UID {uid!r} has {len(raw)} bytes; ISO/IEC 14443 type A UIDs have 4, 7 or 10")
    return raw


class SimulatedPn532:
    """The chip's HSU side; implements :class:`sim.devices.interfaces.SimulatedReader`."""

    def __init__(self, port: str, *, baudrate: int = 115200, wake_loss_bytes: int = 2) -> None:
        self.port = port
        self.counters = DeviceCounters()
        self.commands: list[int] = []  # command codes served, in order (tests assert the dialog)
        self._port = AsyncSerialPort(port, baudrate, name="sim pn532", on_data=self._on_data)
        self._wake_loss_bytes = wake_loss_bytes
        self._decoder = FrameDecoder(idle=b"\x00\x55")
        self._asleep = True
        self._lowvbat = True
        self._to_lose = 0
        self._silent = False
        self._uid: bytes | None = None
        self._last_answer: bytes | None = None
        self._corrupt_answers = 0
        self._autopoll: _AutoPoll | None = None
        self.autopolls: list[AutoPollEvent] = []  # InAutoPolls taken and answered, in order
        self.passive_activation_retries = 0xFF  # the chip's default: wait for a card forever

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._port.open()

    def close(self) -> None:
        self._end_autopoll()
        self._port.close()

    async def __aenter__(self) -> SimulatedPn532:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- SimulatedReader ----------------------------------------------------------------------

    def present(self, uid: str) -> None:
        self._uid = parse_uid(uid)

    def remove(self) -> None:
        self._uid = None

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) answering: the chip hears nothing and says nothing."""
        self._silent = silent

    # --- extra fault injection ----------------------------------------------------------------

    def power_cycle(self) -> None:
        """Back to the power-up state: asleep, LowVbat, nothing to repeat on NACK, no InAutoPoll running."""
        self._end_autopoll()
        self._asleep, self._lowvbat, self._last_answer = True, True, None
        self._decoder = FrameDecoder(idle=b"\x00\x55", dropped=self._decoder.dropped)

    def corrupt_next_answers(self, count: int = 1) -> None:
        """Send the next ``count`` answers with a wrong DCS (a NACK still gets the good one)."""
        self._corrupt_answers += count

    @property
    def awake(self) -> bool:
        return not self._asleep

    @property
    def sam_configured(self) -> bool:
        return not self._lowvbat

    @property
    def auto_polling(self) -> bool:
        """An InAutoPoll is running (taken, not yet answered or aborted)."""
        return self._autopoll is not None

    # --- HSU side -----------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self.counters.extra[key] = self.counters.extra.get(key, 0) + n

    def _on_data(self, data: bytes) -> None:
        if self._silent:
            self._count("ignored_bytes", len(data))
            return
        if self._asleep:
            self._asleep = False
            self._to_lose = self._wake_loss_bytes
            self._count("wakeups")
        if self._to_lose:
            lost, data = data[: self._to_lose], data[self._to_lose :]
            self._to_lose -= len(lost)
            self._count("lost_while_waking", len(lost))
        for frame in self._decoder.feed(data):
            self._handle(frame)
        self.counters.bad_frames = self._decoder.dropped

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(DeviceError):  # closed, or failed just now (the port logged that)
            self._port.write(data)

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, Ack):
            self._count("acks_received")
            if self._autopoll is not None:
                self._count("autopolls_aborted")
                self._end_autopoll()
            return
        if isinstance(frame, Nack):
            self._count("nacks_received")
            if self._autopoll is not None:
                self._count("ignored_while_busy")
            elif self._last_answer is not None:
                self._count("answers_repeated")
                self._send(self._last_answer)
            return
        if isinstance(frame, ErrorFrame) or frame.tfi != TFI_HOST_TO_PN532:
            self._decoder.dropped += 1  # not a command: ignored like any corrupt frame
            return
        if self._autopoll is not None:
            self._count("ignored_while_busy")
            return
        self.counters.requests += 1
        self.commands.append(frame.code)
        self._send(ACK_FRAME)
        answer = self._execute(frame)
        if answer is not None:
            self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        self._last_answer = answer
        if self._corrupt_answers and answer != ERROR_FRAME:
            self._corrupt_answers -= 1
            answer = answer[:-2] + bytes([answer[-2] ^ 0xFF]) + answer[-1:]
            self._count("answers_corrupted")
        self._send(answer)

    # --- InAutoPoll ---------------------------------------------------------------------------

    def _start_autopoll(self, request: AutoPollRequest) -> None:
        self._autopoll = _AutoPoll(request)
        self.autopolls.append(AutoPollEvent(answered=False))
        self._autopoll_tick()  # the first poll starts at once

    def _autopoll_tick(self) -> None:
        """One Period of polling for the next type; answer if it finds the card or was the last one."""
        run = self._autopoll
        if run is None:
            return
        run.timer = None
        request = run.request
        kind = request.types[run.polls_done % len(request.types)]
        run.polls_done += 1
        if self._uid is not None and kind in _FINDS_CARD:
            self._finish_autopoll(self._uid)
            return
        slots = request.poll_nr * len(request.types)
        delay = request.period * AUTOPOLL_PERIOD_S
        if request.endless or run.polls_done < slots:
            run.timer = asyncio.get_running_loop().call_later(delay, self._autopoll_tick)
        else:  # the last period runs out with nothing found
            run.timer = asyncio.get_running_loop().call_later(delay, self._finish_autopoll, None)

    def _finish_autopoll(self, uid: bytes | None) -> None:
        self._end_autopoll()
        if self._silent:  # it hears nothing and says nothing: the answer is lost with it
            self._count("answers_lost_silent")
            return
        targets = []
        if uid is not None:
            sens_res, sel_res = _CARD_PROFILE[len(uid)]
            targets.append(AutoPollTarget.of_type_a(AutoPollType.MIFARE, TargetTypeA(1, sens_res, sel_res, uid)))
        self.autopolls.append(AutoPollEvent(answered=True, uid=uid.hex().upper() if uid is not None else None))
        self._answer(build_answer(Command.IN_AUTO_POLL, encode_in_auto_poll(targets)))

    def _end_autopoll(self) -> None:
        run, self._autopoll = self._autopoll, None
        if run is not None and run.timer is not None:
            run.timer.cancel()

    def _execute(self, frame: InformationFrame) -> bytes | None:
        """The answer to a command, or ``None`` if it comes later (InAutoPoll)."""
        code, params = frame.code, frame.params
        if code == Command.GET_FIRMWARE_VERSION:
            return build_answer(code, FIRMWARE_VERSION)
        if code == Command.SAM_CONFIGURATION:
            if not params or not 0x01 <= params[0] <= 0x04:
                return ERROR_FRAME
            self._lowvbat = False
            return build_answer(code)
        if self._lowvbat:
            self._count("refused_in_lowvbat")
            return ERROR_FRAME
        if code == Command.RF_CONFIGURATION:
            if not params:
                return ERROR_FRAME
            if params[0] == RF_CFG_MAX_RETRIES:
                if len(params) != 4:
                    return ERROR_FRAME
                self.passive_activation_retries = params[3]
            return build_answer(code)
        if code == Command.IN_LIST_PASSIVE_TARGET:
            if len(params) < 2 or params[0] not in (1, 2):
                return ERROR_FRAME
            if params[1] != BRTY_106_TYPE_A or self._uid is None:
                return build_answer(code, b"\x00")
            sens_res, sel_res = _CARD_PROFILE[len(self._uid)]
            target = TargetTypeA(tg=1, sens_res=sens_res, sel_res=sel_res, nfcid1=self._uid)
            return build_answer(code, encode_in_list_passive_target_a([target]))
        if code == Command.IN_AUTO_POLL:
            try:
                request = parse_in_auto_poll_command(params)
            except Pn532ProtocolError:
                return ERROR_FRAME
            self._start_autopoll(request)
            return None
        if code == Command.IN_RELEASE:
            if len(params) != 1:
                return ERROR_FRAME
            return build_answer(code, b"\x00")
        self._count("unknown_commands")
        return ERROR_FRAME
