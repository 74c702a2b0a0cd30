"""MinimumStatusDuration: a status is reported once it has lasted that long; the latest one wins."""

from __future__ import annotations

import asyncio
from typing import Any

from firmware.ocpp.v16.status_hold import StatusHold


def status(connector: int, value: str) -> dict[str, Any]:
    return {"connectorId": connector, "status": value, "errorCode": "NoError"}


async def test_zero_reports_at_once() -> None:
    reported: list[dict[str, Any]] = []
    hold = StatusHold(reported.append)
    hold.offer(status(1, "Preparing"), 0)
    assert reported == [status(1, "Preparing")] and hold.waiting == 0


async def test_a_status_is_reported_after_it_lasted_the_minimum_duration() -> None:
    reported: list[dict[str, Any]] = []
    hold = StatusHold(reported.append)
    hold.offer(status(1, "Preparing"), 0.1)
    await asyncio.sleep(0.05)
    assert reported == []
    await asyncio.sleep(0.1)
    assert reported == [status(1, "Preparing")]


async def test_a_shorter_status_is_never_reported_the_latest_wins() -> None:
    reported: list[dict[str, Any]] = []
    hold = StatusHold(reported.append)
    hold.offer(status(1, "SuspendedEV"), 0.1)
    await asyncio.sleep(0.05)
    hold.offer(status(1, "Charging"), 0.1)  # SuspendedEV lasted 50 ms: dropped
    hold.offer(status(2, "Preparing"), 0.1)  # another connector is held on its own
    await asyncio.sleep(0.15)
    assert reported == [status(1, "Charging"), status(2, "Preparing")]


async def test_clear_forgets_waiting_statuses() -> None:
    reported: list[dict[str, Any]] = []
    hold = StatusHold(reported.append)
    hold.offer(status(1, "Faulted"), 0.05)
    hold.clear()
    await asyncio.sleep(0.1)
    assert reported == [] and hold.waiting == 0
