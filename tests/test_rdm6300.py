"""RDM6300 codec (examples, errors, properties) and Rdm6300Reader against SimulatedRdm6300."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.events import Subscription
from hal.interfaces import (
    CardPresented,
    CardTechnology,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    FaultCode,
    IdReader,
    ReaderEvent,
)
from hal.rdm6300.codec import (
    DropReason,
    Rdm6300Decoder,
    Rdm6300Frame,
    card_number,
    checksum,
    encode_frame,
)
from hal.rdm6300.driver import Rdm6300Reader
from sim.devices.rdm6300 import SimulatedRdm6300
from sim.devices.serial_wire import Direction, SerialWire

EXAMPLE = b"\x020C0008A1B217\x03"  # tag 0C 00 08 A1 B2, checksum 0C^00^08^A1^B2 = 0x17

# --- codec ------------------------------------------------------------------------------------------


def test_frame_layout_example() -> None:
    assert encode_frame("0C0008A1B2") == EXAMPLE
    assert encode_frame("0c0008a1b2") == EXAMPLE
    assert checksum(bytes.fromhex("0C0008A1B2")) == 0x17
    assert card_number("0C0008A1B2") == "0000565682"  # decimal of the last 8 digits, as printed
    assert Rdm6300Decoder().feed(EXAMPLE) == [Rdm6300Frame(bytes.fromhex("0C0008A1B2"))]
    with pytest.raises(ValueError, match="10 hex digits"):
        encode_frame("08A1B2")
    with pytest.raises(ValueError, match="not hex"):
        encode_frame("0C0008A1BX")


def test_lower_case_digits_from_a_clone_module_are_accepted() -> None:
    assert Rdm6300Decoder().feed(b"\x020c0008a1b217\x03")[0].uid == "0C0008A1B2"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x020C0008A1B218\x03", DropReason.BAD_CHECKSUM),
        (b"\x020C0008A1G217\x03", DropReason.NON_HEX),
        (b"\x020C0008A1B217\x04", DropReason.MISSING_ETX),
        (b"\x020C0008A1B2", DropReason.WRONG_LENGTH),  # cut short: the next frame's STX comes early
        (b"\x020C0008A1B21\x03", DropReason.WRONG_LENGTH),  # one digit missing, ETX then next STX
        (b"\xff\x13\x37", DropReason.NOISE),
    ],
)
def test_bad_input_is_dropped_counted_and_the_next_frame_found(wire: bytes, reason: DropReason) -> None:
    dec = Rdm6300Decoder()
    assert dec.feed(wire + EXAMPLE) == [Rdm6300Frame(bytes.fromhex("0C0008A1B2"))]
    assert dec.reasons[reason] == 1
    assert dec.dropped == 1


def test_repeated_frames_and_noise_between_them() -> None:
    dec = Rdm6300Decoder()
    frames = dec.feed(EXAMPLE + b"\r\n" + EXAMPLE + b"\x00\x00" + EXAMPLE)
    assert len(frames) == 3
    assert dec.reasons == {DropReason.NOISE: 2}


uids = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())


def _feed_in_chunks(dec: Rdm6300Decoder, data: bytes, cuts: list[int]) -> list[Rdm6300Frame]:
    out: list[Rdm6300Frame] = []
    prev = 0
    for p in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        out += dec.feed(data[prev:p])
        prev = p
    return out


@given(st.lists(uids, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_property_round_trip_in_any_chunking(sent: list[str], cuts: list[int]) -> None:
    dec = Rdm6300Decoder()
    found = _feed_in_chunks(dec, b"".join(encode_frame(u) for u in sent), cuts)
    assert [f.uid for f in found] == sent
    assert dec.dropped == 0


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=20))
def test_property_random_bytes_never_raise_and_yield_only_valid_frames(noise: bytes, cuts: list[int]) -> None:
    for frame in _feed_in_chunks(Rdm6300Decoder(), noise, cuts):
        assert len(frame.data) == 5
        assert Rdm6300Decoder().feed(encode_frame(frame.uid)) == [frame]


@given(st.binary(max_size=200), uids, st.lists(st.integers(min_value=0), max_size=8))
def test_property_valid_frame_after_any_garbage_is_found(garbage: bytes, uid: str, cuts: list[int]) -> None:
    found = _feed_in_chunks(Rdm6300Decoder(), garbage + encode_frame(uid), cuts)
    assert found and found[-1].uid == uid


# --- driver against the simulated module -------------------------------------------------------------

HOLD_S = 0.15


@dataclass
class Rig:
    wire: SerialWire
    module: SimulatedRdm6300
    reader: Rdm6300Reader
    events: Subscription[ReaderEvent]

    async def next_event(self, within: float = 3.0) -> ReaderEvent:
        async with asyncio.timeout(within):
            return await self.events.get()


async def wait_until(cond: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``cond`` until it holds; fail the test if it does not within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if cond():
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)


@pytest.fixture
async def rig(wire: SerialWire) -> AsyncIterator[Rig]:
    module = SimulatedRdm6300(wire.device_port, repeat_s=0.02)
    await module.start()
    reader = Rdm6300Reader("rfid-125", wire.host_port, hold_s=HOLD_S)
    events = reader.events.subscribe()
    await reader.start()
    try:
        yield Rig(wire, module, reader, events)
    finally:
        await reader.close()
        module.close()


async def test_tag_in_the_field_is_reported_once_then_again_after_removal(rig: Rig) -> None:
    assert isinstance(rig.reader, IdReader)
    rig.module.present("0C0008A1B2")
    event = await rig.next_event()
    assert isinstance(event, CardPresented)
    assert (event.device, event.uid, event.technology) == ("rfid-125", "0C0008A1B2", CardTechnology.EM4100)
    await wait_until(lambda: rig.reader.stats.frames_received >= 15)  # repeats while held
    assert rig.events.pending() == 0

    rig.module.remove()
    await wait_until(lambda: rig.reader.card_present is None)
    rig.module.present("0C0008A1B2")
    again = await rig.next_event()
    assert isinstance(again, CardPresented) and again.uid == "0C0008A1B2"


async def test_another_tag_while_one_is_held_is_a_new_presentation(rig: Rig) -> None:
    rig.module.present("0C0008A1B2")
    await rig.next_event()
    rig.module.present("01DEADBEEF")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "01DEADBEEF"


async def test_corrupt_frames_garbage_and_truncation_are_dropped_and_the_tag_still_read(rig: Rig) -> None:
    rig.module.send_raw(b"\x020C0008A1B218\x03")  # bad checksum
    rig.module.send_raw(b"\x020C0008A1Z217\x03")  # non-hex
    rig.wire.inject_garbage(Direction.TO_HOST, 30)
    await wait_until(lambda: rig.reader.stats.frames_dropped >= 3)
    assert rig.events.pending() == 0  # nothing bogus reported
    rig.wire.truncate_next(Direction.TO_HOST, 2)
    rig.module.present("01DEADBEEF")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "01DEADBEEF"


async def test_bit_noise_is_dropped_and_a_clean_line_reads_the_tag(rig: Rig) -> None:
    rig.wire.set_noise(Direction.TO_HOST, 0.03)
    rig.module.present("0C0008A1B2")
    await wait_until(lambda: rig.reader.stats.frames_dropped >= 5)
    rig.wire.clear_faults()
    await wait_until(lambda: rig.reader.card_present == "0C0008A1B2")
    reported = [e.uid for e in (rig.events.get_nowait() for _ in range(rig.events.pending()))
                if isinstance(e, CardPresented)]
    assert reported == ["0C0008A1B2"]  # a bogus id would have to pass the XOR check twice in a row


async def test_a_single_frame_is_not_enough_to_report_a_tag(rig: Rig) -> None:
    rig.module.send_raw(encode_frame("01DEADBEEF"))  # e.g. noise that happened to pass the XOR check
    await wait_until(lambda: rig.reader.stats.frames_received == 1)
    await asyncio.sleep(2 * HOLD_S)
    assert rig.events.pending() == 0
    rig.module.present("01DEADBEEF")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "01DEADBEEF"


async def test_silent_module_is_no_card_not_link_lost(rig: Rig) -> None:
    rig.module.present("0C0008A1B2")
    await rig.next_event()
    rig.module.set_silent(True)
    await wait_until(lambda: rig.reader.card_present is None)
    await asyncio.sleep(3 * HOLD_S)
    assert rig.events.pending() == 0  # no LINK_LOST: silence is what "no tag" looks like
    assert rig.reader.link_lost is False
    rig.module.set_silent(False)
    event = await rig.next_event()
    assert isinstance(event, CardPresented)


async def test_unplugged_adapter_is_link_lost_and_replugging_recovers(tmp_path: Path) -> None:
    """A USB adapter behind a stable name (like /dev/serial/by-id/...): unplugging hangs up the tty,
    replugging brings a new tty behind the same name."""
    link = tmp_path / "rdm6300"

    def plug() -> int:
        master, slave = os.openpty()
        tty.setraw(slave)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(slave))
        os.close(slave)
        return master

    master = plug()
    reader = Rdm6300Reader("rfid-125", str(link), hold_s=HOLD_S, reopen_interval_s=0.05)
    events = reader.events.subscribe()
    await reader.start()
    try:
        os.write(master, EXAMPLE * 2)
        async with asyncio.timeout(3):
            assert isinstance(await events.get(), CardPresented)
        os.close(master)  # unplug
        link.unlink()
        async with asyncio.timeout(3):
            fault = await events.get()
        assert isinstance(fault, DeviceFault) and fault.code is FaultCode.LINK_LOST
        await asyncio.sleep(0.2)  # reopen attempts fail meanwhile; one fault only
        assert events.pending() == 0
        master = plug()
        async with asyncio.timeout(3):
            recovered = await events.get()
        assert isinstance(recovered, DeviceRecovered) and recovered.code is FaultCode.LINK_LOST
        os.write(master, EXAMPLE * 2)
        async with asyncio.timeout(3):
            again = await events.get()
        assert isinstance(again, CardPresented) and again.uid == "0C0008A1B2"
    finally:
        await reader.close()
        os.close(master)


async def test_start_raises_for_a_missing_port() -> None:
    reader = Rdm6300Reader("rfid-125", "/dev/does-not-exist")
    with pytest.raises(DeviceError, match="cannot open /dev/does-not-exist"):
        await reader.start()


def test_simulator_rejects_uids_that_are_not_em4100() -> None:
    module = SimulatedRdm6300("/dev/null")
    with pytest.raises(ValueError, match="10 hex digits"):
        module.present("A1B2C3D4")
