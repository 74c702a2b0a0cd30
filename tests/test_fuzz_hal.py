"""Untrusted bytes never escape the hardware layer's parsers (issue 16).

Every decoder fed from a wire gets random bytes and mutations of valid frames: bit flips, truncation,
insertion, deletion, duplication, length fields changed, and bodies that are garbage behind a
checksum recomputed to pass. Each test checks that only the documented outcome comes out (a decoded
frame or message, or the documented drop / error type) and that the counters move as documented.

Bounded for ``make test`` (300 examples each); ``FUZZ_EXAMPLES=20000`` makes a soak run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from hal.evse_din.codec import (
    STATUS_BLOCK_COUNT,
    EvseDinError,
    active_faults,
    decode_status,
    register_to_amps,
    relay_expected,
)
from hal.evse_din.driver import EvseDinBoard
from hal.interfaces import (
    CardPresented,
    ContactorChanged,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    FaultCode,
    LinkStats,
    MeterReading,
    PilotChanged,
    PilotState,
)
from hal.ioboard.codec import (
    MAX_ENCODED_LEN,
    MAX_PAYLOAD_LEN,
    CobsError,
    CodecError,
    CrcError,
    FrameDecoder,
    FrameTooShortError,
    decode_frame,
    encode_frame,
)
from hal.ioboard.driver import IoBoard
from hal.ioboard.messages import (
    Ack,
    BoardHello,
    BoardMessage,
    Capability,
    FaultBit,
    Log,
    LogLevel,
    Message,
    MessageError,
    Nack,
    NackReason,
    PwmMode,
    ResetReason,
    StateReport,
    decode_message,
    encode_message,
)
from hal.meter_modbus import InvalidMeterValue, ModbusMeter, load_register_map
from hal.modbus_bus import FramerEvents, ModbusBus, RtuResponseFramer
from hal.pn532 import codec as pn532
from hal.pn532.driver import Pn532Reader
from hal.rdm6300.codec import DropReason as RdmDrop
from hal.rdm6300.codec import Rdm6300Decoder
from hal.rdm6300.codec import encode_frame as rdm_frame
from hal.rdm6300.driver import Rdm6300Reader
from hal.registermap import REGISTER_COUNT, Quantity, RegisterDecodeError, decode_value

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# --- mutations -------------------------------------------------------------------------------------------


@st.composite
def _mutate(draw: st.DrawFn, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` after 1..max_ops random edits of the kinds a noisy line or a broken sender produces."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "replace", "duplicate")))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "replace" and buf:
            buf[min(pos, len(buf) - 1)] = draw(st.integers(0, 255))
        elif op == "duplicate":
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 16))]
    return bytes(buf)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return valid.flatmap(lambda b: _mutate(b))


def stream(*pieces: st.SearchStrategy[bytes], max_pieces: int = 12) -> st.SearchStrategy[bytes]:
    """A byte stream made of pieces drawn from any of ``pieces``, back to back."""
    return st.lists(st.one_of(*pieces), max_size=max_pieces).map(b"".join)


def chunked(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` cut into chunks of the given sizes (cycled), as reads from a tty arrive."""
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        yield data[pos : pos + size]
        pos += size
        i += 1


CHUNKS = st.lists(st.integers(1, 40), max_size=8)


# --- I/O board: COBS + CRC-32 framing ---------------------------------------------------------------------

PILOTS = st.sampled_from(list(PilotState))
TEXT = st.text(max_size=30).filter(lambda t: len(t.encode()) <= 120)


@st.composite
def board_messages(draw: st.DrawFn) -> BoardMessage:
    kind = draw(st.sampled_from(("state", "ack", "nack", "hello", "log")))
    if kind == "state":
        mode = draw(st.sampled_from(list(PwmMode)))
        return StateReport(draw(PILOTS), mode, draw(st.integers(0, 1000)) if mode is PwmMode.PWM else None,
                           draw(st.booleans()), draw(st.booleans()), FaultBit(draw(st.integers(0, 0xFFFFFFFF))),
                           draw(st.none() | st.integers(-1000, 2000)))
    if kind == "ack":
        return Ack(draw(st.integers(0, 255)))
    if kind == "nack":
        return Nack(draw(st.integers(0, 255)), draw(st.sampled_from(list(NackReason))), draw(TEXT))
    if kind == "hello":
        return BoardHello(draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.text(max_size=8)),
                          draw(st.text(max_size=4)), Capability(draw(st.integers(0, 31))),
                          draw(st.integers(100, 10_000)), draw(st.integers(10, 500)),
                          draw(st.sampled_from(list(ResetReason))))
    return Log(draw(st.sampled_from(list(LogLevel))), draw(TEXT))


