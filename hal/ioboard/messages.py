"""I/O board messages: typed dataclasses and their CBOR map encoding (pure, no I/O).

Every payload is one CBOR map with small unsigned-integer keys; key 0 is the message type and
key 1 the sender's sequence number, the other keys depend on the type (docs/ioboard-protocol.md §3
is the reference, this module follows it). Keys 0..23 encode in a single byte, which keeps the
largest message well below the 250-byte payload limit and easy to parse on a microcontroller.

Decoding validates types and ranges strictly and raises :class:`MessageError` carrying the
sequence number when it could be read, so the board can answer a bad command with a NACK.
Unknown keys are ignored: a newer minor version may add optional keys.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, TypeGuard, TypeVar

import cbor2

from hal.bounded_repr import bounded_repr
from hal.interfaces import LockState, PilotState
from hal.ioboard.codec import MAX_PAYLOAD_LEN

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 1  # 1.1: cable lock (SET_LOCK, STATE key 9, capability CABLE_LOCK)

SEQ_MODULO = 256  # sequence numbers are 0..255 and wrap

# Common keys
K_TYPE = 0
K_SEQ = 1

DUTY_MIN_PERMILLE = 30  # 3 %: below, IEC 61851-1 says "no charging allowed"
DUTY_MAX_PERMILLE = 970  # 97 %
MAX_VERSION_LEN = 32
MAX_HOST_NAME_LEN = 32
MAX_HW_REVISION_LEN = 16
MAX_TEXT_LEN = 120  # UTF-8 bytes of a LOG or NACK text
KEEPALIVE_TIMEOUT_RANGE_MS = (100, 10_000)
REPORT_INTERVAL_RANGE_MS = (10, 500)
TEMPERATURE_RANGE_DC = (-1000, 2000)  # -100.0 .. 200.0 degC in 0.1 degC


class MsgType(IntEnum):
    """Key 0. Host->board types are 1..15, board->host types 16..31."""

    HOST_HELLO = 1
    KEEPALIVE = 2
    SET_PWM = 3
    ALLOW_CONTACTOR = 4
    REQUEST_STATE = 5
    CLEAR_FAULTS = 6
    RESET = 7
    SET_LOCK = 8  # 1.1
    BOARD_HELLO = 16
    STATE = 17
    ACK = 18
    NACK = 19
    LOG = 20


class PwmMode(IntEnum):
    """What the pilot generator drives (IEC 61851-1 names)."""

    X1 = 0  # steady +12 V, no PWM: no current offered
    PWM = 1  # 1 kHz +-12 V PWM at duty_permille
    F = 2  # steady -12 V: EVSE not available


class FaultBit(IntFlag):
    """Board fault bits (STATE key 7). Bits not listed here are reserved and reported as unknown."""

    RCD_TRIP = 1 << 0  # residual current detected (latched)
    OVERTEMPERATURE = 1 << 1  # board or connector over temperature (live)
    DIODE_FAILURE = 1 << 2  # EV diode check failed during PWM (live)
    PILOT_SHORT = 1 << 3  # pilot shorted to PE, state E (live)
    HOST_TIMEOUT = 1 << 4  # the host keepalive watchdog tripped (latched)
    MCU_WATCHDOG = 1 << 5  # the board restarted from its own hardware watchdog (latched)
    SELFTEST_FAILED = 1 << 6  # power-on self test (e.g. RCD test) failed (latched)


NO_FAULTS = FaultBit(0)
LATCHED_FAULTS = FaultBit.RCD_TRIP | FaultBit.HOST_TIMEOUT | FaultBit.MCU_WATCHDOG | FaultBit.SELFTEST_FAILED
# Faults that keep the contactor open; MCU_WATCHDOG is information only.
BLOCKING_FAULTS = (FaultBit.RCD_TRIP | FaultBit.OVERTEMPERATURE | FaultBit.DIODE_FAILURE | FaultBit.PILOT_SHORT
                   | FaultBit.HOST_TIMEOUT | FaultBit.SELFTEST_FAILED)


class Capability(IntFlag):
    """BOARD_HELLO key 6: what the board has."""

    RCD = 1 << 0  # residual current monitoring
    TEMPERATURE = 1 << 1  # temperature sensor (STATE key 8 present)
    MIRROR_CONTACT = 1 << 2  # contactor auxiliary (mirror) contact wired
    DIODE_CHECK = 1 << 3  # checks the EV diode on the negative PWM half
    VENTILATION = 1 << 4  # can supply ventilation (state D allowed)
    CABLE_LOCK = 1 << 5  # 1.1: a cable lock actuator with a position feedback (SET_LOCK, STATE key 9)


class NackReason(IntEnum):
    """NACK key 3. Unknown values decode as OTHER."""

    OTHER = 0
    UNKNOWN_TYPE = 1
    BAD_MESSAGE = 2  # missing key, wrong CBOR type, not a map, trailing bytes
    OUT_OF_RANGE = 3
    NOT_LINKED = 4  # command needs a HOST_HELLO first
    VERSION_MISMATCH = 5  # HOST_HELLO with a major version the board does not speak
    PILOT_STATE = 6  # reserved: a 1.0 draft refused ALLOW_CONTACTOR outside C/D; not sent by 1.0 boards
    FAULT_ACTIVE = 7  # a blocking fault forbids the command
    UNSUPPORTED = 8  # 1.1: a known command the board has no hardware for (SET_LOCK without CABLE_LOCK)


class ResetReason(IntEnum):
    """BOARD_HELLO key 9. Unknown values decode as OTHER."""

    OTHER = 0
    POWER_ON = 1
    HOST_REQUEST = 2  # RESET command
    MCU_WATCHDOG = 3
    BROWNOUT = 4


class LogLevel(IntEnum):
    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


E = TypeVar("E", bound=IntEnum)

PILOT_CODES: dict[int, PilotState] = dict(enumerate(PilotState))  # 0=A .. 5=F
PILOT_VALUES: dict[PilotState, int] = {s: i for i, s in PILOT_CODES.items()}
LOCK_CODES: dict[int, LockState] = {0: LockState.UNLOCKED, 1: LockState.LOCKED, 2: LockState.MOVING,
                                    3: LockState.FAULT}  # STATE key 9
LOCK_VALUES: dict[LockState, int] = {s: i for i, s in LOCK_CODES.items()}


class MessageError(ValueError):
    """A payload that is not a valid message. ``seq`` is set when the sender's seq was readable."""

    def __init__(self, message: str, reason: NackReason = NackReason.BAD_MESSAGE, seq: int | None = None,
                 msg_type: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.seq = seq
        self.msg_type = msg_type


# --- messages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostHello:
    """Host -> board: start (or restart) a link session; the board answers ACK then BOARD_HELLO."""

    proto_major: int = PROTOCOL_MAJOR
    proto_minor: int = PROTOCOL_MINOR
    host_name: str = ""

    def __post_init__(self) -> None:
        _check_uint("proto_major", self.proto_major, 0, 255)
        _check_uint("proto_minor", self.proto_minor, 0, 255)
        _check_str("host_name", self.host_name, MAX_HOST_NAME_LEN)


@dataclass(frozen=True)
class Keepalive:
    """Host -> board: feeds the board's host watchdog (any valid host frame does)."""


@dataclass(frozen=True)
class SetPwm:
    """Host -> board: pilot output. ``duty_permille`` (0.1 % units) only with :attr:`PwmMode.PWM`."""

    mode: PwmMode
    duty_permille: int | None = None

    def __post_init__(self) -> None:
        if self.mode is PwmMode.PWM:
            if self.duty_permille is None:
                raise MessageError("SET_PWM mode PWM needs duty_permille")
            _check_uint("duty_permille", self.duty_permille, DUTY_MIN_PERMILLE, DUTY_MAX_PERMILLE)
        elif self.duty_permille is not None:
            raise MessageError(f"SET_PWM mode {self.mode.name} takes no duty")

    @classmethod
    def percent(cls, duty_percent: float) -> SetPwm:
        return cls(PwmMode.PWM, round(duty_percent * 10))


@dataclass(frozen=True)
class AllowContactor:
    """Host -> board: grant (``on``) or withdraw the permission to energize. With it the board
    closes the contactor by itself while the PWM runs, the pilot is C/D and no blocking fault is active
    (state C2/D2, spec B7)."""

    on: bool


@dataclass(frozen=True)
class SetLock:
    """Host -> board (1.1): drive the cable lock to ``locked``; the board reports the feedback in STATE
    key 9 (MOVING, then LOCKED/UNLOCKED, or FAULT when it did not get there within T_lock)."""

    locked: bool


@dataclass(frozen=True)
class RequestState:
    """Host -> board: send a STATE report now (after the ACK)."""


@dataclass(frozen=True)
class ClearFaults:
    """Host -> board: clear the latched faults in ``mask`` whose cause has gone."""

    mask: FaultBit = LATCHED_FAULTS


@dataclass(frozen=True)
class Reset:
    """Host -> board: restart the microcontroller (ACK first, BOARD_HELLO after the restart)."""


@dataclass(frozen=True)
class BoardHello:
    """Board -> host: identity, protocol version and link timing; sent at boot and on HOST_HELLO."""

    proto_major: int
    proto_minor: int
    firmware_version: str
    hardware_revision: str
    capabilities: Capability
    keepalive_timeout_ms: int
    report_interval_ms: int
    reset_reason: ResetReason = ResetReason.OTHER

    def __post_init__(self) -> None:
        _check_uint("proto_major", self.proto_major, 0, 255)
        _check_uint("proto_minor", self.proto_minor, 0, 255)
        _check_str("firmware_version", self.firmware_version, MAX_VERSION_LEN)
        _check_str("hardware_revision", self.hardware_revision, MAX_HW_REVISION_LEN)
        _check_uint("capabilities", int(self.capabilities), 0, 0xFFFFFFFF)
        _check_uint("keepalive_timeout_ms", self.keepalive_timeout_ms, *KEEPALIVE_TIMEOUT_RANGE_MS)
        _check_uint("report_interval_ms", self.report_interval_ms, *REPORT_INTERVAL_RANGE_MS)


@dataclass(frozen=True)
class StateReport:
    """Board -> host: what the board senses and drives now; on every change and periodically."""

    pilot: PilotState
    pwm_mode: PwmMode
    duty_permille: int | None
    contactor_cmd: bool  # coil driven (the board's own decision, not just the host's permission)
    contactor_fb: bool  # mirror contact says closed
    faults: FaultBit = NO_FAULTS
    temperature_dc: int | None = None  # 0.1 degC, absent without sensor
    lock: LockState | None = None  # 1.1: the cable lock's feedback, absent without CABLE_LOCK

    def __post_init__(self) -> None:
        if self.pwm_mode is PwmMode.PWM:
            if self.duty_permille is None:
                raise MessageError("STATE with PWM needs duty_permille")
            _check_uint("duty_permille", self.duty_permille, 0, 1000)
        elif self.duty_permille is not None:
            raise MessageError(f"STATE with mode {self.pwm_mode.name} takes no duty")
        _check_uint("faults", int(self.faults), 0, 0xFFFFFFFF)
        if self.temperature_dc is not None:
            _check_int("temperature_dc", self.temperature_dc, *TEMPERATURE_RANGE_DC)

    @property
    def temperature_c(self) -> float | None:
        return None if self.temperature_dc is None else self.temperature_dc / 10.0


@dataclass(frozen=True)
class Ack:
    """Board -> host: the command with sequence number ``ack_seq`` was accepted and carried out."""

    ack_seq: int

    def __post_init__(self) -> None:
        _check_uint("ack_seq", self.ack_seq, 0, SEQ_MODULO - 1)


@dataclass(frozen=True)
class Nack:
    """Board -> host: the command ``ack_seq`` was refused (and had no effect)."""

    ack_seq: int
    reason: NackReason
    text: str = ""

    def __post_init__(self) -> None:
        _check_uint("ack_seq", self.ack_seq, 0, SEQ_MODULO - 1)
        _check_text("text", self.text)


@dataclass(frozen=True)
class Log:
    """Board -> host: a diagnostic line for the host's log."""

    level: LogLevel
    text: str

    def __post_init__(self) -> None:
        _check_text("text", self.text)


HostMessage = HostHello | Keepalive | SetPwm | AllowContactor | RequestState | ClearFaults | Reset | SetLock
BoardMessage = BoardHello | StateReport | Ack | Nack | Log
Message = HostMessage | BoardMessage


@dataclass(frozen=True)
class Envelope:
    """A decoded payload: the sender's sequence number and the message."""

    seq: int
    message: Message


# --- validation helpers -----------------------------------------------------------------------------


def _check_uint(name: str, value: object, lo: int, hi: int) -> None:
    _check_int(name, value, lo, hi)


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise MessageError(f"{name}={bounded_repr(value)} outside {lo}..{hi}", NackReason.OUT_OF_RANGE)


def _check_str(name: str, value: object, max_chars: int) -> None:
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a text string, got {type(value).__name__}")
    if len(value.encode()) > max_chars:
        raise MessageError(f"{name} longer than {max_chars} bytes", NackReason.OUT_OF_RANGE)


def _check_text(name: str, value: object) -> None:
    _check_str(name, value, MAX_TEXT_LEN)


# --- encoding ----------------------------------------------------------------------------------------


def _body(msg: Message) -> tuple[MsgType, dict[int, Any]]:
    match msg:
        case HostHello():
            return MsgType.HOST_HELLO, {2: msg.proto_major, 3: msg.proto_minor, 4: msg.host_name}
        case Keepalive():
            return MsgType.KEEPALIVE, {}
        case SetPwm():
            body: dict[int, Any] = {2: int(msg.mode)}
            if msg.duty_permille is not None:
                body[3] = msg.duty_permille
            return MsgType.SET_PWM, body
        case AllowContactor():
            return MsgType.ALLOW_CONTACTOR, {2: msg.on}
        case RequestState():
            return MsgType.REQUEST_STATE, {}
        case ClearFaults():
            return MsgType.CLEAR_FAULTS, {2: int(msg.mask)}
        case Reset():
            return MsgType.RESET, {}
        case SetLock():
            return MsgType.SET_LOCK, {2: msg.locked}
        case BoardHello():
            return MsgType.BOARD_HELLO, {
                2: msg.proto_major, 3: msg.proto_minor, 4: msg.firmware_version, 5: msg.hardware_revision,
                6: int(msg.capabilities), 7: msg.keepalive_timeout_ms, 8: msg.report_interval_ms,
                9: int(msg.reset_reason),
            }
        case StateReport():
            body = {2: PILOT_VALUES[msg.pilot], 3: int(msg.pwm_mode)}
            if msg.duty_permille is not None:
                body[4] = msg.duty_permille
            body |= {5: msg.contactor_cmd, 6: msg.contactor_fb, 7: int(msg.faults)}
            if msg.temperature_dc is not None:
                body[8] = msg.temperature_dc
            if msg.lock is not None:
                body[9] = LOCK_VALUES[msg.lock]
            return MsgType.STATE, body
        case Ack():
            return MsgType.ACK, {2: msg.ack_seq}
        case Nack():
            body = {2: msg.ack_seq, 3: int(msg.reason)}
            if msg.text:
                body[4] = msg.text
            return MsgType.NACK, body
        case Log():
            return MsgType.LOG, {2: int(msg.level), 3: msg.text}
    raise TypeError(f"not a message: {msg!r}")


def encode_message(seq: int, msg: Message) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1: shortest forms, keys ascending) for ``msg``."""
    _check_uint("seq", seq, 0, SEQ_MODULO - 1)
    msg_type, body = _body(msg)
    return cbor2.dumps({K_TYPE: int(msg_type), K_SEQ: seq, **body}, canonical=True)


# --- decoding ----------------------------------------------------------------------------------------


def decode_message(payload: bytes) -> Envelope:
    """Parse one payload; raises :class:`MessageError` (never anything else) if it is not valid."""
    if not 1 <= len(payload) <= MAX_PAYLOAD_LEN:
        raise MessageError(f"payload of {len(payload)} bytes, expected 1..{MAX_PAYLOAD_LEN}")
    try:
        decoder = cbor2.CBORDecoder(io.BytesIO(payload), max_depth=4, allow_indefinite=False,
                                    allow_duplicate_keys=False)
        obj = decoder.decode()
        consumed = decoder.fp.tell()
    except Exception as exc:  # untrusted bytes into a third-party decoder: any failure is "bad CBOR"
        raise MessageError(f"not CBOR: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"payload is a {type(obj).__name__}, not a map")
    # Only genuine integer keys count: Python equates True and 1.0 with the key 1.
    header = {key: value for key, value in obj.items() if _is_int(key) and key in (K_TYPE, K_SEQ)}
    seq_obj, type_obj = header.get(K_SEQ), header.get(K_TYPE)
    seq = seq_obj if _is_int(seq_obj) and 0 <= seq_obj < SEQ_MODULO else None
    msg_type = type_obj if _is_int(type_obj) else None
    if consumed != len(payload):
        raise MessageError(f"{len(payload) - consumed} bytes after the CBOR map", seq=seq, msg_type=msg_type)
    problem = _type_problem(obj)
    if problem is not None:
        raise MessageError(problem, seq=seq, msg_type=msg_type)
    if seq is None:
        raise MessageError(f"missing or invalid seq (key {K_SEQ}): {bounded_repr(seq_obj)}", msg_type=msg_type)
    if msg_type is None:
        raise MessageError(f"missing or invalid type (key {K_TYPE}): {bounded_repr(type_obj)}", seq=seq)
    try:
        kind = MsgType(msg_type)
    except ValueError:
        raise MessageError(f"unknown message type {msg_type}", NackReason.UNKNOWN_TYPE, seq, msg_type) from None
    try:
        return Envelope(seq, _parse(kind, obj))
    except MessageError as exc:
        raise MessageError(f"{kind.name}: {exc}", exc.reason, seq, msg_type) from None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(m: dict[Any, Any]) -> str | None:
    """§3.1: unsigned integer keys; integer, boolean or text values; nothing else (no floats, tags,
    byte strings, arrays, nested maps, null). Values of unknown keys are checked too: the rule is
    the encoding's, not a key's."""
    for key, value in m.items():
        if not _is_int(key) or key < 0:
            return f"map key {bounded_repr(key)} is not an unsigned integer"
        if not isinstance(value, int | str):  # bool is an int
            return f"key {key}: a {type(value).__name__} is not allowed (integers, booleans and text only)"
    return None


def _parse(kind: MsgType, m: dict[Any, Any]) -> Message:
    match kind:
        case MsgType.HOST_HELLO:
            return HostHello(_uint(m, 2), _uint(m, 3), _text(m, 4, default=""))
        case MsgType.KEEPALIVE:
            return Keepalive()
        case MsgType.SET_PWM:
            mode = _enum(PwmMode, m, 2)
            return SetPwm(mode, _uint(m, 3) if mode is PwmMode.PWM else None)
        case MsgType.ALLOW_CONTACTOR:
            return AllowContactor(_bool(m, 2))
        case MsgType.REQUEST_STATE:
            return RequestState()
        case MsgType.CLEAR_FAULTS:
            return ClearFaults(FaultBit(_uint(m, 2)))
        case MsgType.RESET:
            return Reset()
        case MsgType.SET_LOCK:
            return SetLock(_bool(m, 2))
        case MsgType.BOARD_HELLO:
            return BoardHello(_uint(m, 2), _uint(m, 3), _text(m, 4), _text(m, 5), Capability(_uint(m, 6)),
                              _uint(m, 7), _uint(m, 8), _lenient_enum(ResetReason, m, 9, ResetReason.OTHER))
        case MsgType.STATE:
            pilot = _uint(m, 2)
            if pilot not in PILOT_CODES:
                raise MessageError(f"pilot code {pilot} outside 0..5", NackReason.OUT_OF_RANGE)
            mode = _enum(PwmMode, m, 3)
            duty = _uint(m, 4) if mode is PwmMode.PWM else None
            temp = _int(m, 8) if 8 in m else None
            lock = None
            if 9 in m:
                code = _uint(m, 9)
                if code not in LOCK_CODES:
                    raise MessageError(f"lock code {code} outside 0..3", NackReason.OUT_OF_RANGE)
                lock = LOCK_CODES[code]
            return StateReport(PILOT_CODES[pilot], mode, duty, _bool(m, 5), _bool(m, 6), FaultBit(_uint(m, 7)),
                               temp, lock)
        case MsgType.ACK:
            return Ack(_uint(m, 2))
        case MsgType.NACK:
            return Nack(_uint(m, 2), _lenient_enum(NackReason, m, 3, NackReason.OTHER), _text(m, 4, default=""))
        case MsgType.LOG:
            return Log(_lenient_enum(LogLevel, m, 2, LogLevel.ERROR), _text(m, 3))
    raise MessageError(f"unhandled type {kind}")  # pragma: no cover - every MsgType is matched


def _get(m: dict[Any, Any], key: int) -> object:
    if key not in m:
        raise MessageError(f"missing key {key}")
    return m[key]


def _int(m: dict[Any, Any], key: int) -> int:
    value = _get(m, key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"key {key} must be an integer, got {type(value).__name__}")
    return value


def _uint(m: dict[Any, Any], key: int) -> int:
    value = _int(m, key)
    if not 0 <= value <= 0xFFFFFFFF:
        raise MessageError(f"key {key}={bounded_repr(value)} is not a 32-bit unsigned integer", NackReason.OUT_OF_RANGE)
    return value


def _bool(m: dict[Any, Any], key: int) -> bool:
    value = _get(m, key)
    if not isinstance(value, bool):
        raise MessageError(f"key {key} must be a boolean, got {type(value).__name__}")
    return value


def _text(m: dict[Any, Any], key: int, default: str | None = None) -> str:
    if key not in m and default is not None:
        return default
    value = _get(m, key)
    if not isinstance(value, str):
        raise MessageError(f"key {key} must be a text string, got {type(value).__name__}")
    return value


def _enum(cls: type[E], m: dict[Any, Any], key: int) -> E:
    value = _uint(m, key)
    try:
        return cls(value)
    except ValueError:
        raise MessageError(f"key {key}={value} is not a valid {cls.__name__}", NackReason.OUT_OF_RANGE) from None


def _lenient_enum(cls: type[E], m: dict[Any, Any], key: int, default: E) -> E:
    value = _uint(m, key)
    try:
        return cls(value)
    except ValueError:
        return default
