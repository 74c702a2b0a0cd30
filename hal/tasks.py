"""How a driver starts its background loops: ``spawn(coro, name=...)``, ``asyncio.create_task`` by default.

The agent passes its task supervisor's ``spawn`` instead, so that a driver loop that dies is noticed (and the
agent restarts, re-syncing the hardware) rather than leaving a device silently undriven; tests can inject a
fault into a loop through it. Drivers stay free of the agent: this protocol is all they know.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol


class Spawn(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...


def create_task(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """The default :class:`Spawn`: a plain task (tools, tests, the simulator)."""
    return asyncio.create_task(coro, name=name)
