"""Messages of docs/ioboard-protocol.md §3: numbers, validation of host commands, board messages."""

from micropython import const

from iob import cbor

PROTO_MAJOR = const(1)
PROTO_MINOR = const(1)  # 1.1: the cable lock
FW_VERSION = "1.1.0"

# §3.3 message types
HOST_HELLO = const(1)
KEEPALIVE = const(2)
SET_PWM = const(3)
ALLOW_CONTACTOR = const(4)
REQUEST_STATE = const(5)
CLEAR_FAULTS = const(6)
RESET = const(7)
SET_LOCK = const(8)
BOARD_HELLO = const(16)
STATE = const(17)
ACK = const(18)
NACK = const(19)
LOG = const(20)

# SET_PWM modes
X1 = const(0)
PWM = const(1)
F = const(2)

# §3.6 fault bits
RCD_TRIP = const(0x01)
OVERTEMPERATURE = const(0x02)
DIODE_FAILURE = const(0x04)
PILOT_SHORT = const(0x08)
HOST_TIMEOUT = const(0x10)
MCU_WATCHDOG = const(0x20)
SELFTEST_FAILED = const(0x40)
LIVE_FAULTS = const(0x0E)  # OVERTEMPERATURE | DIODE_FAILURE | PILOT_SHORT
BLOCKING_FAULTS = const(0x5F)  # all but MCU_WATCHDOG

# §3.7 capabilities
CAP_RCD = const(0x01)
CAP_TEMPERATURE = const(0x02)
CAP_MIRROR_CONTACT = const(0x04)
CAP_DIODE_CHECK = const(0x08)
CAP_VENTILATION = const(0x10)
CAP_CABLE_LOCK = const(0x20)

# STATE key 9: the cable lock's feedback
LOCK_UNLOCKED = const(0)
LOCK_LOCKED = const(1)
LOCK_MOVING = const(2)
LOCK_FAULT = const(3)

# §3.8 NACK reasons
OTHER = const(0)
UNKNOWN_TYPE = const(1)
BAD_MESSAGE = const(2)
OUT_OF_RANGE = const(3)
NOT_LINKED = const(4)
VERSION_MISMATCH = const(5)
FAULT_ACTIVE = const(7)
UNSUPPORTED = const(8)

# §3.9 reset reasons
RESET_OTHER = const(0)
RESET_POWER_ON = const(1)
RESET_HOST_REQUEST = const(2)
RESET_WATCHDOG = const(3)
RESET_BROWNOUT = const(4)

# §4 levels of LOG
DEBUG = const(0)
INFO = const(1)
WARNING = const(2)
ERROR = const(3)

DUTY_MIN = const(30)
DUTY_MAX = const(970)
MAX_TEXT = const(120)
_U8 = const(255)
_U32 = const(0xFFFFFFFF)

# pilot codes (STATE key 2)
PILOT_A = const(0)
PILOT_B = const(1)
PILOT_C = const(2)
PILOT_D = const(3)
PILOT_E = const(4)
PILOT_F = const(5)


class Invalid(Exception):
    """A payload that is not a valid command; ``seq`` is None when it could not be read."""

    def __init__(self, reason, text, seq):
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.seq = seq


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _uint(m, key, hi):
    if key not in m:
        raise Invalid(BAD_MESSAGE, "missing key %d" % key, None)
    v = m[key]
    if not _is_int(v):
        raise Invalid(BAD_MESSAGE, "key %d must be an integer" % key, None)
    if v < 0 or v > hi:
        raise Invalid(OUT_OF_RANGE, "key %d=%d outside 0..%d" % (key, v, hi), None)
    return v


def _bool(m, key):
    if key not in m:
        raise Invalid(BAD_MESSAGE, "missing key %d" % key, None)
    if not isinstance(m[key], bool):
        raise Invalid(BAD_MESSAGE, "key %d must be a boolean" % key, None)
    return m[key]


