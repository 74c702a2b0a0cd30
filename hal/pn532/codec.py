"""NXP PN532 host-interface frames (UM0701-02 §6.2) and the answers the reader driver needs.

Pure: no I/O. Used by :mod:`hal.pn532.driver` (host side) and by the simulated chip in ``sim/``.

Frames on the wire (every multi-byte figure below is in the order it is sent)::

    normal      00 00 FF LEN LCS TFI PD0..PDn DCS 00          LEN+LCS = 0, TFI+PD0+..+PDn+DCS = 0 (mod 256)
    extended    00 00 FF FF FF LENM LENL LCS TFI PD0..PDn DCS 00    LENM+LENL+LCS = 0
    ACK         00 00 FF 00 FF 00
    NACK        00 00 FF FF 00 00      host -> PN532 only: "send your last answer again"
    error       00 00 FF 01 FF 7F 81 00  PN532 -> host: syntax error at application level

``LEN`` counts TFI and PD0..PDn. TFI is D4 host->PN532 and D5 PN532->host; the answer's PD0 is the
command code + 1. Preamble and postamble may be any number of 0x00 bytes (§6.2.1.6), so the decoder
treats 0x00 between frames as idle line, not noise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from hal.interfaces import DeviceError

TFI_HOST_TO_PN532 = 0xD4
TFI_PN532_TO_HOST = 0xD5
TFI_ERROR = 0x7F

START_CODE = b"\x00\xff"
ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"

# HSU wake-up: 0x55 bytes to wake the chip from power-down / LowVbat, then zeros long enough for its
# oscillator to start before the first real frame (the bytes it loses meanwhile are only filler).
HSU_WAKEUP = b"\x55\x55" + b"\x00" * 14

MAX_NORMAL_LENGTH = 255  # TFI + data in a normal information frame
MAX_FRAME_LENGTH = 265  # firmware limit for TFI + data (UM0701-02 §6.2.1.2: 264 data bytes + TFI)


class Command(IntEnum):
    """The PN532 commands this project uses (UM0701-02 §7, table of commands)."""

    GET_FIRMWARE_VERSION = 0x02
    SAM_CONFIGURATION = 0x14
    RF_CONFIGURATION = 0x32
    IN_LIST_PASSIVE_TARGET = 0x4A
    IN_RELEASE = 0x52
    IN_AUTO_POLL = 0x60


SAM_MODE_NORMAL = 0x01  # SAMConfiguration Mode: the SAM is not used
RF_CFG_MAX_RETRIES = 0x05  # RFConfiguration CfgItem: MxRtyATR, MxRtyPSL, MxRtyPassiveActivation
BRTY_106_TYPE_A = 0x00  # InListPassiveTarget BrTy: 106 kbps ISO/IEC 14443-3 type A
IN_RELEASE_ALL = 0x00  # InRelease Tg: every target the chip has activated


class AutoPollType(IntEnum):
    """InAutoPoll target types (UM0701-02 §7.3.13). The code is a bit field: 0x80 active mode, 0x40 DEP,
    0x20 ISO/IEC 14443-4 (TCL), 0x10 MIFARE/FeliCa, bits 0..2 the baud rate and modulation (as BrTy)."""

    GENERIC_PASSIVE_106 = 0x00  # ISO/IEC 14443-4A, MIFARE and DEP
    GENERIC_PASSIVE_212 = 0x01  # FeliCa and DEP
    GENERIC_PASSIVE_424 = 0x02
    ISO14443_4B_106 = 0x03
    JEWEL_106 = 0x04  # Innovision Jewel tag
    MIFARE = 0x10  # any ISO/IEC 14443-3 type A card at 106 kbps, activated up to its UID and SAK
    FELICA_212 = 0x11
    FELICA_424 = 0x12
    ISO14443_4A_106 = 0x20
    ISO14443_4B_TCL_106 = 0x23
    DEP_PASSIVE_106 = 0x40
    DEP_PASSIVE_212 = 0x41
    DEP_PASSIVE_424 = 0x42
    DEP_ACTIVE_106 = 0x80
    DEP_ACTIVE_212 = 0x81
    DEP_ACTIVE_424 = 0x82


_AUTOPOLL_TYPE_CODES = frozenset(int(t) for t in AutoPollType)
# Target types whose AutoPollTargetData is InListPassiveTarget's 106 kbps type A target data
AUTOPOLL_TYPE_A = frozenset({AutoPollType.GENERIC_PASSIVE_106, AutoPollType.MIFARE, AutoPollType.ISO14443_4A_106})
AUTOPOLL_PERIOD_S = 0.150  # the unit of InAutoPoll's Period
AUTOPOLL_ENDLESS = 0xFF  # PollNr: poll until a target is found (never answers NbTg = 0)
MAX_AUTOPOLL_PERIOD = 0x0F
MAX_AUTOPOLL_TYPES = 15

# Status byte error codes (UM0701-02 §7.1, "Error handling"), for clear log messages.
STATUS_TEXT: dict[int, str] = {
    0x00: "success",
    0x01: "time out, the target has not answered",
    0x02: "CRC error detected by the CIU",
    0x03: "parity error detected by the CIU",
    0x04: "erroneous bit count during anti-collision/select",
    0x05: "framing error during MIFARE operation",
    0x06: "abnormal bit-collision during 106 kbps anti-collision",
    0x07: "communication buffer size insufficient",
    0x09: "RF buffer overflow detected by the CIU",
    0x0A: "RF field not switched on in time",
    0x0B: "RF protocol error",
    0x0D: "temperature error: antenna drivers switched off",
    0x0E: "internal buffer overflow",
    0x10: "invalid parameter",
    0x12: "DEP protocol: command not supported",
    0x13: "DEP protocol / MIFARE / ISO14443-4: data format does not match",
    0x14: "MIFARE authentication error",
    0x23: "ISO/IEC 14443-3: UID check byte is wrong",
    0x25: "DEP protocol: invalid device state",
    0x26: "operation not allowed in this configuration",
    0x27: "command not acceptable in the current context",
    0x29: "the PN532 as target has been released by its initiator",
    0x2A: "ISO/IEC 14443-3B: card ID does not match",
    0x2B: "ISO/IEC 14443-3B: the card previously activated has disappeared",
    0x2C: "NFCID3 initiator/target mismatch in DEP 212/424 kbps passive",
    0x2D: "over-current event detected",
    0x2E: "NAD missing in DEP frame",
}


def status_text(status: int) -> str:
    """Human-readable meaning of a PN532 status byte (bit 6 'MI' and bit 7 'NAD' are masked)."""
    code = status & 0x3F
    return STATUS_TEXT.get(code, f"unknown error 0x{code:02X}")


class Pn532ProtocolError(DeviceError):
    """A frame or an answer that does not follow UM0701-02 (wrong length, wrong code, bad layout)."""


class Pn532ApplicationError(DeviceError):
    """The PN532 answered with its syntax-error frame or a non-zero status byte."""


# --- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Nack:
    pass


@dataclass(frozen=True)
class ErrorFrame:
    """The PN532's application-level syntax error frame (00 00 FF 01 FF 7F 81 00)."""