BOARD_PAYLOADS = st.builds(encode_message, st.integers(0, 255), board_messages())
BOARD_FRAMES = BOARD_PAYLOADS.map(encode_frame)
# a body that is garbage, or a mutated valid message, behind a CRC recomputed to pass
GARBAGE_PAYLOADS = st.one_of(st.binary(min_size=1, max_size=MAX_PAYLOAD_LEN), mutated(BOARD_PAYLOADS))
CRC_VALID_GARBAGE = GARBAGE_PAYLOADS.filter(lambda p: 1 <= len(p) <= MAX_PAYLOAD_LEN).map(encode_frame)
IOBOARD_STREAM = stream(BOARD_FRAMES, mutated(BOARD_FRAMES), CRC_VALID_GARBAGE, st.binary(max_size=300),
                        st.just(b"\x00"), st.binary(min_size=256, max_size=600).map(lambda b: b.replace(b"\x00", b"")))


def _ioboard_model(data: bytes) -> tuple[list[bytes], dict[str, int]]:
    """What docs/ioboard-protocol.md §2.4 says a receiver makes of ``data``: the payloads, and one
    count per non-empty run of bytes that a 0x00 ends (the bytes after the last 0x00 are pending)."""
    payloads: list[bytes] = []
    counts = {"crc_errors": 0, "cobs_errors": 0, "too_short": 0, "oversized": 0}
    for segment in data.split(b"\x00")[:-1]:
        if not segment:
            continue  # idle fill
        if len(segment) > MAX_ENCODED_LEN:
            counts["oversized"] += 1
            continue
        try:
            payloads.append(decode_frame(segment))
        except CrcError:
            counts["crc_errors"] += 1
        except CobsError:
            counts["cobs_errors"] += 1
        except FrameTooShortError:
            counts["too_short"] += 1
    return payloads, counts


@FUZZ
@given(IOBOARD_STREAM, CHUNKS)
def test_ioboard_frame_decoder_delivers_or_counts_every_frame(data: bytes, sizes: list[int]) -> None:
    decoder = FrameDecoder()
    payloads = [p for chunk in chunked(data, sizes) for p in decoder.feed(chunk)]
    want_payloads, want_counts = _ioboard_model(data)
    assert payloads == want_payloads
    stats = decoder.stats
    assert {k: getattr(stats, k) for k in want_counts} == want_counts
    assert stats.frames == len(payloads)
    assert all(1 <= len(p) <= MAX_PAYLOAD_LEN for p in payloads)
    assert decoder.last_error is None or isinstance(decoder.last_error, CodecError)


def _message_outcome(payload: bytes) -> Message | MessageError:
    try:
        return decode_message(payload).message
    except MessageError as exc:
        return exc


@FUZZ
@given(st.one_of(GARBAGE_PAYLOADS, st.binary(max_size=600)))
def test_ioboard_garbage_behind_a_valid_crc_is_a_message_error_or_a_valid_message(payload: bytes) -> None:
    try:
        env = decode_message(payload)
    except MessageError as exc:
        assert str(exc)
        assert isinstance(exc.reason, NackReason)
        assert exc.seq is None or 0 <= exc.seq <= 255
        return
    assert 1 <= len(payload) <= MAX_PAYLOAD_LEN
    assert decode_message(encode_message(env.seq, env.message)) == env  # what decodes is a valid message


# Values of every CBOR kind, including the ones §3.1 forbids, for known and unknown keys.
CBOR_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=40), st.binary(max_size=8),
    st.floats(), st.none(), st.lists(st.integers(), max_size=3), st.dictionaries(st.integers(0, 9), st.integers(),
                                                                                 max_size=2),
    st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 30, 37, 258, 55799, 9999]), st.integers(0, 2**40)),
)
CBOR_KEYS: st.SearchStrategy[Any] = st.one_of(st.integers(0, 9), st.integers(0, 9), st.integers(-3, 40),
                                             st.sampled_from([True, False, 0.0, 1.0, "1", b"\x01"]))


