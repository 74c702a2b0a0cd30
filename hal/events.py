"""Fan-out of device events to any number of independent consumers.

A driver publishes; the session state machine, telemetry and the self-test each subscribe and
read at their own pace. A slow consumer never blocks the driver: its queue is bounded and, when
full, the oldest event is dropped and counted (drivers also expose *current* state, so a consumer
that fell behind can resynchronise from it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One consumer's view of an :class:`EventStream`; iterate it with ``async for``."""

    def __init__(self, stream: EventStream[T], maxsize: int) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, event: T) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> T:
        return await self._queue.get()

    def get_nowait(self) -> T:
        """Return the next queued event or raise :class:`asyncio.QueueEmpty`."""
        return self._queue.get_nowait()

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._stream._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream(Generic[T]):
    """A publisher of events of type ``T``."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription[T]] = set()

    def subscribe(self, maxsize: int = 1000) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def publish(self, event: T) -> None:
        for sub in list(self._subscribers):
            sub._offer(event)
