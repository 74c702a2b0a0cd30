"""PN532 frame codec (UM0701-02 §6.2.1) and answer parsing: examples, errors and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.interfaces import DeviceError
from hal.pn532.codec import (
    ACK_FRAME,
    ERROR_FRAME,
    NACK_FRAME,
    Ack,
    AutoPollRequest,
    AutoPollTarget,
    AutoPollType,
    Command,
    DropReason,
    ErrorFrame,
    FirmwareVersion,
    Frame,
    FrameDecoder,
    InformationFrame,
    Nack,
    Pn532ApplicationError,
    Pn532ProtocolError,
    TargetTypeA,
    build_answer,
    build_command,
    build_information_frame,
    check_status,
    encode,
    encode_in_auto_poll,
    encode_in_list_passive_target_a,
    parse_firmware_version,
    parse_in_auto_poll,
    parse_in_auto_poll_command,
    parse_in_list_passive_target_a,
    status_text,
)

H = bytes.fromhex

# --- building: byte-exact examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "params", "wire"),
    [
        (Command.GET_FIRMWARE_VERSION, b"", "0000FF02FED4022A00"),
        (Command.SAM_CONFIGURATION, b"\x01", "0000FF03FDD4140117 00"),
        (Command.IN_LIST_PASSIVE_TARGET, b"\x01\x00", "0000FF04FCD44A0100E100"),
        (Command.RF_CONFIGURATION, b"\x05\xff\x01\x02", "0000FF06FAD43205FF0102F300"),
        (Command.IN_RELEASE, b"\x01", "0000FF03FDD45201D900"),
        (Command.IN_RELEASE, b"\x00", "0000FF03FDD45200DA00"),  # Tg 0: every target
        (Command.IN_AUTO_POLL, b"\x14\x01\x10", "0000FF05FBD4601401 10A700"),  # 20 x 150 ms, MIFARE
    ],
)
def test_command_frames_match_the_manual_layout(command: Command, params: bytes, wire: str) -> None:
    assert build_command(command, params) == H(wire.replace(" ", ""))


def test_answer_frame_has_tfi_d5_and_code_plus_one() -> None:
    frame = build_answer(Command.GET_FIRMWARE_VERSION, b"\x32\x01\x06\x07")
    assert frame == H("0000FF06FAD50332010607E800")
    assert (frame[3] + frame[4]) & 0xFF == 0  # LEN + LCS
    assert sum(frame[5:-1]) & 0xFF == 0  # TFI + PD + DCS


def test_extended_frame_is_used_above_255_bytes_and_on_request() -> None:
    long_frame = build_information_frame(0xD5, bytes(263))
    assert long_frame[:8] == H("0000FFFFFF0108F7")  # LENM=01 LENL=08 (264), LCS so the sum is 0
    assert build_information_frame(0xD4, b"\x02", extended=True) == H("0000FFFFFF0002FED4022A00")
    with pytest.raises(ValueError, match="too long"):
        build_information_frame(0xD4, bytes(265))
    with pytest.raises(ValueError, match="extended"):
        build_information_frame(0xD4, bytes(260), extended=False)


def test_special_frames() -> None:
    assert ACK_FRAME == H("0000FF00FF00")
    assert NACK_FRAME == H("0000FFFF0000")
    assert ERROR_FRAME == H("0000FF01FF7F8100")
    assert FrameDecoder().feed(ACK_FRAME + NACK_FRAME + ERROR_FRAME) == [Ack(), Nack(), ErrorFrame()]


# --- decoding -------------------------------------------------------------------------------------------


def test_decodes_normal_and_extended_frames_byte_by_byte() -> None:
    wire = build_answer(Command.IN_RELEASE, b"\x00") + build_information_frame(0xD5, b"\x4b" + bytes(262))
    dec = FrameDecoder()
    frames = [f for b in wire for f in dec.feed(bytes([b]))]
    assert frames == [
        InformationFrame(0xD5, b"\x53\x00"),
        InformationFrame(0xD5, b"\x4b" + bytes(262), extended=True),
    ]
    assert dec.dropped == 0
    assert dec.pending() == 1  # only the postamble, kept in case it starts the next start code


def test_long_preamble_and_postamble_are_idle_not_noise() -> None:
    dec = FrameDecoder()
    assert dec.feed(bytes(20) + ACK_FRAME + bytes(7)) == [Ack()]
    assert dec.dropped == 0


def test_bad_lcs_is_dropped_and_the_next_frame_found() -> None:
    bad = bytearray(build_answer(Command.SAM_CONFIGURATION))
    bad[4] ^= 0x01
    dec = FrameDecoder()
    assert dec.feed(bytes(bad) + ACK_FRAME) == [Ack()]
    assert dec.reasons[DropReason.BAD_LCS] == 1
    assert dec.dropped == 1  # the rest of the bad frame is not counted a second time as noise


def test_bad_dcs_is_dropped_and_the_next_frame_found() -> None:
    bad = bytearray(build_answer(Command.GET_FIRMWARE_VERSION, b"\x32\x01\x06\x07"))
    bad[-2] ^= 0x40
    good = build_answer(Command.SAM_CONFIGURATION)
    dec = FrameDecoder()
    assert dec.feed(bytes(bad) + good) == [InformationFrame(0xD5, b"\x15")]
    assert dec.reasons == {DropReason.BAD_DCS: 1}


def test_truncated_frame_swallowing_the_next_one_is_resolved() -> None:
    """A frame cut short is followed by a good one: the bad length field eats into the good frame,
    the DCS fails, and the decoder resynchronises on the good frame's own start code."""
    first = build_answer(Command.IN_LIST_PASSIVE_TARGET, encode_in_list_passive_target_a(
        [TargetTypeA(1, b"\x00\x04", 0x08, H("A1B2C3D4"))]))
    second = build_answer(Command.IN_RELEASE, b"\x00")
    dec = FrameDecoder()
    assert dec.feed(first[:9] + second) == [InformationFrame(0xD5, b"\x53\x00")]
    assert dec.dropped == 1


