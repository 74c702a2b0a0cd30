"""Pn532Reader against SimulatedPn532 over a real pty pair, including line faults and chip faults, and the
simulated chip's InAutoPoll against a raw host port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

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
from hal.pn532.codec import (
    ACK_FRAME,
    ERROR_FRAME,
    HSU_WAKEUP,
    SAM_MODE_NORMAL,
    TFI_HOST_TO_PN532,
    AutoPollType,
    Command,
    FirmwareVersion,
    Frame,
    FrameDecoder,
    InformationFrame,
    build_command,
    parse_in_auto_poll,
)
from hal.serial_port import AsyncSerialPort
from sim.devices.pn532 import AutoPollEvent, SimulatedPn532
from sim.devices.serial_wire import Direction, SerialWire

MIFARE = AutoPollType.MIFARE


def fast_reader(port: str, *, absent_after: int = 2, autopoll_count: int = 1) -> Pn532Reader:
    """Short timings so the suite stays fast; ptys answer in well under a millisecond. The chip's own
    period cannot be shorter than 150 ms: an idle poll lasts ``autopoll_count`` x 150 ms."""
    return Pn532Reader("rfid-1", port, poll_interval_s=0.02, ack_timeout_s=0.05, answer_timeout_s=0.1,
                       fail_after=3, absent_after=absent_after, autopoll_count=autopoll_count)


@dataclass
class HostFrames:
    """Every frame the host sends, decoded off the wire (the simulated chip only records command codes)."""

    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    frames: list[Frame] = field(default_factory=list)

    def __call__(self, direction: Direction, data: bytes) -> None:
        if direction is Direction.TO_DEVICE:
            self.frames += self.decoder.feed(data)

    def autopolls(self) -> list[bytes]:
        """The parameters (PollNr, Period, types) of every InAutoPoll sent, in order."""
        return [f.params for f in self.frames
                if isinstance(f, InformationFrame) and f.tfi == TFI_HOST_TO_PN532 and f.code == Command.IN_AUTO_POLL]


@dataclass
class Rig:
    wire: SerialWire
    chip: SimulatedPn532
    reader: Pn532Reader
    events: Subscription[ReaderEvent]

    def polls(self) -> int:
        return self.chip.commands.count(Command.IN_AUTO_POLL)

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
    assert rig.chip.counters.extra["acks_received"] == 1  # the abort sent ahead of SAMConfiguration
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
    assert Command.IN_RELEASE in rig.chip.commands  # the targets are released after each read

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
        mark = len(chip.autopolls)
        chip.remove()  # card briefly out of the field for one poll (a flaky card, a HALTed tag)
        await wait_until(lambda: AutoPollEvent(answered=True) in chip.autopolls[mark:])
        chip.present("A1B2C3D4")
        polls = chip.commands.count(Command.IN_AUTO_POLL)
        await wait_until(lambda: chip.commands.count(Command.IN_AUTO_POLL) >= polls + 6)
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
    await rig.wait_polls(12, within=10)
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


@pytest.fixture
async def chip(wire: SerialWire) -> AsyncIterator[SimulatedPn532]:
    sim = SimulatedPn532(wire.device_port)
    await sim.start()
    try:
        yield sim
    finally:
        sim.close()


async def started_reader(wire: SerialWire, **kwargs: int) -> tuple[Pn532Reader, Subscription[ReaderEvent]]:
    reader = fast_reader(wire.host_port, **kwargs)
    events = reader.events.subscribe()
    await reader.start()
    return reader, events


async def test_idle_reader_leaves_the_polling_to_the_chip(wire: SerialWire, chip: SimulatedPn532) -> None:
    sent = HostFrames()
    wire.observers.append(sent)
    reader, _ = await started_reader(wire, autopoll_count=3)
    try:
        await wait_until(lambda: chip.autopolls.count(AutoPollEvent(answered=True)) >= 3)
    finally:
        await reader.close()
    # each InAutoPoll asks for PollNr 3 x 150 ms of type A polling, and is answered (empty) before the next
    assert set(sent.autopolls()) == {bytes([3, 1, MIFARE])}
    assert chip.autopolls[:6] == [AutoPollEvent(answered=False), AutoPollEvent(answered=True)] * 3
    assert Command.IN_RELEASE not in chip.commands
    assert chip.counters.extra.get("ignored_while_busy", 0) == 0
    assert reader.stats.timeouts == 0 and reader.stats.frames_dropped == 0


async def test_card_placed_during_a_poll_is_answered_by_that_poll(wire: SerialWire, chip: SimulatedPn532) -> None:
    reader, events = await started_reader(wire, autopoll_count=20)  # 3 s polls: the card comes well within
    try:
        await wait_until(lambda: chip.auto_polling)
        mark = len(chip.autopolls)
        chip.present("A1B2C3D4")
        async with asyncio.timeout(3):
            event = await events.get()
        assert isinstance(event, CardPresented) and event.uid == "A1B2C3D4"
        # the running poll found it at its next period: no new InAutoPoll was needed
        assert chip.autopolls[mark] == AutoPollEvent(answered=True, uid="A1B2C3D4")
    finally:
        await reader.close()


async def test_held_card_is_polled_one_period_at_a_time_and_its_removal_seen(
        wire: SerialWire, chip: SimulatedPn532) -> None:
    sent = HostFrames()
    wire.observers.append(sent)
    reader, events = await started_reader(wire, autopoll_count=4)
    try:
        chip.present("A1B2C3D4")
        async with asyncio.timeout(3):
            assert isinstance(await events.get(), CardPresented)
        await wait_until(lambda: chip.commands.count(Command.IN_AUTO_POLL) >= 4)
        held = len(sent.autopolls())
        chip.remove()
        await wait_until(lambda: reader.card_present is None)
        await wait_until(lambda: len(sent.autopolls()) > held + 2)
    finally:
        await reader.close()
    polls = sent.autopolls()
    assert polls[0] == bytes([4, 1, MIFARE])  # empty field: the long poll
    assert set(polls[1:held]) == {bytes([1, 1, MIFARE])}  # card there: one period, answered at once
    # gone: two empty one-period answers (absent_after), then the long poll again
    assert polls[held : held + 3] == [bytes([1, 1, MIFARE])] * 2 + [bytes([4, 1, MIFARE])]
    assert events.pending() == 0


async def test_close_aborts_the_poll_in_progress(wire: SerialWire, chip: SimulatedPn532) -> None:
    reader, _ = await started_reader(wire, autopoll_count=20)
    await wait_until(lambda: chip.auto_polling)
    await reader.close()
    await wait_until(lambda: not chip.auto_polling)
    assert chip.counters.extra["autopolls_aborted"] == 1
    assert AutoPollEvent(answered=True) not in chip.autopolls  # it ended by the abort, not by running out


async def test_start_aborts_a_poll_left_running_by_an_earlier_process(wire: SerialWire, chip: SimulatedPn532) -> None:
    """A process killed while its InAutoPoll ran leaves the chip polling (here for 254 x 2.25 s): the next
    one must abort it, as the chip takes no new command until then."""
    earlier = AsyncSerialPort(wire.host_port, 115200, name="earlier process", on_data=None)
    earlier.open()
    earlier.write(HSU_WAKEUP + build_command(Command.SAM_CONFIGURATION, bytes([SAM_MODE_NORMAL])))
    await wait_until(lambda: chip.sam_configured)
    earlier.write(build_command(Command.IN_AUTO_POLL, bytes([0xFE, 0x0F, MIFARE])))
    await wait_until(lambda: chip.auto_polling)
    earlier.close()
    reader, events = await started_reader(wire)
    try:
        assert chip.counters.extra["autopolls_aborted"] == 1
        assert chip.counters.extra.get("ignored_while_busy", 0) == 0
        assert reader.stats.timeouts == 0
        chip.present("A1B2C3D4")
        async with asyncio.timeout(3):
            assert isinstance(await events.get(), CardPresented)
    finally:
        await reader.close()


async def test_a_poll_whose_ack_is_lost_is_aborted_before_it_is_sent_again(
        wire: SerialWire, chip: SimulatedPn532) -> None:
    reader, events = await started_reader(wire, autopoll_count=2)
    armed = [True]

    def lose_the_next_autopoll_ack(direction: Direction, data: bytes) -> None:
        if direction is Direction.TO_DEVICE and armed and bytes([TFI_HOST_TO_PN532, Command.IN_AUTO_POLL]) in data:
            armed.clear()
            wire.truncate_next(Direction.TO_HOST, 1)  # the chip's next chunk is that command's ACK
    try:
        await wait_until(lambda: chip.auto_polling)
        wire.observers.append(lose_the_next_autopoll_ack)
        await wait_until(lambda: not armed and chip.counters.extra.get("autopolls_aborted", 0) >= 1)
        chip.present("A1B2C3D4")
        async with asyncio.timeout(3):
            event = await events.get()
        assert isinstance(event, CardPresented) and event.uid == "A1B2C3D4"
        assert reader.stats.timeouts == 1  # the missing ACK; the command sent again was acknowledged
        assert chip.counters.extra.get("ignored_while_busy", 0) == 0  # never a command to a busy chip
    finally:
        await reader.close()


# --- the simulated chip's InAutoPoll, against a raw host port ---------------------------------------------


@dataclass
class RawHost:
    """The host end of the wire without a driver: commands out, decoded frames in."""

    port: AsyncSerialPort
    inbox: asyncio.Queue[Frame]

    @classmethod
    async def open(cls, wire: SerialWire) -> RawHost:
        decoder, inbox = FrameDecoder(), asyncio.Queue[Frame]()

        def on_data(data: bytes) -> None:
            for frame in decoder.feed(data):
                inbox.put_nowait(frame)
        port = AsyncSerialPort(wire.host_port, 115200, name="raw host", on_data=on_data)
        port.open()
        return cls(port, inbox)

    async def frame(self, within: float = 3.0) -> Frame:
        async with asyncio.timeout(within):
            return await self.inbox.get()

    async def command(self, command: Command, params: bytes = b"") -> Frame:
        """Send ``command``; its ACK is checked; returns the next frame (the answer, if one comes)."""
        self.port.write(build_command(command, params))
        ack = await self.frame()
        assert ack == FrameDecoder().feed(ACK_FRAME)[0]
        return await self.frame()


@pytest.fixture
async def host(wire: SerialWire, chip: SimulatedPn532) -> AsyncIterator[RawHost]:
    raw = await RawHost.open(wire)
    raw.port.write(HSU_WAKEUP)
    await raw.command(Command.SAM_CONFIGURATION, bytes([SAM_MODE_NORMAL]))
    try:
        yield raw
    finally:
        raw.port.close()


def _autopoll_answer(frame: Frame) -> list[tuple[int, str | None]]:
    assert isinstance(frame, InformationFrame) and frame.code == Command.IN_AUTO_POLL + 1
    return [(t.type, t.target_a.uid_hex if t.target_a else None) for t in parse_in_auto_poll(frame.params)]


async def test_sim_answers_an_empty_field_after_every_period_has_run(host: RawHost, chip: SimulatedPn532) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await host.command(Command.IN_AUTO_POLL, bytes([2, 1, MIFARE, AutoPollType.FELICA_212]))
    assert _autopoll_answer(answer) == []
    assert loop.time() - started >= 2 * 2 * 0.150  # PollNr x types x Period x 150 ms (a lower bound only)


async def test_sim_finds_type_a_cards_for_the_type_a_types_only(host: RawHost, chip: SimulatedPn532) -> None:
    chip.present("04A1B2C3D4E5F6")
    # ISO/IEC 14443-4A and FeliCa polls do not find a MIFARE Ultralight; the generic 106 kbps one does
    types = [AutoPollType.ISO14443_4A_106, AutoPollType.FELICA_424, AutoPollType.GENERIC_PASSIVE_106]
    answer = await host.command(Command.IN_AUTO_POLL, bytes([1, 1, *types]))
    assert _autopoll_answer(answer) == [(MIFARE, "04A1B2C3D4E5F6")]
    answer = await host.command(Command.IN_AUTO_POLL, bytes([3, 1, AutoPollType.ISO14443_4A_106]))
    assert _autopoll_answer(answer) == []


@pytest.mark.parametrize("params", [b"", bytes([0, 1, MIFARE]), bytes([1, 0, MIFARE]), bytes([1, 16, MIFARE]),
                                    bytes([1, 1]), bytes([1, 1, 0x05]), bytes([1, 1, *[MIFARE] * 16])])
async def test_sim_answers_bad_autopoll_parameters_with_a_syntax_error(host: RawHost, params: bytes) -> None:
    answer = await host.command(Command.IN_AUTO_POLL, params)
    assert answer == FrameDecoder().feed(ERROR_FRAME)[0]


async def test_sim_takes_no_command_while_polling_until_the_host_aborts(host: RawHost,
                                                                          chip: SimulatedPn532) -> None:
    host.port.write(build_command(Command.IN_AUTO_POLL, bytes([0xFF, 1, MIFARE])))  # endless
    assert await host.frame() == FrameDecoder().feed(ACK_FRAME)[0]
    host.port.write(build_command(Command.GET_FIRMWARE_VERSION))
    await wait_until(lambda: chip.counters.extra.get("ignored_while_busy", 0) == 1)
    host.port.write(ACK_FRAME)
    await wait_until(lambda: not chip.auto_polling)
    answer = await host.command(Command.GET_FIRMWARE_VERSION)
    assert isinstance(answer, InformationFrame) and answer.code == Command.GET_FIRMWARE_VERSION + 1
    assert host.inbox.empty()  # the aborted poll never answered


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