@FUZZ
@given(st.dictionaries(CBOR_KEYS, CBOR_VALUES, max_size=10))
def test_ioboard_messages_of_any_key_and_value_type_raise_only_message_error(obj: dict[Any, Any]) -> None:
    try:
        payload = cbor2.dumps(obj)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        assume(False)  # not encodable (e.g. a tag value cbor2 refuses): nothing to feed
        return
    outcome = _message_outcome(payload)
    well_typed = all(type(k) is int and k >= 0 and type(v) in (int, bool, str) for k, v in obj.items())
    if not well_typed:  # §3.1: a float, a tag, a byte string, a container, a non-integer key
        assert isinstance(outcome, MessageError)
    if not isinstance(outcome, MessageError):
        assert obj.get(0) in (1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20) and 0 <= obj[1] <= 255


def test_ioboard_keys_that_python_equates_with_integers_are_not_integer_keys() -> None:
    """{0.0: 18, True: 5, 2.0: 3} is not an ACK of seq 3, though Python finds 1 in it."""
    for obj in ({0.0: 18, 1.0: 5, 2.0: 3}, {0: 18, True: 5, 2: 3}, {False: 18, 1: 5, 2: 3}):
        with pytest.raises(MessageError, match="not an unsigned integer"):
            decode_message(cbor2.dumps(obj))
    with pytest.raises(MessageError, match="float is not allowed") as info:
        decode_message(cbor2.dumps({0: 18, 1: 5, 2: 3, 23: 1.5}))
    assert info.value.seq == 5  # the seq was readable: a board may NACK it


def _board_outcomes(data: bytes) -> tuple[int, int]:
    """(frames_received, frames_dropped) the I/O board driver must count for ``data``."""
    reference = FrameDecoder()
    payloads = reference.feed(data)
    good = sum(1 for p in payloads if isinstance(_message_outcome(p), BoardMessage))
    return good, reference.stats.dropped + len(payloads) - good


@FUZZ
@given(IOBOARD_STREAM, CHUNKS)
def test_ioboard_driver_receive_path_counts_every_bad_frame(data: bytes, sizes: list[int]) -> None:
    board = IoBoard("fuzz-board", "/nonexistent/tty")  # never opened: bytes go in as the port hands them over
    events = board.events.subscribe()
    for chunk in chunked(data, sizes):
        board._feed(chunk)  # the port's on_data callback
    assert (board.stats.frames_received, board.stats.frames_dropped) == _board_outcomes(data)
    while events.pending():
        assert isinstance(events.get_nowait(), PilotChanged | ContactorChanged | DeviceFault | DeviceRecovered)


# --- RDM6300: ASCII hex frames ------------------------------------------------------------------------------

RDM_FRAMES = st.binary(min_size=5, max_size=5).map(lambda b: rdm_frame(b.hex()))
RDM_ALPHABET = st.binary(max_size=40).map(lambda b: bytes(b"\x02\x030123456789ABCDEFabcdefXx"[x % 24] for x in b))


@st.composite
def rdm_recomputed(draw: st.DrawFn) -> bytes:
    """Ten random characters (hex of any case, or not hex) with the checksum recomputed over them when
    they are hex: a garbage body that passes the checksum."""
    digits = draw(st.text("0123456789abcdefABCDEF", min_size=10, max_size=10) | st.text(min_size=10, max_size=10))
    raw = digits.encode("utf-8", "surrogatepass")[:10].ljust(10, b"0")
    try:
        check = 0
        for b in bytes.fromhex(raw.decode("ascii")):
            check ^= b
        tail = f"{check:02X}".encode()
    except ValueError:
        tail = draw(st.binary(min_size=2, max_size=2))
    return b"\x02" + raw + tail + b"\x03"


RDM_STREAM = stream(RDM_FRAMES, mutated(RDM_FRAMES), rdm_recomputed(), RDM_ALPHABET, st.binary(max_size=30))
HEX = frozenset(b"0123456789ABCDEF")


@FUZZ
@given(RDM_STREAM, CHUNKS)
def test_rdm6300_decoder_yields_only_frames_that_are_on_the_wire(data: bytes, sizes: list[int]) -> None:
    decoder = Rdm6300Decoder()
    frames = [f for chunk in chunked(data, sizes) for f in decoder.feed(chunk)]
    for frame in frames:
        assert len(frame.uid) == 10 and set(frame.uid.encode()) <= HEX
        assert rdm_frame(frame.uid).lower() in data.lower()  # never a frame that was not sent
    assert decoder.dropped == sum(decoder.reasons.values())
    assert set(decoder.reasons) <= set(RdmDrop)
    whole = Rdm6300Decoder()
    assert whole.feed(data) == frames  # chunking does not matter
    assert (whole.dropped, whole.reasons) == (decoder.dropped, decoder.reasons)


