"""What the agent needs of an OCPP adapter (:mod:`firmware.ocpp.versions` picks the one ``[ocpp] version`` names).

The agent depends on :class:`OcppAdapter` only: OCPP 1.6 (:class:`~firmware.ocpp.v16.client.Ocpp16Client`) or
2.0.1 (:class:`~firmware.ocpp.v201.client.Ocpp201Client`), on the same charger layer. An adapter is a connector
observer (``record`` in the event's commit, ``notify`` after it), decides the session machine's settings its
configuration controls, and hands the agent its long-running loops to supervise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Protocol

from firmware.charger.connector import ConnectorController
from firmware.session import Effect, SessionConfig
from firmware.storage.outbox import OutboxStats
from hal.interfaces import MeterReading

#: Starts a worker of one CSMS connection: ``spawn(coro, name)`` (the agent's task supervisor).
Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


class OcppAdapter(Protocol):
    @property
    def online(self) -> bool:
        """Connected to the CSMS and accepted by it."""

    @property
    def response_timeout_s(self) -> float: ...

    def session_config(self, base: SessionConfig) -> SessionConfig:
        """``base`` (a connector's rating) with the settings this adapter's configuration controls."""

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The adapter's long-running loops by task name (the CSMS link, metering), for the task supervisor."""

    def outbox_stats(self) -> OutboxStats: ...

    def reset_retries(self) -> int:
        """How often a Hard reset whose reboot did not happen is asked again (1.6 ResetRetries, 2.0.1
        OCPPCommCtrlr.ResetRetries)."""

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None: ...

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None: ...

    async def close_orphaned_transactions(self) -> int:
        """After a restart: stop transactions the ledger has open that no connector holds."""

    async def drain(self, timeout_s: float) -> None:
        """Before the agent exits: let a delivery in flight finish."""

    async def close(self) -> None: ...