def test_events_report_drops_in_stream_order() -> None:
    """The driver NACKs only a damaged frame that came after the ACK, so order matters."""
    bad = bytearray(build_answer(Command.SAM_CONFIGURATION))
    bad[-2] ^= 0xFF
    dec = FrameDecoder()
    assert dec.events(ACK_FRAME + bytes(bad)) == [Ack(), DropReason.BAD_DCS]
    assert dec.events(b"\x42" + NACK_FRAME) == [DropReason.NOISE, Nack()]
    assert dec.events(ACK_FRAME[:4]) == []
    assert dec.expire_events() == [DropReason.TRUNCATED]


def test_partial_frame_is_counted_truncated_on_expire() -> None:
    dec = FrameDecoder()
    frame = build_answer(Command.GET_FIRMWARE_VERSION, b"\x32\x01\x06\x07")
    assert dec.feed(frame[:8]) == []
    assert dec.pending() > 0
    assert dec.expire() == []
    assert dec.reasons == {DropReason.TRUNCATED: 1}
    assert dec.feed(frame) == [InformationFrame(0xD5, b"\x03\x32\x01\x06\x07")]


def test_expire_recovers_a_complete_frame_hidden_behind_a_partial_one() -> None:
    dec = FrameDecoder()
    # a fake header claiming 200 bytes, then a whole ACK: only the expiry can find the ACK
    assert dec.feed(H("0000FFC8") + b"\x38" + H("D5") + ACK_FRAME) == []
    assert dec.expire() == [Ack()]
    assert dec.reasons[DropReason.TRUNCATED] == 1


def test_noise_run_counts_once_and_wrong_tfi_or_length_are_dropped() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x13\x37\x42\x99" + ACK_FRAME) == [Ack()]
    assert dec.reasons == {DropReason.NOISE: 1}
    wrong_tfi = build_information_frame(0xD6, b"\x01")
    zero_length = H("0000FF0000")
    assert dec.feed(wrong_tfi + zero_length + NACK_FRAME) == [Nack()]
    assert dec.reasons[DropReason.BAD_TFI] == 1
    assert dec.reasons[DropReason.BAD_LENGTH] == 1