@FUZZ
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\x02", b"")), RDM_FRAMES)
def test_rdm6300_a_good_frame_after_any_noise_is_found(noise: bytes, frame: bytes) -> None:
    decoder = Rdm6300Decoder()
    assert [f.uid for f in decoder.feed(noise + frame)] == [frame[1:11].decode()]
    assert decoder.dropped == (1 if noise else 0)
    assert decoder.reasons[RdmDrop.NOISE] == decoder.dropped


@FUZZ
@given(RDM_STREAM, CHUNKS)
def test_rdm6300_driver_receive_path_counts_what_the_codec_drops(data: bytes, sizes: list[int]) -> None:
    reference = Rdm6300Decoder()
    frames = reference.feed(data)

    async def run() -> Rdm6300Reader:
        reader = Rdm6300Reader("fuzz-rdm", "/nonexistent/tty", confirm_frames=1)
        reader._loop = asyncio.get_running_loop()  # what start() sets, without opening a port
        events = reader.events.subscribe()
        for chunk in chunked(data, sizes):
            reader._on_data(chunk)  # the port's on_data callback
        while events.pending():
            event = events.get_nowait()
            assert isinstance(event, CardPresented) and event.uid in {f.uid for f in frames}
        await reader.close()
        return reader

    reader = asyncio.run(run())
    assert reader.stats.frames_received == len(frames)
    assert reader.stats.frames_dropped == reference.dropped


# --- PN532: HSU frames and the answers parsed from them ---------------------------------------------------

PN532_BODIES = st.binary(min_size=1, max_size=40)
PN532_FRAMES = st.one_of(
    st.sampled_from([pn532.ACK_FRAME, pn532.NACK_FRAME, pn532.ERROR_FRAME]),
    st.builds(pn532.build_answer, st.sampled_from(list(pn532.Command)), st.binary(max_size=30)),
    st.builds(lambda tfi, body: pn532.build_information_frame(tfi, body, extended=True),
              st.sampled_from([pn532.TFI_PN532_TO_HOST, pn532.TFI_HOST_TO_PN532]), st.binary(min_size=1,
                                                                                              max_size=264)),
)


@st.composite
def pn532_length_changed(draw: st.DrawFn) -> bytes:
    """A valid answer whose LEN is changed and LCS recomputed: the header passes, the length lies."""
    frame = bytearray(pn532.build_answer(draw(st.sampled_from(list(pn532.Command))), draw(st.binary(max_size=30))))
    length = draw(st.integers(0, 255))
    frame[3], frame[4] = length, (-length) & 0xFF
    return bytes(frame)


PN532_GARBAGE_BODY = st.builds(pn532.build_information_frame,
                               st.sampled_from([pn532.TFI_PN532_TO_HOST, pn532.TFI_ERROR, 0x00, 0xFF]), PN532_BODIES)
PN532_NOISE = st.binary(max_size=30).map(lambda b: bytes(b"\x00\xff\xd5\xd4\x7f\x01\x55"[x % 7] for x in b))
PN532_STREAM = stream(PN532_FRAMES, mutated(PN532_FRAMES), pn532_length_changed(), PN532_GARBAGE_BODY,
                      PN532_NOISE, st.binary(max_size=30))
MAX_PN532_HELD = 7 + pn532.MAX_FRAME_LENGTH + 1  # extended header + TFI/data + DCS


def _on_the_wire(frame: pn532.Frame, data: bytes) -> bool:
    """The frame's bytes from its start code to its checksum were sent (pre/postamble are optional)."""
    return pn532.encode(frame)[1:-1] in data