@dataclass(frozen=True)
class InformationFrame:
    """A command (TFI D4) or an answer (TFI D5): ``payload`` is PD0..PDn, PD0 being the code."""

    tfi: int
    payload: bytes
    extended: bool = False

    @property
    def code(self) -> int:
        return self.payload[0]

    @property
    def params(self) -> bytes:
        return self.payload[1:]


Frame = Ack | Nack | ErrorFrame | InformationFrame


def _checksum(data: bytes | bytearray) -> int:
    """The byte that brings ``sum(data)`` to 0 modulo 256 (LCS and DCS)."""
    return (-sum(data)) & 0xFF


def build_information_frame(tfi: int, payload: bytes, *, extended: bool | None = None) -> bytes:
    """Encode a normal (or, when needed or asked for, extended) information frame.

    ``payload`` is PD0..PDn (command code first). Extended frames are used automatically above 255
    bytes of TFI+data, as the PN532 itself does.
    """
    if not 0 <= tfi <= 0xFF:
        raise ValueError(f"TFI out of range: {tfi}")
    body = bytes([tfi]) + payload
    length = len(body)
    if length > MAX_FRAME_LENGTH:
        raise ValueError(f"frame too long: {length} bytes of TFI+data, the PN532 takes {MAX_FRAME_LENGTH}")
    if extended is None:
        extended = length > MAX_NORMAL_LENGTH
    if extended:
        lenm, lenl = length >> 8, length & 0xFF
        header = b"\x00\x00\xff\xff\xff" + bytes([lenm, lenl, _checksum(bytes([lenm, lenl]))])
    else:
        if length > MAX_NORMAL_LENGTH:
            raise ValueError(f"{length} bytes need an extended frame")
        header = b"\x00\x00\xff" + bytes([length, _checksum(bytes([length]))])
    return header + body + bytes([_checksum(body), 0x00])


