"""Local control from the site's energy manager: current limits with a fail-safe, availability.

Site limits are one more limit source (``"site"``) in the agent's :class:`ChargingLimits`: the lowest
of OCPP smart charging, the site's limits and the rating wins. The energy manager must repeat its
limits (any valid limit command counts) at least every ``failsafe_timeout_s``; when it falls silent
the site's limits are replaced by ``failsafe_limit_a`` for the whole charger until it speaks again.
The fail-safe also applies from start-up until the first limit arrives: after a restart the charger
cannot know what the site can give now (docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from firmware.charger.external_limits import FAILSAFE, SITE
from firmware.charger.limit_applier import LimitApplier
from firmware.config import MqttConfig
from firmware.telemetry.commands import SetLimit

log = logging.getLogger(__name__)

__all__ = ["FAILSAFE", "SITE", "SiteControl"]


class SiteControl:
    def __init__(self, config: MqttConfig, applier: LimitApplier, on_event: Callable[[dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.applier = applier
        self.failsafe_active = False
        self._on_event = on_event
        self._clock = clock
        self._last_heard = clock()

    @property
    def failsafe_configured(self) -> bool:
        return self.config.failsafe_timeout_s is not None and self.config.failsafe_limit_a is not None

    def start(self) -> None:
        if self.failsafe_configured:
            self._engage("no limit from the energy manager since start-up")

    def set_limit(self, command: SetLimit) -> None:
        """Apply a validated limit (the energy manager spoke: the fail-safe, if engaged, is released)."""
        self._last_heard = self._clock()
        if self.failsafe_active:
            self.failsafe_active = False
            self.applier.clear_everywhere(FAILSAFE)
            log.info("site limit fail-safe released: the energy manager spoke again")
            self._on_event({"event": "failsafe_released"})
        if command.amps is None:
            self.applier.clear(SITE, command.connector)
        else:
            self.applier.set(SITE, command.amps, command.connector)

    def check(self) -> bool:
        """Engage the fail-safe if the energy manager has been silent too long; True if it was engaged now."""
        timeout = self.config.failsafe_timeout_s
        if timeout is None or self.failsafe_active or self._clock() - self._last_heard < timeout:
            return False
        self._engage(f"no limit from the energy manager for {timeout:g} s")
        return True

    def _engage(self, why: str) -> None:
        assert self.config.failsafe_limit_a is not None
        self.failsafe_active = True
        self.applier.clear_everywhere(SITE)
        self.applier.set(FAILSAFE, self.config.failsafe_limit_a)
        log.warning("site limit fail-safe engaged", extra={"reason": why, "amps": self.config.failsafe_limit_a})
        self._on_event({"event": "failsafe_engaged", "reason": why, "limit_a": self.config.failsafe_limit_a})

    async def watch(self) -> None:
        """The fail-safe's watchdog (checks ten times per timeout, at least every second)."""
        if self.config.failsafe_timeout_s is None:
            return
        period = min(self.config.failsafe_timeout_s / 10, 1.0)
        while True:
            await asyncio.sleep(period)
            self.check()