@FUZZ
@given(PN532_STREAM, CHUNKS)
def test_pn532_decoder_yields_only_frames_on_the_wire_and_counts_drops(data: bytes, sizes: list[int]) -> None:
    decoder = pn532.FrameDecoder()
    items = [item for chunk in chunked(data, sizes) for item in decoder.events(chunk)]
    assert decoder.pending() <= MAX_PN532_HELD
    items += decoder.expire_events()
    assert decoder.pending() == 0
    frames = [i for i in items if not isinstance(i, pn532.DropReason)]
    drops = [i for i in items if isinstance(i, pn532.DropReason)]
    for frame in frames:
        assert _on_the_wire(frame, data)
        if isinstance(frame, pn532.InformationFrame):
            assert frame.tfi in (pn532.TFI_PN532_TO_HOST, pn532.TFI_HOST_TO_PN532) and frame.payload
    assert decoder.dropped == len(drops) == sum(decoder.reasons.values())
    whole = pn532.FrameDecoder()
    assert whole.feed(data) + whole.expire() == frames  # chunking does not matter


@FUZZ
@given(PN532_STREAM, CHUNKS)
def test_pn532_driver_receive_path_counts_frames_and_drops(data: bytes, sizes: list[int]) -> None:
    reader = Pn532Reader("fuzz-pn532", "/nonexistent/tty")
    for chunk in chunked(data, sizes):
        reader._on_data(chunk)  # the port's on_data callback
    reference = pn532.FrameDecoder()
    items = reference.events(data)
    assert reader.stats.frames_received == sum(1 for i in items if not isinstance(i, pn532.DropReason))
    assert reader.stats.frames_dropped == reference.dropped


def _target_a() -> st.SearchStrategy[pn532.TargetTypeA]:
    ats = st.binary(min_size=0, max_size=8).map(lambda b: bytes([len(b) + 1]) + b)
    return st.builds(pn532.TargetTypeA, st.integers(0, 255), st.binary(min_size=2, max_size=2),
                     st.integers(0, 255).map(lambda s: s & ~0x20),
                     st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n))) | st.builds(
        pn532.TargetTypeA, st.integers(0, 255), st.binary(min_size=2, max_size=2),
        st.integers(0, 255).map(lambda s: s | 0x20), st.binary(min_size=7, max_size=7), ats)


def _targets() -> st.SearchStrategy[bytes]:
    return st.lists(_target_a(), max_size=2).map(pn532.encode_in_list_passive_target_a)


def _autopoll_answers() -> st.SearchStrategy[bytes]:
    """InAutoPoll answers: type A targets under any of the type A types, and other types with any data."""
    type_a = st.builds(pn532.AutoPollTarget.of_type_a, st.sampled_from(sorted(pn532.AUTOPOLL_TYPE_A)), _target_a())
    other = st.builds(pn532.AutoPollTarget, st.sampled_from(sorted(set(pn532.AutoPollType) - pn532.AUTOPOLL_TYPE_A)),
                      st.binary(max_size=30))
    return st.lists(type_a | other, max_size=2).map(pn532.encode_in_auto_poll)


ANSWERS = st.one_of(st.binary(max_size=40), _targets(), mutated(_targets()), _autopoll_answers(),
                    mutated(_autopoll_answers()))


@FUZZ
@given(ANSWERS)
def test_pn532_answer_parsers_raise_only_their_protocol_errors(params: bytes) -> None:
    try:
        targets = pn532.parse_in_list_passive_target_a(params)
    except pn532.Pn532ProtocolError as exc:
        assert str(exc)
    else:
        assert len(targets) <= 2
        assert all(len(t.nfcid1) in (4, 7, 10) and len(t.uid_hex) == 2 * len(t.nfcid1) for t in targets)
    try:
        polled = pn532.parse_in_auto_poll(params)
    except pn532.Pn532ProtocolError as exc:
        assert str(exc)
    else:
        assert len(polled) <= 2
        assert pn532.encode_in_auto_poll(polled) == params  # every byte accounted for, nothing made up
        for t in polled:
            assert (t.target_a is not None) == (t.type in pn532.AUTOPOLL_TYPE_A)
            if t.target_a is not None:
                assert len(t.target_a.nfcid1) in (4, 7, 10) and pn532.encode_target_a(t.target_a) == t.data
    try:
        fw = pn532.parse_firmware_version(params)
    except pn532.Pn532ProtocolError:
        assert len(params) != 4
    else:
        assert str(fw).startswith("PN5")
    try:
        pn532.check_status("InRelease", params)
    except (pn532.Pn532ApplicationError, pn532.Pn532ProtocolError) as exc:
        assert str(exc)
    else:
        assert params and not params[0] & 0x3F


# --- EVSE-DIN: the status block -----------------------------------------------------------------------------

