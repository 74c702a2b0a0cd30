"""The bounded queue of publishes waiting for the broker: telemetry must never grow without limit.

While the broker is away, publishes queue up to ``capacity``; beyond it the oldest are dropped and
counted. A message leaves the queue only once the broker took it (:meth:`done`), so one interrupted
by a disconnect is sent again after the reconnect (MQTT's at-least-once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True)
class BufferStats:
    queued: int
    dropped: int
    published: int


class PublishBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._queue: deque[Outgoing] = deque()
        self.dropped = 0
        self.published = 0

    def put(self, message: Outgoing) -> None:
        if len(self._queue) >= self.capacity:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)

    def head(self) -> Outgoing | None:
        return self._queue[0] if self._queue else None

    def done(self, message: Outgoing) -> None:
        """The broker took ``message`` (the head, unless it was dropped meanwhile)."""
        if self._queue and self._queue[0] is message:
            self._queue.popleft()
        self.published += 1

    def __len__(self) -> int:
        return len(self._queue)

    def stats(self) -> BufferStats:
        return BufferStats(queued=len(self._queue), dropped=self.dropped, published=self.published)