def build_command(command: int, params: bytes = b"") -> bytes:
    """A host -> PN532 command frame (TFI D4)."""
    return build_information_frame(TFI_HOST_TO_PN532, bytes([command]) + params)


def build_answer(command: int, data: bytes = b"") -> bytes:
    """A PN532 -> host answer frame (TFI D5) to ``command`` (its code + 1 goes first)."""
    return build_information_frame(TFI_PN532_TO_HOST, bytes([(command + 1) & 0xFF]) + data)


def encode(frame: Frame) -> bytes:
    """Bytes on the wire for any frame (inverse of :class:`FrameDecoder`)."""
    if isinstance(frame, Ack):
        return ACK_FRAME
    if isinstance(frame, Nack):
        return NACK_FRAME
    if isinstance(frame, ErrorFrame):
        return ERROR_FRAME
    return build_information_frame(frame.tfi, frame.payload, extended=frame.extended)


class DropReason(StrEnum):
    NOISE = "noise"  # bytes outside any frame that are not preamble/postamble filler
    BAD_LCS = "bad_lcs"
    BAD_DCS = "bad_dcs"
    BAD_LENGTH = "bad_length"  # zero, or above the firmware limit
    BAD_TFI = "bad_tfi"
    TRUNCATED = "truncated"  # the line went quiet in the middle of a frame (see expire())


