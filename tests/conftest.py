"""Shared fixtures: real pseudo-terminal wires for driver <-> simulated device tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sim.devices.serial_wire import SerialWire


@pytest.fixture
async def wire() -> AsyncIterator[SerialWire]:
    w = SerialWire(seed=1234)
    await w.start()
    try:
        yield w
    finally:
        w.close()
