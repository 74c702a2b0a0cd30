"""I/O board codec and messages: known vectors, error cases and property tests (pure, no I/O)."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.interfaces import LockState, PilotState
from hal.ioboard.codec import (
    CRC_CHECK_VALUE,
    CRC_RESIDUE,
    MAX_ENCODED_LEN,
    MAX_PAYLOAD_LEN,
    MAX_WIRE_LEN,
    CobsError,
    CodecError,
    CrcError,
    FrameDecoder,
    FrameTooLongError,
    FrameTooShortError,
    cobs_decode,
    cobs_encode,
    crc32,
    decode_frame,
    encode_frame,
)
from hal.ioboard.messages import (
    Ack,
    AllowContactor,
    BoardHello,
    Capability,
    ClearFaults,
    FaultBit,
    HostHello,
    Keepalive,
    Log,
    LogLevel,
    Message,
    MessageError,
    Nack,
    NackReason,
    PwmMode,
    RequestState,
    Reset,
    ResetReason,
    SetLock,
    SetPwm,
    StateReport,
    decode_message,
    encode_message,
)

# --- COBS ------------------------------------------------------------------------------------------

# The encoding examples of the COBS description (Cheshire & Baker; the Wikipedia article's table).
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (bytes.fromhex("11220033"), bytes.fromhex("0311220233")),
    (bytes.fromhex("11223344"), bytes.fromhex("0511223344")),
    (bytes.fromhex("11000000"), bytes.fromhex("0211010101")),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_VECTORS)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_decode_rejects_truncated_block_and_embedded_zero() -> None:
    with pytest.raises(CobsError, match="truncated"):
        cobs_decode(b"\x05\x11\x22")
    with pytest.raises(CobsError, match="0x00"):
        cobs_decode(b"\x03\x11\x00")


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + 1 + len(data) // 254


# --- CRC and frames -----------------------------------------------------------------------------------


def test_crc_catalogue_check_value_and_residue() -> None:
    assert crc32(b"123456789") == CRC_CHECK_VALUE == 0xCBF43926
    payload = b"any payload"
    assert crc32(payload + crc32(payload).to_bytes(4, "little")) == CRC_RESIDUE


def test_frame_layout_is_cobs_of_payload_and_little_endian_crc() -> None:
    payload = bytes.fromhex("a20002010a")  # {0: 2, 1: 10}: a KEEPALIVE with seq 10
    frame = encode_frame(payload)
    assert frame[-1] == 0 and 0 not in frame[:-1]
    raw = cobs_decode(frame[:-1])
    assert raw[:-4] == payload
    assert raw[-4:] == crc32(payload).to_bytes(4, "little")
    assert decode_frame(frame[:-1]) == payload


def test_frame_limits() -> None:
    biggest = bytes([0x41]) * MAX_PAYLOAD_LEN
    frame = encode_frame(biggest)
    assert len(frame) == MAX_WIRE_LEN == MAX_ENCODED_LEN + 1 == 256
    with pytest.raises(FrameTooLongError):
        encode_frame(biggest + b"A")
    with pytest.raises(FrameTooShortError):
        encode_frame(b"")
    with pytest.raises(FrameTooShortError):
        decode_frame(cobs_encode(b"\x01\x02\x03"))
    with pytest.raises(FrameTooLongError):
        decode_frame(b"\x01" * (MAX_ENCODED_LEN + 1))


def test_frame_corruption_is_a_crc_error() -> None:
    frame = bytearray(encode_frame(b"\xa2\x00\x02\x01\x00"))
    frame[1] ^= 0x10  # a data byte, not a COBS code byte
    with pytest.raises(CrcError, match="CRC mismatch"):
        decode_frame(bytes(frame[:-1]))


@given(st.binary(min_size=1, max_size=MAX_PAYLOAD_LEN))
def test_frame_round_trip(payload: bytes) -> None:
    frame = encode_frame(payload)
    assert 0 not in frame[:-1]
    assert len(frame) <= MAX_WIRE_LEN
    assert decode_frame(frame[:-1]) == payload


# --- FrameDecoder ---------------------------------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_decoder_counts_each_kind_of_bad_frame_and_recovers() -> None:
    good = encode_frame(b"\xa2\x00\x02\x01\x07")
    corrupt = bytearray(good)
    corrupt[3] ^= 0x01
    stream = (b"\x00" + bytes(corrupt)  # CRC error
              + b"\x05\x11\x22\x00"  # truncated COBS block
              + b"\x02\x11\x00"  # too short for a CRC
              + b"\x01" * 400 + b"\x00"  # oversized
              + b"\x00\x00"  # idle fill: ignored, not counted
              + good)
    dec = FrameDecoder()
    assert dec.feed(stream) == [b"\xa2\x00\x02\x01\x07"]
    s = dec.stats
    assert (s.crc_errors, s.cobs_errors, s.too_short, s.oversized, s.frames) == (1, 1, 1, 1, 1)
    assert s.dropped == 4


def test_decoder_handles_byte_by_byte_feed() -> None:
    frames = [encode_frame(bytes([i + 1]) * (i * 20 + 1)) for i in range(5)]
    dec = FrameDecoder()
    out: list[bytes] = []
    for byte in b"".join(frames):
        out += dec.feed(bytes([byte]))
    assert out == [bytes([i + 1]) * (i * 20 + 1) for i in range(5)]


def _intact_payloads(stream: bytes) -> set[bytes]:
    """Payloads of every delimited segment of ``stream`` that decodes with a valid CRC."""
    found = set()
    for segment in stream.split(b"\x00"):
        try:
            raw = cobs_decode(segment)
        except CodecError:
            continue
        if len(raw) >= 5 and len(segment) <= MAX_ENCODED_LEN \
                and crc32(raw[:-4]).to_bytes(4, "little") == raw[-4:]:
            found.add(raw[:-4])
    return found


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_decoder_never_raises_on_garbage_and_yields_only_crc_valid_frames(
        garbage: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    out: list[bytes] = []
    for chunk in _chunks(garbage, cuts):
        out += dec.feed(chunk)
    intact = _intact_payloads(garbage)
    assert all(p in intact for p in out)
    assert dec.stats.frames == len(out)


@settings(max_examples=200)
@given(st.binary(max_size=600), st.binary(min_size=1, max_size=MAX_PAYLOAD_LEN),
       st.lists(st.integers(min_value=0, max_value=1200), max_size=20))
def test_good_frame_after_garbage_is_recovered(garbage: bytes, payload: bytes, cuts: list[int]) -> None:
    stream = garbage + b"\x00" + encode_frame(payload)  # a sender's leading delimiter ends the garbage
    dec = FrameDecoder()
    out: list[bytes] = []
    for chunk in _chunks(stream, cuts):
        out += dec.feed(chunk)
    assert out and out[-1] == payload


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=300) | st.binary(min_size=1, max_size=MAX_PAYLOAD_LEN).map(lambda p: (p,)),
                max_size=12),
       st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_frames_interleaved_with_garbage_are_all_recovered(pieces: list[bytes | tuple[bytes]],
                                                           cuts: list[int]) -> None:
    sent = [p[0] for p in pieces if isinstance(p, tuple)]
    stream = b"".join(b"\x00" + encode_frame(p[0]) if isinstance(p, tuple) else p for p in pieces)
    dec = FrameDecoder()
    out: list[bytes] = []
    for chunk in _chunks(stream, cuts):
        out += dec.feed(chunk)
    intact = _intact_payloads(stream)
    assert all(p in intact for p in out)
    remaining = iter(out)
    assert all(any(p == o for o in remaining) for p in sent)  # every sent frame, in order


# --- messages -----------------------------------------------------------------------------------------

ALL_MESSAGES: list[Message] = [
    HostHello(1, 0, "evse-agent"),
    Keepalive(),
    SetPwm(PwmMode.X1),
    SetPwm(PwmMode.F),
    SetPwm(PwmMode.PWM, 267),
    AllowContactor(True),
    AllowContactor(False),
    RequestState(),
    ClearFaults(FaultBit.RCD_TRIP | FaultBit.HOST_TIMEOUT),
    Reset(),
    SetLock(True),
    SetLock(False),
    BoardHello(1, 0, "1.4.2", "B", Capability.RCD | Capability.MIRROR_CONTACT, 1000, 500, ResetReason.POWER_ON),
    BoardHello(1, 1, "1.1.0", "B", Capability.RCD | Capability.CABLE_LOCK, 1000, 500, ResetReason.POWER_ON),
    StateReport(PilotState.C, PwmMode.PWM, 267, True, True, FaultBit(0), 312),
    StateReport(PilotState.C, PwmMode.PWM, 267, True, True, FaultBit(0), 312, LockState.LOCKED),
    StateReport(PilotState.B, PwmMode.X1, None, False, False, FaultBit(0), None, LockState.FAULT),
    StateReport(PilotState.A, PwmMode.X1, None, False, False, FaultBit.OVERTEMPERATURE, None),
    Ack(255),
    Nack(3, NackReason.FAULT_ACTIVE, "blocking faults 0x1"),
    Log(LogLevel.WARNING, "host keepalive timeout after 1003 ms"),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_message_round_trip(msg: Message) -> None:
    payload = encode_message(42, msg)
    assert len(payload) <= MAX_PAYLOAD_LEN
    env = decode_message(payload)
    assert env.seq == 42 and env.message == msg


def test_set_pwm_wire_form() -> None:
    assert cbor2.loads(encode_message(7, SetPwm(PwmMode.PWM, 267))) == {0: 3, 1: 7, 2: 1, 3: 267}
    assert encode_message(7, SetPwm(PwmMode.PWM, 267)).hex() == "a40003010702010319010b"


def test_cable_lock_wire_form() -> None:
    """1.1: SET_LOCK is type 8 with a boolean; the lock is STATE key 9, 0..3, absent without the capability."""
    assert cbor2.loads(encode_message(15, SetLock(True))) == {0: 8, 1: 15, 2: True}
    state = StateReport(PilotState.B, PwmMode.X1, None, False, False, FaultBit(0), None, LockState.MOVING)
    assert cbor2.loads(encode_message(3, state))[9] == 2
    assert 9 not in cbor2.loads(encode_message(3, StateReport(PilotState.B, PwmMode.X1, None, False, False)))
    assert Capability.CABLE_LOCK == 0x20 and NackReason.UNSUPPORTED == 8


def test_set_pwm_validation() -> None:
    with pytest.raises(MessageError):
        SetPwm(PwmMode.PWM)
    with pytest.raises(MessageError):
        SetPwm(PwmMode.X1, 100)
    with pytest.raises(MessageError) as out_of_range:
        SetPwm(PwmMode.PWM, 980)
    assert out_of_range.value.reason is NackReason.OUT_OF_RANGE
    assert SetPwm.percent(26.67) == SetPwm(PwmMode.PWM, 267)


@pytest.mark.parametrize(("obj", "reason", "seq"), [
    ({0: 3, 1: 5, 2: 1}, NackReason.BAD_MESSAGE, 5),  # PWM without duty
    ({0: 3, 1: 5, 2: 1, 3: 2000}, NackReason.OUT_OF_RANGE, 5),
    ({0: 3, 1: 5, 2: 9}, NackReason.OUT_OF_RANGE, 5),  # no such mode
    ({0: 4, 1: 6, 2: 1}, NackReason.BAD_MESSAGE, 6),  # integer where a boolean is required
    ({0: 8, 1: 6}, NackReason.BAD_MESSAGE, 6),  # SET_LOCK without `locked`
    ({0: 8, 1: 6, 2: "yes"}, NackReason.BAD_MESSAGE, 6),
    ({0: 17, 1: 6, 2: 1, 3: 0, 5: False, 6: False, 7: 0, 9: 4}, NackReason.OUT_OF_RANGE, 6),  # no lock code 4
    ({0: 99, 1: 7}, NackReason.UNKNOWN_TYPE, 7),
    ({0: 2}, NackReason.BAD_MESSAGE, None),  # no seq
    ({0: 2, 1: 300}, NackReason.BAD_MESSAGE, None),  # seq out of range
    ({1: 8}, NackReason.BAD_MESSAGE, 8),  # no type
    ([1, 2, 3], NackReason.BAD_MESSAGE, None),
])
def test_invalid_messages_say_why_and_keep_the_seq(obj: object, reason: NackReason, seq: int | None) -> None:
    with pytest.raises(MessageError) as err:
        decode_message(cbor2.dumps(obj))
    assert err.value.reason is reason
    assert err.value.seq == seq
    assert str(err.value)


def test_trailing_bytes_and_non_cbor_are_rejected() -> None:
    with pytest.raises(MessageError, match="after the CBOR map"):
        decode_message(encode_message(1, Keepalive()) + b"\x00")
    with pytest.raises(MessageError, match="not CBOR"):
        decode_message(b"\xff\xff")


def test_unknown_keys_are_ignored_and_unknown_reasons_tolerated() -> None:
    env = decode_message(cbor2.dumps({0: 2, 1: 9, 23: "future"}))
    assert env.message == Keepalive()
    env = decode_message(cbor2.dumps({0: 19, 1: 9, 2: 4, 3: 200}))
    assert env.message == Nack(4, NackReason.OTHER)


@given(st.binary(max_size=MAX_PAYLOAD_LEN))
def test_decode_message_raises_only_message_error(payload: bytes) -> None:
    _decodes_cleanly_or_says_why(payload)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
                    | st.binary(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.integers(min_value=-2, max_value=30), inner, max_size=6),
                    max_leaves=12))
def test_decode_message_of_arbitrary_cbor_raises_only_message_error(obj: object) -> None:
    _decodes_cleanly_or_says_why(cbor2.dumps(obj))


def _decodes_cleanly_or_says_why(payload: bytes) -> None:
    """Anything but MessageError propagates and fails the test; what decodes must re-encode."""
    try:
        env = decode_message(payload)
    except MessageError as exc:
        assert str(exc)
        return
    assert decode_message(encode_message(env.seq, env.message)) == env


# --- the spec's example frames ---------------------------------------------------------------------------


def _spec_examples() -> list[dict[str, str]]:
    """The ``diag/payload/crc/wire`` blocks of docs/ioboard-protocol.md §8, continuation lines joined."""
    text = (Path(__file__).parent.parent / "docs" / "ioboard-protocol.md").read_text()
    examples = []
    for block in re.findall(r"```\n(diag .*?)```", text, flags=re.S):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            head = line[:9].strip()
            if head:
                key = head
                fields[key] = line[9:].strip()
            else:
                fields[key] += " " + line.strip()
        examples.append(fields)
    return examples


def test_spec_example_frames_match_the_codec() -> None:
    examples = _spec_examples()
    assert len(examples) == 11
    for ex in examples:
        payload = bytes.fromhex(ex["payload"].split("(")[0])
        crc_hex = ex["crc"].split()[0]
        assert crc32(payload) == int(crc_hex, 16), ex["diag"]
        assert encode_frame(payload) == bytes.fromhex(ex["wire"]), ex["diag"]
        env = decode_message(payload)
        assert decode_message(encode_message(env.seq, env.message)) == env
        assert cbor2.loads(payload) == _diag_to_python(ex["diag"])


def _diag_to_python(diag: str) -> object:
    """The subset of CBOR diagnostic notation the spec uses: maps, ints, strings, true/false."""
    return ast.literal_eval(diag.replace("true", "True").replace("false", "False"))