def test_extended_frame_with_length_above_firmware_limit_is_dropped() -> None:
    dec = FrameDecoder()
    assert dec.feed(H("0000FFFFFF0200FE") + ACK_FRAME) == [Ack()]  # 512 bytes: impossible
    assert dec.reasons[DropReason.BAD_LENGTH] == 1


# --- answers --------------------------------------------------------------------------------------------


def test_parse_firmware_version() -> None:
    fw = parse_firmware_version(H("32010607"))
    assert fw == FirmwareVersion(0x32, 1, 6, 7)
    assert str(fw) == "PN532 v1.6 (ISO14443A, ISO14443B, ISO18092)"
    with pytest.raises(Pn532ProtocolError, match="expected 4"):
        parse_firmware_version(H("3201"))


def test_parse_in_list_passive_target_examples() -> None:
    assert parse_in_list_passive_target_a(b"\x00") == []
    four = parse_in_list_passive_target_a(H("0101000408" + "04" + "A1B2C3D4"))
    assert four == [TargetTypeA(1, H("0004"), 0x08, H("A1B2C3D4"))]
    assert four[0].uid_hex == "A1B2C3D4"
    seven = parse_in_list_passive_target_a(H("01010044000704A1B2C3D4E5F6"))
    assert seven[0].uid_hex == "04A1B2C3D4E5F6"
    # ISO/IEC 14443-4 card (SAK 0x20): the ATS follows, its first byte is its length
    with_ats = parse_in_list_passive_target_a(H("01010344200704112233445566" + "0675778102 80".replace(" ", "")))
    assert with_ats[0].ats == H("067577810280")
    assert with_ats[0].uid_hex == "04112233445566"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (b"", "empty"),
        (H("03"), "at most 2"),
        (H("010100"), "truncated in the header"),
        (H("0101000408" + "05" + "A1B2C3D4"), "NFCID1 length 5"),
        (H("0101000408" + "07" + "A1B2C3D4"), "truncated: NFCID1 of 7 bytes"),
        (H("0101000408" + "04" + "A1B2C3D4" + "FF"), "trailing"),
        (H("0101034420" + "04" + "A1B2C3D4" + "09AA"), "ATS of 9 bytes"),
    ],
)
def test_parse_in_list_passive_target_errors_are_clear(params: bytes, message: str) -> None:
    with pytest.raises(Pn532ProtocolError, match=message):
        parse_in_list_passive_target_a(params)


def test_auto_poll_request_parameters_and_duration() -> None:
    idle = AutoPollRequest(20, 1, (AutoPollType.MIFARE,))
    assert idle.params() == H("140110")
    assert idle.duration_s == pytest.approx(3.0)
    assert AutoPollRequest(2, 3, (0x10, 0x11)).duration_s == pytest.approx(2 * 2 * 3 * 0.150)
    endless = AutoPollRequest(0xFF, 1, (0x10,))
    assert endless.endless and endless.duration_s == float("inf")
    assert parse_in_auto_poll_command(H("140110")) == idle  # the chip's side reads back what the host built


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (H("0110"), "needs PollNr, Period and a type"),
        (H("000110"), "PollNr 0"),
        (H("010010"), "Period 0"),
        (H("011010"), "Period 16"),
        (H("010105"), "type 0x05 is not one of"),
        (H("0101") + bytes([0x10] * 16), "1..15 target types"),
    ],
)
def test_auto_poll_parameters_out_of_range_are_refused(params: bytes, message: str) -> None:
    with pytest.raises(Pn532ProtocolError, match=message):
        parse_in_auto_poll_command(params)
    with pytest.raises(ValueError):  # the host cannot build them either
        AutoPollRequest(params[0] if params else 0, params[1] if len(params) > 1 else 0, tuple(params[2:]))


