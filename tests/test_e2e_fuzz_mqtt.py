"""End to end: hostile MQTT commands against the agent as a real process, through a real mosquitto.

Hypothesis draws the commands (tests/mqtt_payloads.py: valid, nearly valid, malformed, deep, oversized,
binary, JSON and CBOR, and byte-level mutations of them) on every command topic; one agent per payload
format takes the whole batch while an EV charges on connector 2. Every command must be answered on
``<root>/reply`` (an exception in handling leaves it unanswered), the agent must log no ERROR, the
transaction must not end, and afterwards the agent must still apply a valid limit and run a full session.

``FUZZ_EXAMPLES`` is the number of commands (default 400, shared by the JSON and the CBOR agent);
``FUZZ_SEED`` replays a run with the same ``FUZZ_EXAMPLES`` (printed, and named in every failure).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.mqtt_broker import Mosquitto, Subscriber
from tests.mqtt_payloads import payloads, topic_suffixes
from tests.station import WAIT_S, Station
from tests.test_e2e_mqtt import ROOT, _offered_within, mqtt_section

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
SEED = int(os.environ.get("FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
#: Commands published before waiting for their replies: keeps the agent's publish buffer (1000) from
#: dropping replies however long the run.
WINDOW = 25
#: Commands drawn from hypothesis at a time (a long run is drawn batch by batch, the next while one is sent).
BATCH = 500
CARD, CARD2 = "04A1B2C3", "04D4E5F6"


def draw_commands(fmt: str, count: int, seed_value: int) -> list[tuple[str, bytes]]:
    """``count`` draws of (topic suffix, payload) from hypothesis's generator, reproducible from ``seed_value``,
    without repeats (order kept): hypothesis draws its simplest values (``null``, ``0``) often, and the
    hand-made hostile payloads are a finite list."""
    drawn: list[tuple[str, bytes]] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.tuples(topic_suffixes(connectors=2), payloads(fmt)))
    def collect(command: tuple[str, bytes]) -> None:
        drawn.append(command)

    collect()
    return list(dict.fromkeys(drawn))


class Commands:
    """Batches of commands not sent before, drawn in a separate process at low priority: the simulated
    devices share this process's event loop, and a draw in a thread here slows their answers enough for
    the agent's Modbus polls to time out (ERROR lines that have nothing to do with MQTT)."""

    def __init__(self, fmt: str, seed_value: int) -> None:
        self.fmt, self.seed = fmt, seed_value
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice,
                                        initargs=(10,))
        self.seen: set[int] = set()
        self.batches = 0

    def draw(self, wanted: int) -> asyncio.Future[list[tuple[str, bytes]]]:
        """The next batch: twice ``wanted`` draws (about half are repeats), from the next seed."""
        self.batches += 1
        return asyncio.get_running_loop().run_in_executor(
            self.pool, draw_commands, self.fmt, 2 * min(wanted, BATCH), self.seed + self.batches)

    def fresh(self, drawn: list[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
        """At most ``limit`` of ``drawn`` that were not sent before (remembered from now on)."""
        out = [command for command in drawn if hash(command) not in self.seen][:limit]
        self.seen.update(hash(command) for command in out)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _decode(payload: bytes, fmt: str) -> Any:
    return cbor2.loads(payload) if fmt == "cbor" else json.loads(payload)


class ReplyCounter:
    """Counts the agent's replies as the subscriber records them (incrementally: runs can be long)."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub, self.index, self.count = sub, sub.mark(), 0

    def update(self) -> int:
        seen = self.sub.seen
        while self.index < len(seen):
            self.count += seen[self.index].topic == f"{ROOT}/reply"
            self.index += 1
        return self.count

    async def wait(self, count: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.update() < count:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


class LogTail:
    """The agent's log lines written since it was made (read incrementally: runs can be long)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, path.stat().st_size

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode(errors="replace").splitlines()


def _scan(lines: list[str]) -> tuple[list[str], int]:
    """(bad lines, refusals): ERROR/CRITICAL lines and lines that are not JSON at all (a traceback printed
    past the logger); and how many commands were refused, each at WARNING as it must be."""
    bad, refused = [], 0
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(line)
            continue
        if not isinstance(record, dict) or record.get("level") in ("ERROR", "CRITICAL"):
            bad.append(line)
        elif record.get("msg") == "MQTT command rejected":
            refused += 1
            if record.get("level") != "WARNING":
                bad.append(line)
    return bad, refused


async def _command(em: Subscriber, fmt: str, suffix: str, payload: bytes) -> dict[str, Any]:
    """Publish one well-formed command and return the agent's reply to it."""
    mark = em.mark()
    topic = f"{ROOT}/cmd/{suffix}"
    await em.publish(topic, payload)
    reply = await em.wait_for(f"{ROOT}/reply", lambda m: _decode(m.payload, fmt)["topic"] == topic, since=mark)
    return dict(_decode(reply.payload, fmt))


async def _fuzz(tmp_path: Path, fmt: str, count: int, seed_value: int) -> None:
    commands = Commands(fmt, seed_value)
    drawing = commands.draw(count)  # meanwhile the station starts
    try:
        async with Mosquitto(tmp_path / "broker") as broker, \
                Subscriber(broker, f"{ROOT}/reply", f"{ROOT}/availability") as em, \
                Station(tmp_path, connectors=2, extra_config=mqtt_section(
                    broker, payload_format=fmt, local_availability=True)) as s:
            await _run(s, em, commands, drawing, fmt, count)
    finally:
        commands.close()


async def _run(s: Station, em: Subscriber, commands: Commands, drawing: asyncio.Future[list[tuple[str, bytes]]],
               fmt: str, count: int) -> None:
    await s.start_agent()
    await em.wait_for(f"{ROOT}/availability", lambda m: m.payload == b"online")
    await s.start_session(2, CARD2)  # a transaction runs through the whole batch
    tx_mark = s.mark()
    log = LogTail(s.log_path)
    replies = ReplyCounter(em)
    sent = rejected = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while sent < count:
        batch = commands.fresh(await drawing, count - sent)
        for _ in range(5):  # a draw can repeat what was sent (hypothesis favours its simplest values): draw again
            if batch:
                break
            batch = commands.fresh(await commands.draw(count - sent), count - sent)
        assert batch, "hypothesis drew no new commands in 6 draws"
        if sent + len(batch) < count:
            drawing = commands.draw(count - sent - len(batch))  # the next batch while this one is sent
        for start in range(0, len(batch), WINDOW):
            window = batch[start:start + WINDOW]
            for suffix, payload in window:
                await em.publish(f"{ROOT}/cmd/{suffix}", payload)
                sent += 1
            answered = await replies.wait(sent, timeout_s=WAIT_S)
            errors, refused = _scan(log.new_lines())
            rejected += refused
            if not answered or errors:  # fail at the window that did it, naming its commands
                raise AssertionError(
                    f"{sent - replies.count} of {sent} commands unanswered, agent running: {s.agent_running}, "
                    f"errors: {errors[:5]} (FUZZ_SEED={SEED}, {fmt}); this window's commands "
                    f"(topic suffix, payload hex): {[(t, p[:100].hex()) for t, p in window]}")
    print(f"MQTT fuzz ({fmt}): {sent} commands in {loop.time() - t0:.1f} s, {rejected} refused, "
          f"{sent - rejected} applied, FUZZ_SEED={SEED}")
    assert s.agent_running
    # the transaction went through it all: suspended or limited perhaps, never ended
    assert not s.calls("StopTransaction", tx_mark)
    # the site's state back to neutral: available, no limits
    null, ten = (b"\xf6", cbor2.dumps(10)) if fmt == "cbor" else (b"null", b"10")
    for suffix, payload in (("available", b"ON"), ("limit", null), ("connector/1/limit", null),
                            ("connector/2/limit", null)):
        reply = await _command(em, fmt, suffix, payload)
        assert reply["accepted"] is True, reply
    await _offered_within(s, 2, 32.0)
    # a valid limit still applies at once, and the session still ends as sessions do
    assert (await _command(em, fmt, "connector/2/limit", ten))["accepted"] is True
    await _offered_within(s, 2, 10.0)
    mark = s.mark()
    s.ev(2).unplug()
    await s.wait_call("StopTransaction", since=mark)
    await s.wait_status(2, "Available", since=mark)
    # and a full session from plug-in to stop on the other connector
    mark = s.mark()
    await s.start_session(1, CARD)
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["reason"] == "EVDisconnected"
    await s.wait_status(1, "Available", since=mark)
    assert not _scan(log.new_lines())[0]


@pytest.mark.timeout(EXAMPLES // 5 + 120)
async def test_fuzzed_json_commands_are_answered_and_the_agent_charges_on(tmp_path: Path) -> None:
    await _fuzz(tmp_path, "json", EXAMPLES - EXAMPLES // 2, SEED)


@pytest.mark.timeout(EXAMPLES // 5 + 120)
async def test_fuzzed_cbor_commands_are_answered_and_the_agent_charges_on(tmp_path: Path) -> None:
    await _fuzz(tmp_path, "cbor", EXAMPLES // 2, SEED + 1_000_000)