def parse_command(payload):
    """(type, seq, arguments) of a host command, or raises :class:`Invalid` (§3.5)."""
    m, problem = cbor.decode_map(payload)
    seq = m.get(1)
    if not (_is_int(seq) and 0 <= seq <= _U8):
        seq = None
    if problem is not None:
        raise Invalid(BAD_MESSAGE, problem, seq)
    if seq is None:
        raise Invalid(BAD_MESSAGE, "missing or invalid seq", None)
    kind = m.get(0)
    if not _is_int(kind):
        raise Invalid(BAD_MESSAGE, "missing or invalid type", seq)
    try:
        return kind, seq, _arguments(kind, m)
    except Invalid as exc:
        exc.seq = seq
        raise


def _arguments(kind, m):
    if kind == HOST_HELLO:
        major = _uint(m, 2, _U8)
        minor = _uint(m, 3, _U8)
        if 4 in m:
            name = m[4]
            if not isinstance(name, str):
                raise Invalid(BAD_MESSAGE, "key 4 must be a text string", None)
            if len(name.encode()) > 32:
                raise Invalid(OUT_OF_RANGE, "host_name longer than 32 bytes", None)
        return (major, minor)
    if kind in (KEEPALIVE, REQUEST_STATE, RESET):
        return None
    if kind == SET_PWM:
        mode = _uint(m, 2, _U32)
        if mode > F:
            raise Invalid(OUT_OF_RANGE, "mode %d is not 0, 1 or 2" % mode, None)
        if mode != PWM:
            return (mode, 0)  # a duty with X1 or F is ignored (§3.4)
        duty = _uint(m, 3, _U32)
        if not DUTY_MIN <= duty <= DUTY_MAX:
            raise Invalid(OUT_OF_RANGE, "duty %d outside %d..%d" % (duty, DUTY_MIN, DUTY_MAX), None)
        return (mode, duty)
    if kind in (ALLOW_CONTACTOR, SET_LOCK):
        return _bool(m, 2)
    if kind == CLEAR_FAULTS:
        return _uint(m, 2, _U32)
    raise Invalid(UNKNOWN_TYPE, "type %d is not a host command" % kind, None)


def _clip(text):
    raw = text.encode()
    if len(raw) <= MAX_TEXT:
        return text
    raw = raw[:MAX_TEXT]
    while raw:  # do not cut a UTF-8 sequence in half
        try:
            return raw.decode()
        except UnicodeError:
            raw = raw[:-1]
    return ""


def board_hello(seq, hw_revision, capabilities, keepalive_ms, report_ms, reset_reason):
    return cbor.encode_map(((0, BOARD_HELLO), (1, seq), (2, PROTO_MAJOR), (3, PROTO_MINOR), (4, FW_VERSION),
                            (5, hw_revision), (6, capabilities), (7, keepalive_ms), (8, report_ms),
                            (9, reset_reason)))


def state(seq, pilot, mode, duty, coil, mirror, faults, temperature, lock=None):
    items = [(0, STATE), (1, seq), (2, pilot), (3, mode)]
    if mode == PWM:
        items.append((4, duty))
    items.append((5, coil))
    items.append((6, mirror))
    items.append((7, faults))
    if temperature is not None:
        items.append((8, temperature))
    if lock is not None:
        items.append((9, lock))
    return cbor.encode_map(items)


def ack(seq, ack_seq):
    return cbor.encode_map(((0, ACK), (1, seq), (2, ack_seq)))


def nack(seq, ack_seq, reason, text):
    if text:
        return cbor.encode_map(((0, NACK), (1, seq), (2, ack_seq), (3, reason), (4, _clip(text))))
    return cbor.encode_map(((0, NACK), (1, seq), (2, ack_seq), (3, reason)))


def log(seq, level, text):
    return cbor.encode_map(((0, LOG), (1, seq), (2, level), (3, _clip(text))))
