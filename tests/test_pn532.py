"""Pn532Reader against SimulatedPn532 over a real pty pair, including line faults and chip faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

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
from hal.pn532 import Pn532Reader
from hal.pn532.codec import Command, FirmwareVersion
from sim.devices.pn532 import SimulatedPn532
from sim.devices.serial_wire import Direction, SerialWire


def fast_reader(port: str, *, absent_after: int = 2) -> Pn532Reader:
    """Short timings so the suite stays fast; ptys answer in well under a millisecond."""
    return Pn532Reader("rfid-1", port, poll_interval_s=0.02, ack_timeout_s=0.05, answer_timeout_s=0.1,
                       fail_after=3, absent_after=absent_after)


@dataclass
class Rig:
    wire: SerialWire
    chip: SimulatedPn532
    reader: Pn532Reader
    events: Subscription[ReaderEvent]

    def polls(self) -> int:
        return self.chip.commands.count(Command.IN_LIST_PASSIVE_TARGET)

    async def next_event(self, within: float = 3.0) -> ReaderEvent:
        async with asyncio.timeout(within):
            return await self.events.get()

    async def wait_polls(self, n: int, within: float = 3.0) -> None:
        target = self.polls() + n
        await wait_until(lambda: self.polls() >= target, within)


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
    chip = SimulatedPn532(wire.device_port)
    await chip.start()
    reader = fast_reader(wire.host_port)
    events = reader.events.subscribe()
    await reader.start()
    try:
        yield Rig(wire, chip, reader, events)
    finally:
        await reader.close()
        chip.close()


async def test_start_wakes_configures_and_identifies_the_chip(rig: Rig) -> None:
    assert isinstance(rig.reader, IdReader)
    assert rig.chip.commands[:3] == [Command.SAM_CONFIGURATION, Command.GET_FIRMWARE_VERSION,
                                     Command.RF_CONFIGURATION]
    assert rig.chip.counters.extra["wakeups"] == 1
    assert rig.chip.counters.bad_frames == 0  # the wake-up only cost preamble filler
    assert rig.reader.stats.timeouts == 0  # ... so the first command was acknowledged at once
    assert rig.reader.firmware == FirmwareVersion(0x32, 1, 6, 7)
    assert rig.chip.passive_activation_retries == 0x02  # no infinite wait for a card


async def test_card_held_is_reported_once_and_again_after_removal(rig: Rig) -> None:
    rig.chip.present("A1B2C3D4")
    event = await rig.next_event()
    assert isinstance(event, CardPresented)
    assert (event.device, event.uid, event.technology) == ("rfid-1", "A1B2C3D4", CardTechnology.ISO14443A)
    await rig.wait_polls(15)  # held for 15 more polls: still one presentation
    assert rig.events.pending() == 0
    assert Command.IN_RELEASE in rig.chip.commands  # the target is released after each read

    rig.chip.remove()
    await wait_until(lambda: rig.reader.card_present is None)
    assert rig.events.pending() == 0
    rig.chip.present("A1B2C3D4")
    again = await rig.next_event()
    assert isinstance(again, CardPresented) and again.uid == "A1B2C3D4"


async def test_seven_byte_uid_and_card_swap_without_gap(rig: Rig) -> None:
    rig.chip.present("04a1b2c3d4e5f6")
    first = await rig.next_event()
    assert isinstance(first, CardPresented) and first.uid == "04A1B2C3D4E5F6"
    rig.chip.present("11223344")  # another card straight away: a new presentation
    second = await rig.next_event()
    assert isinstance(second, CardPresented) and second.uid == "11223344"
    await rig.wait_polls(5)
    assert rig.events.pending() == 0


async def test_a_single_missed_poll_does_not_end_a_presentation(wire: SerialWire) -> None:
    chip = SimulatedPn532(wire.device_port)
    await chip.start()
    reader = fast_reader(wire.host_port, absent_after=3)
    events = reader.events.subscribe()
    await reader.start()
    try:
        chip.present("A1B2C3D4")
        async with asyncio.timeout(3):
            assert isinstance(await events.get(), CardPresented)
        polls = chip.commands.count(Command.IN_LIST_PASSIVE_TARGET)
        chip.remove()  # card briefly out of the field for ~1 poll (a flaky card, a HALTed tag)
        await wait_until(lambda: chip.commands.count(Command.IN_LIST_PASSIVE_TARGET) >= polls + 1)
        chip.present("A1B2C3D4")
        await wait_until(lambda: chip.commands.count(Command.IN_LIST_PASSIVE_TARGET) >= polls + 6)
        assert events.pending() == 0
    finally:
        await reader.close()
        chip.close()


async def test_garbage_towards_the_host_is_dropped_and_the_next_card_read(rig: Rig) -> None:
    for _ in range(5):
        rig.wire.inject_garbage(Direction.TO_HOST, 40)
        await rig.wait_polls(1)
    await rig.wait_polls(2)
    assert rig.reader.stats.frames_dropped > 0
    rig.chip.present("DEADBEEF")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "DEADBEEF"
    assert rig.reader.link_lost is False


async def test_truncated_answers_are_dropped_and_the_next_card_read(rig: Rig) -> None:
    rig.chip.present("CAFEBABE")
    rig.wire.truncate_next(Direction.TO_HOST, 4)
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "CAFEBABE"
    assert rig.reader.stats.frames_dropped + rig.reader.stats.timeouts > 0
    assert rig.events.pending() == 0


async def test_corrupt_command_is_ignored_by_the_chip_and_sent_again(rig: Rig) -> None:
    timeouts = rig.reader.stats.timeouts
    rig.wire.truncate_next(Direction.TO_DEVICE, 1)
    await wait_until(lambda: rig.chip.counters.bad_frames >= 1)
    assert rig.reader.stats.timeouts > timeouts  # no ACK came, the host sent the command again
    rig.chip.present("0A0B0C0D")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "0A0B0C0D"


async def test_corrupt_answer_is_fetched_again_with_a_nack(rig: Rig) -> None:
    rig.chip.present("A1B2C3D4")
    rig.chip.corrupt_next_answers(1)
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "A1B2C3D4"
    assert rig.chip.counters.extra["nacks_received"] == 1
    assert rig.chip.counters.extra["answers_repeated"] == 1
    assert rig.reader.stats.frames_dropped == 1
    assert rig.reader.stats.timeouts == 0  # the NACK got the answer without waiting out a timeout


async def test_bit_noise_both_ways_then_clean_line_reads_the_card(rig: Rig) -> None:
    rig.wire.set_noise(Direction.TO_DEVICE, 0.02)
    rig.wire.set_noise(Direction.TO_HOST, 0.02)
    await rig.wait_polls(20, within=10)
    rig.wire.clear_faults()
    assert rig.reader.stats.frames_dropped + rig.chip.counters.bad_frames > 0
    rig.chip.present("04A1B2C3D4E5F6")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "04A1B2C3D4E5F6"


async def test_silent_chip_raises_link_lost_once_then_recovers(rig: Rig) -> None:
    rig.chip.set_silent(True)
    fault = await rig.next_event()
    assert isinstance(fault, DeviceFault) and fault.code is FaultCode.LINK_LOST
    assert "no answer" in fault.detail
    assert rig.reader.link_lost
    await asyncio.sleep(0.5)  # still silent: no second fault
    assert rig.events.pending() == 0

    sam_before = rig.chip.commands.count(Command.SAM_CONFIGURATION)
    rig.chip.set_silent(False)
    recovered = await rig.next_event()
    assert isinstance(recovered, DeviceRecovered) and recovered.code is FaultCode.LINK_LOST
    assert rig.chip.commands.count(Command.SAM_CONFIGURATION) > sam_before  # init sequence re-run
    rig.chip.present("A1B2C3D4")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "A1B2C3D4"


async def test_power_cycled_chip_is_woken_and_configured_again(rig: Rig) -> None:
    rig.chip.power_cycle()
    await wait_until(lambda: rig.chip.counters.extra["wakeups"] == 2 and rig.chip.sam_configured)
    rig.chip.present("A1B2C3D4")
    event = await rig.next_event()
    assert isinstance(event, CardPresented) and event.uid == "A1B2C3D4"
    assert rig.reader.link_lost is False


async def test_start_raises_when_no_chip_answers(wire: SerialWire) -> None:
    chip = SimulatedPn532(wire.device_port)
    await chip.start()
    chip.set_silent(True)
    reader = fast_reader(wire.host_port)
    try:
        with pytest.raises(DeviceError, match="no answer to SAM_CONFIGURATION"):
            await reader.start()
        assert reader.stats.timeouts == 3
    finally:
        await reader.close()
        chip.close()


async def test_start_raises_for_a_missing_port() -> None:
    reader = fast_reader("/dev/does-not-exist")
    with pytest.raises(DeviceError, match="cannot open /dev/does-not-exist"):
        await reader.start()


def test_simulator_rejects_impossible_uids() -> None:
    chip = SimulatedPn532("/dev/null")
    with pytest.raises(ValueError, match="4, 7 or 10"):
        chip.present("A1B2C3")
    with pytest.raises(ValueError, match="not hex"):
        chip.present("ZZB2C3D4")