@dataclass
class FrameDecoder:
    """Incremental decoder: feed it bytes in any chunks, it returns the complete frames found.

    Corrupt frames and noise are dropped and counted (``dropped``, by reason in ``reasons``). After a
    bad frame the decoder resumes looking for a start code just after the bad one, so a good frame
    that was swallowed by a corrupt length field is still found. A frame cut short cannot be told
    from one still arriving; the owner calls :meth:`expire` when the line has been quiet too long.

    ``idle`` are bytes that may sit between frames without counting as noise: 0x00 (preamble /
    postamble); the simulated chip adds 0x55 (HSU wake-up).
    """

    idle: bytes = b"\x00"
    dropped: int = 0
    reasons: Counter[DropReason] = field(default_factory=Counter)
    _buf: bytearray = field(default_factory=bytearray)
    _in_noise: bool = False  # inside a noise run that was counted already
    _exempt: int = 0  # bytes ahead that belong to a frame already dropped: not noise again
    _out: list[Frame | DropReason] = field(default_factory=list)

    def _drop(self, reason: DropReason) -> None:
        self.dropped += 1
        self.reasons[reason] += 1
        self._out.append(reason)
        self._in_noise = reason is DropReason.NOISE

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._exempt = max(0, self._exempt - n)

    def _discard(self, n: int) -> None:
        """Throw away the first ``n`` buffered bytes; a run of non-idle ones counts once as noise,
        unless they are the remains of a frame that was already dropped."""
        if n <= 0:
            return
        skip = min(n, self._exempt)
        if not self._in_noise and any(b not in self.idle for b in self._buf[skip:n]):
            self._drop(DropReason.NOISE)
        self._consume(n)

    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Decode ``data``; returns the complete frames found (drops are only counted)."""
        return [e for e in self.events(data) if not isinstance(e, DropReason)]

    def expire(self) -> list[Frame]:
        """See :meth:`expire_events`; returns only the frames."""
        return [e for e in self.expire_events() if not isinstance(e, DropReason)]

    def events(self, data: bytes) -> list[Frame | DropReason]:
        """Like :meth:`feed`, but drops are reported too, in their place in the byte stream: a
        host can tell that a damaged frame came *after* an ACK, i.e. was probably the answer."""
        self._buf.extend(data)
        self._out = []
        self._scan()
        return self._out

    def expire_events(self) -> list[Frame | DropReason]:
        """The line went quiet: give up on a partial frame at the head (counted as truncated) and
        re-scan what follows it, in case a complete frame hides behind a corrupt length field."""
        self._out = []
        self._scan()
        while self._buf.find(START_CODE) >= 0:  # after _scan(), a start code heads an incomplete frame
            self._drop(DropReason.TRUNCATED)
            self._consume(2)
            self._exempt = len(self._buf)  # the rest of what was held is that frame's start
            self._scan()
        self._discard(len(self._buf))
        return self._out

    def _scan(self) -> None:
        while True:
            start = self._buf.find(START_CODE)
            if start < 0:
                # keep a trailing 0x00: it may be the first half of a start code
                keep = 1 if self._buf and self._buf[-1] == 0x00 else 0
                self._discard(len(self._buf) - keep)
                return
            self._discard(start)
            outcome = self._parse_at_start()
            if outcome is None:
                return  # incomplete: wait for more bytes
            if isinstance(outcome[0], DropReason):
                reason, extent = outcome
                self._drop(reason)
                self._consume(2)  # skip this start code only: a good frame may hide inside
                self._exempt = max(self._exempt, extent - 2)
                continue
            frame, size = outcome
            self._consume(size)
            self._in_noise = False
            self._out.append(frame)

    def _parse_at_start(self) -> tuple[Frame, int] | tuple[DropReason, int] | None:
        """Parse the frame whose start code is at the head of the buffer.

        Returns (frame, bytes consumed), (drop reason, bytes known to belong to the bad frame), or
        ``None`` if more bytes are needed.
        Preamble and postamble are not required: they are idle filler either way.
        """
        buf = self._buf
        if len(buf) < 4:
            return None
        b0, b1 = buf[2], buf[3]
        if (b0, b1) == (0x00, 0xFF):
            return Ack(), 4
        if (b0, b1) == (0xFF, 0x00):
            return Nack(), 4
        if (b0, b1) == (0xFF, 0xFF):
            if len(buf) < 7:
                return None
            lenm, lenl, lcs = buf[4], buf[5], buf[6]
            if (lenm + lenl + lcs) & 0xFF:  # the rest is not counted as noise (best guess: LEN)
                return DropReason.BAD_LCS, 7 + ((lenm << 8) | lenl) + 1
            length, body_at, extended = (lenm << 8) | lenl, 7, True
        else:
            if (b0 + b1) & 0xFF:
                return DropReason.BAD_LCS, 4 + b0 + 1
            length, body_at, extended = b0, 4, False
        if not 1 <= length <= MAX_FRAME_LENGTH:
            return DropReason.BAD_LENGTH, body_at
        end = body_at + length + 1  # + DCS
        if len(buf) < end:
            return None
        body = buf[body_at : end - 1]
        if (sum(body) + buf[end - 1]) & 0xFF:
            return DropReason.BAD_DCS, end
        tfi = body[0]
        if tfi == TFI_ERROR and length == 1:
            return ErrorFrame(), end
        if tfi not in (TFI_HOST_TO_PN532, TFI_PN532_TO_HOST) or length < 2:
            return DropReason.BAD_TFI, end
        return InformationFrame(tfi, bytes(body[1:]), extended), end


# --- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirmwareVersion:
    """GetFirmwareVersion answer: IC (0x32 for a PN532), Ver, Rev and the Support bit field."""

    ic: int
    ver: int
    rev: int
    support: int

    def __str__(self) -> str:
        kinds = [n for bit, n in ((0, "ISO14443A"), (1, "ISO14443B"), (2, "ISO18092")) if self.support >> bit & 1]
        return f"PN5{self.ic:02X} v{self.ver}.{self.rev} ({', '.join(kinds) or 'no RF protocol'})"


def parse_firmware_version(params: bytes) -> FirmwareVersion:
    """Parse the data of a GetFirmwareVersion answer (after D5 03)."""
    if len(params) != 4:
        raise Pn532ProtocolError(f"GetFirmwareVersion answer has {len(params)} data bytes, expected 4")
    return FirmwareVersion(*params)


@dataclass(frozen=True)
class TargetTypeA:
    """One ISO/IEC 14443 type A target from InListPassiveTarget (BrTy 0x00)."""

    tg: int  # logical number the PN532 gave the target
    sens_res: bytes  # ATQA, 2 bytes as sent by the PN532
    sel_res: int  # SAK
    nfcid1: bytes  # the UID: 4, 7 or 10 bytes
    ats: bytes = b""  # only for ISO/IEC 14443-4 cards (SAK bit 6), length byte included

    @property
    def uid_hex(self) -> str:
        return self.nfcid1.hex().upper()


def _parse_target_a(data: bytes, pos: int, index: int, what: str) -> tuple[TargetTypeA, int]:
    """One 106 kbps type A target's data at ``pos`` of ``data`` (UM0701-02 §7.3.5): Tg, SENS_RES (2),
    SEL_RES, NFCIDLength, NFCID1, then the ATS (first byte = its own length) if SEL_RES says the card is
    ISO/IEC 14443-4 compliant (bit 0x20) and bytes are left. Returns the target and the position after it."""
    if len(data) < pos + 5:
        raise Pn532ProtocolError(f"{what} answer truncated in the header of target {index + 1}")
    tg, sens_res, sel_res, uid_len = data[pos], data[pos + 1 : pos + 3], data[pos + 3], data[pos + 4]
    pos += 5
    if uid_len not in (4, 7, 10):
        raise Pn532ProtocolError(f"{what}: NFCID1 length {uid_len}, expected 4, 7 or 10")
    if len(data) < pos + uid_len:
        raise Pn532ProtocolError(f"{what} answer truncated: NFCID1 of {uid_len} bytes, {len(data) - pos} present")
    uid = data[pos : pos + uid_len]
    pos += uid_len
    ats = b""
    if sel_res & 0x20 and pos < len(data):
        ats_len = data[pos]
        if ats_len < 1 or len(data) < pos + ats_len:
            raise Pn532ProtocolError(f"{what}: ATS of {ats_len} bytes does not fit the answer")
        ats = data[pos : pos + ats_len]
        pos += ats_len
    return TargetTypeA(tg, bytes(sens_res), sel_res, bytes(uid), bytes(ats)), pos


def encode_target_a(target: TargetTypeA) -> bytes:
    """A 106 kbps type A target's data as the PN532 sends it (inverse of the parsers below)."""
    t = target
    return bytes([t.tg]) + t.sens_res + bytes([t.sel_res, len(t.nfcid1)]) + t.nfcid1 + t.ats


