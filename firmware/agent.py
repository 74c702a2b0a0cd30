"""The running agent: hardware up, every device event observed, clean shutdown on SIGTERM.

Until the session state machine and the OCPP client are wired in, the agent runs the hardware and
reports every device event as a structured log line, which is what a technician needs to see
when commissioning: pilot states, contactor feedback, meter readings, card taps, faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import Any

from firmware.config import AgentConfig
from firmware.hardware import ChargerHardware, build_hardware
from hal.events import EventStream

log = logging.getLogger("firmware.agent")


def _event_fields(event: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        fields = dataclasses.asdict(event)
        return {"event": type(event).__name__, **fields}
    return {"event": repr(event)}


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.hardware: ChargerHardware = build_hardware(config)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def _watch(self, stream: EventStream[Any]) -> None:
        with stream.subscribe() as sub:
            async for event in sub:
                log.info("device event", extra=_event_fields(event))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        for device in self.hardware.devices():
            self._tasks.append(asyncio.create_task(self._watch(device.events), name=f"watch-{device.name}"))
        log.info("agent starting", extra={"charge_point_id": self.config.charge_point_id,
                                          "connectors": len(self.hardware.connectors),
                                          "readers": len(self.hardware.readers)})
        await self.hardware.start()
        log.info("agent running")
        try:
            await self._stop.wait()
        finally:
            log.info("agent stopping")
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.hardware.close()