REGISTER_VALUES = st.one_of(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(),
                            st.sampled_from([-1, 0x10000, 2**64, 2**15000, -(2**15000)]))


@FUZZ
@given(st.lists(REGISTER_VALUES, max_size=12), st.integers(0, 0xFFFF), st.booleans())
def test_evse_din_status_block_of_any_values_decodes_or_is_refused(regs: list[int], config: int,
                                                                    allowed: bool) -> None:
    try:
        status = decode_status(regs)
    except EvseDinError as exc:
        assert len(regs) != STATUS_BLOCK_COUNT or any(not 0 <= r <= 0xFFFF for r in regs)
        assert len(str(exc)) < 200
        return
    assert status.pilot is None or isinstance(status.pilot, PilotState)
    assert all(isinstance(code, FaultCode) for code in active_faults(status))
    assert isinstance(relay_expected(status, power_allowed=allowed, config_bits=config), bool)
    amps = register_to_amps(status.amps_output, status.high_resolution(config))
    assert math.isfinite(amps) and amps >= 0


class _AnsweringBus:
    """Stands in for a ModbusBus: answers each read with the next drawn register values. Like the real
    bus it answers with ``count`` 16-bit registers; what they say is up to the test."""

    port = "fuzz"

    def __init__(self, answers: Iterator[list[int]]) -> None:
        self._answers = answers
        self._stats = LinkStats()
        self.writes: list[tuple[int, list[int]]] = []

    def unit_stats(self, unit: int) -> LinkStats:
        return self._stats

    async def open(self) -> None:
        pass

    async def _read(self, unit: int, address: int, count: int) -> list[int]:
        values = next(self._answers, [])
        return (values + [0] * count)[:count]

    read_holding_registers = _read
    read_input_registers = _read

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        self.writes.append((address, values))


@FUZZ
@given(st.lists(st.lists(st.integers(0, 0xFFFF), min_size=STATUS_BLOCK_COUNT, max_size=STATUS_BLOCK_COUNT),
                min_size=1, max_size=8))
def test_evse_din_driver_turns_any_status_into_documented_events(answers: list[list[int]]) -> None:
    async def run() -> list[object]:
        board = EvseDinBoard("fuzz-din", cast(ModbusBus, _AnsweringBus(iter(answers))))
        events = board.events.subscribe()
        for _ in answers:
            await board._poll_once()  # one poll, as the polling task runs it
        out = []
        while events.pending():
            out.append(events.get_nowait())
        return out

    for event in asyncio.run(run()):
        assert isinstance(event, PilotChanged | ContactorChanged | DeviceFault | DeviceRecovered)
        if isinstance(event, PilotChanged):
            assert event.state in (PilotState.A, PilotState.B, PilotState.C, PilotState.D)


# --- energy meters: register decoding ---------------------------------------------------------------------

FLOAT_SPECIALS = [0x7FC0, 0x7F80, 0xFF80, 0x7FFF, 0xFFFF, 0x0000, 0x8000, 0x7F7F]  # NaN, +inf, -inf, max ...
WORDS = st.one_of(st.integers(0, 0xFFFF), st.sampled_from(FLOAT_SPECIALS))


@FUZZ
@given(st.sampled_from(sorted(REGISTER_COUNT)), st.sampled_from(["big", "little"]),
       st.lists(st.one_of(WORDS, REGISTER_VALUES), max_size=6), st.floats(1e-6, 1e6))
def test_register_decoding_yields_a_number_or_a_decode_error(dtype: str, order: str, words: list[int],
                                                             scale: float) -> None:
    q = Quantity("x", "input", 0, cast(Any, dtype), cast(Any, order), scale, "V")
    try:
        value = decode_value(q, words)
    except RegisterDecodeError as exc:
        assert len(words) != q.count or any(not 0 <= w <= 0xFFFF for w in words)
        assert len(str(exc)) < 200
        return
    assert isinstance(value, float)
    assert math.isfinite(value) or dtype == "float32"  # only a float32 can say NaN or infinity


@FUZZ
@given(st.sampled_from(["sdm630", "sdm120", "abb_b23"]), st.lists(st.lists(WORDS, min_size=1, max_size=60),
                                                                    min_size=1, max_size=12))