def parse_in_list_passive_target_a(params: bytes) -> list[TargetTypeA]:
    """Parse the data of an InListPassiveTarget answer for 106 kbps type A (after D5 4B).

    Layout (UM0701-02 §7.3.5): NbTg, then per target Tg, SENS_RES (2), SEL_RES (1), NFCIDLength,
    NFCID1 (NFCIDLength bytes), and ATS (first byte = its own length) when SEL_RES says the card is
    ISO/IEC 14443-4 compliant (bit 0x20).
    """
    if not params:
        raise Pn532ProtocolError("InListPassiveTarget answer is empty (no NbTg byte)")
    count = params[0]
    if count > 2:
        raise Pn532ProtocolError(f"InListPassiveTarget answer claims {count} targets, the PN532 lists at most 2")
    targets: list[TargetTypeA] = []
    pos = 1
    for index in range(count):
        target, pos = _parse_target_a(params, pos, index, "InListPassiveTarget")
        targets.append(target)
    if pos != len(params):
        raise Pn532ProtocolError(f"InListPassiveTarget answer has {len(params) - pos} unexpected trailing bytes")
    return targets


def encode_in_list_passive_target_a(targets: list[TargetTypeA]) -> bytes:
    """The data of an InListPassiveTarget answer (inverse of :func:`parse_in_list_passive_target_a`)."""
    return bytes([len(targets)]) + b"".join(encode_target_a(t) for t in targets)


# --- InAutoPoll (UM0701-02 §7.3.13) -----------------------------------------------------------------


@dataclass(frozen=True)
class AutoPollRequest:
    """InAutoPoll's parameters: ``poll_nr`` pollings (0xFF: endless), each polling every type in turn for
    ``period`` * 150 ms; the chip answers as soon as it has activated a target, or with NbTg = 0 once
    every polling is done."""

    poll_nr: int
    period: int
    types: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.poll_nr <= 0xFF:
            raise ValueError(f"InAutoPoll PollNr {self.poll_nr}: 1..254 pollings, or 255 (endless)")
        if not 1 <= self.period <= MAX_AUTOPOLL_PERIOD:
            raise ValueError(f"InAutoPoll Period {self.period}: 1..15 (units of 150 ms)")
        if not 1 <= len(self.types) <= MAX_AUTOPOLL_TYPES:
            raise ValueError(f"InAutoPoll takes 1..{MAX_AUTOPOLL_TYPES} target types, not {len(self.types)}")
        unknown = [t for t in self.types if t not in _AUTOPOLL_TYPE_CODES]
        if unknown:
            raise ValueError(f"InAutoPoll target type 0x{unknown[0]:02X} is not one of UM0701-02's")

    @property
    def endless(self) -> bool:
        return self.poll_nr == AUTOPOLL_ENDLESS

    @property
    def duration_s(self) -> float:
        """How long the chip polls before it answers NbTg = 0 (PollNr * types * Period * 150 ms);
        infinite when endless."""
        if self.endless:
            return float("inf")
        return self.poll_nr * len(self.types) * self.period * AUTOPOLL_PERIOD_S

    def params(self) -> bytes:
        """The command's data (after D4 60): PollNr, Period, Type1..TypeN."""
        return bytes([self.poll_nr, self.period, *self.types])