def test_parse_in_auto_poll_examples() -> None:
    assert parse_in_auto_poll(H("00")) == []  # NbTg = 0: nothing found in PollNr pollings
    # NbTg=1, Type 0x10 (MIFARE), 9 bytes of target data: InListPassiveTarget's Tg SENS_RES SEL_RES len NFCID1
    mifare = parse_in_auto_poll(H("01" + "10" + "09" + "0100040804A1B2C3D4"))
    assert mifare == [AutoPollTarget(0x10, H("0100040804A1B2C3D4"), TargetTypeA(1, H("0004"), 0x08, H("A1B2C3D4")))]
    assert mifare[0].target_a is not None and mifare[0].target_a.uid_hex == "A1B2C3D4"
    # ISO/IEC 14443-4A (Type 0x20) with its ATS, then a FeliCa target (not type A: left undecoded)
    two = parse_in_auto_poll(H("02" + "20" + "12" + "0100442007041122334455660675778102 80".replace(" ", "")
                               + "11" + "03" + "AABBCC"))
    assert two[0].target_a is not None and two[0].target_a.ats == H("067577810280")
    assert two[1] == AutoPollTarget(0x11, H("AABBCC"))
    assert encode_in_auto_poll(two) == H("02" + "20" + "12" + "010044200704112233445566067577810280"
                                         + "11" + "03" + "AABBCC")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (b"", "empty"),
        (H("03"), "at most 2"),
        (H("0110"), "truncated before the type and length of target 1"),
        (H("011009" + "01000408"), "target 1 has 9 bytes of data, 4 present"),
        (H("011004" + "01000408"), "truncated in the header of target 1"),
        (H("01100A" + "0100040804A1B2C3D4" + "FF"), "1 bytes beyond its data"),
        (H("011009" + "0100040805A1B2C3D4"), "NFCID1 length 5"),
        (H("011009" + "0100040804A1B2C3D4" + "00"), "trailing"),
    ],
)
def test_parse_in_auto_poll_errors_are_clear(params: bytes, message: str) -> None:
    with pytest.raises(Pn532ProtocolError, match=message):
        parse_in_auto_poll(params)


def test_status_bytes() -> None:
    check_status("InRelease", b"\x00")
    with pytest.raises(Pn532ApplicationError, match=r"status 0x01 \(time out"):
        check_status("InRelease", b"\x01")
    with pytest.raises(Pn532ProtocolError):
        check_status("InRelease", b"")
    assert status_text(0x27) == "command not acceptable in the current context"
    assert status_text(0x3E) == "unknown error 0x3E"
    assert issubclass(Pn532ProtocolError, DeviceError) and issubclass(Pn532ApplicationError, DeviceError)


# --- properties ---------------------------------------------------------------------------------------

information_frames = st.builds(
    InformationFrame,
    tfi=st.sampled_from([0xD4, 0xD5]),
    payload=st.binary(min_size=1, max_size=264),
    extended=st.booleans(),
).filter(lambda f: f.extended or len(f.payload) < 255)
frames: st.SearchStrategy[Frame] = st.one_of(
    st.just(Ack()), st.just(Nack()), st.just(ErrorFrame()), information_frames
)


def _feed_in_chunks(dec: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame]:
    out: list[Frame] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    prev = 0
    for p in [*points, len(data)]:
        out += dec.feed(data[prev:p])
        prev = p
    return out


@given(st.lists(frames, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_property_round_trip_in_any_chunking(sent: list[Frame], cuts: list[int]) -> None:
    dec = FrameDecoder()
    wire = b"".join(encode(f) for f in sent)
    assert _feed_in_chunks(dec, wire, cuts) == sent
    assert dec.dropped == 0


@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=20))
def test_property_random_bytes_never_raise_and_yield_only_valid_frames(noise: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    found = _feed_in_chunks(dec, noise, cuts) + dec.expire()
    for frame in found:
        # every frame the decoder hands out is one that encodes to a well-formed frame and back
        assert FrameDecoder().feed(encode(frame)) == [frame]
        if isinstance(frame, InformationFrame):
            assert frame.tfi in (0xD4, 0xD5) and len(frame.payload) >= 1


@given(
    st.binary(max_size=300).filter(lambda g: b"\x00\xff" not in g),
    frames,
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_property_valid_frame_after_garbage_is_found(garbage: bytes, frame: Frame, cuts: list[int]) -> None:
    dec = FrameDecoder()
    found = _feed_in_chunks(dec, garbage + encode(frame), cuts)
    assert found == [frame]