def test_meter_turns_any_registers_into_a_finite_reading_or_a_counted_device_error(
        model: str, answers: list[list[int]]) -> None:
    fail_after = 2

    bus = _AnsweringBus(iter(answers))

    async def run() -> tuple[list[bool], list[object]]:
        meter = ModbusMeter("fuzz-meter", cast(ModbusBus, bus), 1, load_register_map(model), fail_after=fail_after)
        events = meter.events.subscribe()
        outcomes: list[bool] = []
        while True:
            try:
                reading = await meter.read()
            except InvalidMeterValue:
                outcomes.append(False)
            else:
                assert isinstance(reading, MeterReading)
                values = [reading.energy_import_wh, reading.power_w, *reading.current_a, *reading.voltage_v,
                          reading.frequency_hz or 0.0, reading.energy_export_wh or 0.0]
                assert all(math.isfinite(v) for v in values)
                outcomes.append(True)
            if len(outcomes) * len(meter.plan) >= len(answers):
                break
        published = []
        while events.pending():
            published.append(events.get_nowait())
        return outcomes, published

    outcomes, published = asyncio.run(run())
    assert bus.unit_stats(1).exceptions == outcomes.count(False)  # docs/hal.md: counted in stats.exceptions
    # fault bookkeeping as documented: DEVICE_ERROR after fail_after bad polls in a row, once; cleared by a good one
    expected: list[tuple[type, FaultCode]] = []
    streak, active = 0, False
    for good in outcomes:
        if good:
            streak = 0
            if active:
                expected.append((DeviceRecovered, FaultCode.DEVICE_ERROR))
                active = False
        else:
            streak += 1
            if streak >= fail_after and not active:
                expected.append((DeviceFault, FaultCode.DEVICE_ERROR))
                active = True
    assert [(type(e), cast(Any, e).code) for e in published] == expected


@FUZZ
@given(st.lists(st.lists(REGISTER_VALUES, max_size=30), min_size=1, max_size=4))
def test_meter_with_a_bus_breaking_its_contract_raises_only_device_errors(answers: list[list[int]]) -> None:
    """Wrong counts and words that are not 16 bits (the bus never passes them on, but the driver's own
    decoding must not depend on it): InvalidMeterValue, a DeviceError, never ValueError/OverflowError."""

    class SloppyBus(_AnsweringBus):
        async def _read(self, unit: int, address: int, count: int) -> list[int]:
            return next(self._answers, [])

        read_holding_registers = _read
        read_input_registers = _read

    async def run() -> None:
        meter = ModbusMeter("fuzz-meter", cast(ModbusBus, SloppyBus(iter(answers))), 1, load_register_map("sdm630"))
        for _ in answers:
            try:
                await meter.read()
            except DeviceError:
                pass

    asyncio.run(run())


# --- Modbus RTU: the receive framer ---------------------------------------------------------------------------


def _answer(unit: int, registers: list[int], byte_count: int | None = None) -> bytes:
    body = bytes([unit, 3, 2 * len(registers) if byte_count is None else byte_count])
    body += struct.pack(f">{len(registers)}H", *registers)
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


MODBUS_ANSWERS = st.builds(_answer, st.sampled_from([5, 5, 6]), st.lists(st.integers(0, 0xFFFF), min_size=1,
                                                                            max_size=10))
# the byte count changed and the CRC recomputed: the frame is CRC-valid, its length field lies
MODBUS_LIED = st.builds(_answer, st.just(5), st.lists(st.integers(0, 0xFFFF), max_size=10), st.integers(0, 255))
MODBUS_STREAM = stream(MODBUS_ANSWERS, mutated(MODBUS_ANSWERS), MODBUS_LIED, st.binary(max_size=30), max_pieces=6)


@FUZZ
@given(MODBUS_STREAM)
def test_modbus_framer_hands_over_only_crc_valid_answers_of_the_unit_asked(data: bytes) -> None:
    frames, drops = [], []
    framer = RtuResponseFramer(DecodePDU(False), FramerEvents(lambda: frames.append(1), drops.append))
    framer.buildFrame(ReadHoldingRegistersRequest(address=0, count=4, dev_id=5))
    rest = data
    while rest:
        used, pdu = framer.handleFrame(rest, 5, 0)
        assert 0 <= used <= len(rest)
        rest = rest[used:]
        if pdu is None:
            break
        assert pdu.dev_id == 5 and pdu.function_code in (3, 0x83)
        registers = list(getattr(pdu, "registers", []))
        assert all(0 <= r <= 0xFFFF for r in registers)
        assert _answer(5, registers) in data  # never a frame that was not on the wire
    assert len(frames) <= data.count(b"\x05\x03") + data.count(b"\x05\x83")
    assert all(isinstance(why, str) and why for why in drops)