def parse_in_auto_poll_command(params: bytes) -> AutoPollRequest:
    """The chip's side: the parameters of an InAutoPoll command; :class:`Pn532ProtocolError` if they
    are out of range (the chip answers those with its syntax-error frame)."""
    if len(params) < 3:
        raise Pn532ProtocolError(f"InAutoPoll needs PollNr, Period and a type: {len(params)} bytes given")
    try:
        return AutoPollRequest(params[0], params[1], tuple(params[2:]))
    except ValueError as exc:
        raise Pn532ProtocolError(str(exc)) from None


@dataclass(frozen=True)
class AutoPollTarget:
    """One target of an InAutoPoll answer: its Type, its AutoPollTargetData as sent, and that data decoded
    when the type is a 106 kbps type A one (:data:`AUTOPOLL_TYPE_A`); other types are left undecoded."""

    type: int
    data: bytes
    target_a: TargetTypeA | None = None

    @classmethod
    def of_type_a(cls, type_: int, target: TargetTypeA) -> AutoPollTarget:
        return cls(type_, encode_target_a(target), target)


def parse_in_auto_poll(params: bytes) -> list[AutoPollTarget]:
    """Parse the data of an InAutoPoll answer (after D5 61).

    Layout (UM0701-02 §7.3.13): NbTg (at most 2), then per target Type, AutoPollTargetDataLength and
    that many bytes of TargetData; for a 106 kbps type A target the same target data as InListPassiveTarget
    gives (Tg, SENS_RES, SEL_RES, NFCIDLength, NFCID1 [, ATS]), which must fill its length exactly.
    """
    if not params:
        raise Pn532ProtocolError("InAutoPoll answer is empty (no NbTg byte)")
    count = params[0]
    if count > 2:
        raise Pn532ProtocolError(f"InAutoPoll answer claims {count} targets, the PN532 reports at most 2")
    targets: list[AutoPollTarget] = []
    pos = 1
    for index in range(count):
        if len(params) < pos + 2:
            raise Pn532ProtocolError(f"InAutoPoll answer truncated before the type and length of target {index + 1}")
        type_, length = params[pos], params[pos + 1]
        pos += 2
        if len(params) < pos + length:
            raise Pn532ProtocolError(
                f"InAutoPoll answer truncated: target {index + 1} has {length} bytes of data, "
                f"{len(params) - pos} present"
            )
        data = params[pos : pos + length]
        pos += length
        target_a = None
        if type_ in AUTOPOLL_TYPE_A:
            target_a, end = _parse_target_a(data, 0, index, "InAutoPoll")
            if end != len(data):
                raise Pn532ProtocolError(
                    f"InAutoPoll: target {index + 1} (type 0x{type_:02X}) has {len(data) - end} bytes beyond its data"
                )
        targets.append(AutoPollTarget(type_, bytes(data), target_a))
    if pos != len(params):
        raise Pn532ProtocolError(f"InAutoPoll answer has {len(params) - pos} unexpected trailing bytes")
    return targets


def encode_in_auto_poll(targets: list[AutoPollTarget]) -> bytes:
    """The data of an InAutoPoll answer (inverse of :func:`parse_in_auto_poll`)."""
    out = bytearray([len(targets)])
    for t in targets:
        out += bytes([t.type, len(t.data)]) + t.data
    return bytes(out)


def check_status(command: str, params: bytes) -> None:
    """Raise :class:`Pn532ApplicationError` unless the answer's status byte says success."""
    if not params:
        raise Pn532ProtocolError(f"{command} answer has no status byte")
    if params[0] & 0x3F:
        raise Pn532ApplicationError(f"{command} failed: status 0x{params[0]:02X} ({status_text(params[0])})")