@pytest.mark.parametrize("count", [0, 3, 5, 125])
async def test_modbus_bus_answer_of_the_wrong_count_is_dropped_counted_and_a_device_error(count: int) -> None:
    """A CRC-valid answer with another number of registers than asked is not handed to a driver."""
    bus = ModbusBus("/nonexistent/tty")

    class Answer:
        registers = list(range(count))

    with pytest.raises(DeviceError, match=f"{count} registers instead of 4"):
        bus._registers(cast(Any, Answer()), 5, 3, 0, 4)
    assert bus.stats.frames_dropped == 1 and bus.unit_stats(5).frames_dropped == 1


# --- the last line of defence: a bug in a parser is counted and logged, and polling goes on ---------------


class _BuggyOnce(_AnsweringBus):
    """Answers like _AnsweringBus, except that the first read raises what a parser bug would."""

    def __init__(self, answers: Iterator[list[int]]) -> None:
        super().__init__(answers)
        self.reads = 0

    async def _read(self, unit: int, address: int, count: int) -> list[int]:
        self.reads += 1
        if self.reads == 1:
            raise IndexError("a decoding bug")
        return await super()._read(unit, address, count)

    read_holding_registers = _read
    read_input_registers = _read


async def _until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 (polls driver state that has no event)
            await asyncio.sleep(0.005)


async def test_evse_din_poll_that_raises_is_counted_logged_and_polling_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    status = [0, 0, 1, 32, 0, 18, 1, 0]  # pilot A, steady 12 V
    bus = _BuggyOnce(iter([status] * 1000))
    board = EvseDinBoard("din", cast(ModbusBus, bus), poll_interval_s=0.01)
    events = board.events.subscribe()
    with caplog.at_level(logging.ERROR, logger="hal.evse_din"):
        with pytest.raises(DeviceError, match="refuses: unexpected error handling its answer: IndexError"):
            await board.start()
        await _until(lambda: board.pilot_state is PilotState.A)
    await board.close()
    assert bus.unit_stats(1).frames_dropped == 1
    assert any(r.exc_info and r.exc_info[0] is IndexError for r in caplog.records)
    seen = [events.get_nowait() for _ in range(events.pending())]
    assert [(type(e), cast(Any, e).code) for e in seen if not isinstance(e, PilotChanged)] == [
        (DeviceFault, FaultCode.DEVICE_ERROR), (DeviceRecovered, FaultCode.DEVICE_ERROR)]


async def test_meter_poll_that_raises_is_counted_logged_and_polling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    bus = _BuggyOnce(iter([[0] * 80] * 1000))
    meter = ModbusMeter("m", cast(ModbusBus, bus), 1, load_register_map("sdm630"), poll_interval_s=0.01)
    with caplog.at_level(logging.ERROR, logger="hal.meter_modbus"):
        await meter.start()
        await _until(lambda: meter.latest is not None)
    await meter.close()
    assert bus.unit_stats(1).frames_dropped == 1
    assert any(r.exc_info and r.exc_info[0] is IndexError for r in caplog.records)


async def test_pn532_poll_that_raises_is_counted_logged_and_polling_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    reader = Pn532Reader("pn", "/nonexistent/tty", poll_interval_s=0.001, autopoll_count=1)
    polls: list[int] = []

    async def initialise() -> None:
        reader._initialised = True

    async def poll_once(request: pn532.AutoPollRequest) -> str | None:
        polls.append(1)
        if len(polls) == 1:
            raise IndexError("a parser bug")
        return None

    monkeypatch.setattr(reader, "_initialise", initialise)
    monkeypatch.setattr(reader, "_poll_once", poll_once)
    with caplog.at_level(logging.ERROR, logger="hal.pn532.driver"):
        reader._loop = asyncio.get_running_loop()
        reader._task = asyncio.create_task(reader._run())  # what start() runs after the init sequence
        await _until(lambda: len(polls) >= 3)
    await reader.close()
    assert reader.stats.frames_dropped == 1 and not reader.link_lost
    assert any(r.exc_info and r.exc_info[0] is IndexError for r in caplog.records)
