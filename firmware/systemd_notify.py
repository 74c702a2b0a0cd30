"""systemd's notify protocol (sd_notify), without a dependency: a datagram to ``$NOTIFY_SOCKET``.

The unit runs the agent with ``Type=notify`` and ``WatchdogSec=``: the agent says ``READY=1`` once it runs
(hardware up, connectors restored) and then ``WATCHDOG=1`` at half the interval systemd asks for
(``$WATCHDOG_USEC``). An agent whose event loop hangs stops pinging and systemd restarts it. Without
``$NOTIFY_SOCKET`` (not under systemd: tests, the simulator) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # '@' names a socket in the abstract namespace (a leading NUL byte on the wire)
        self.address: str | None = ("\0" + address[1:] if address.startswith("@") else address) or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval_s: float | None = (int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0
                                                  and watchdog_for_us else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state string (e.g. ``READY=1``); False if not under systemd or the send failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(state.encode(), self.address)
        except OSError as exc:  # the supervisor went away: nothing we can do but say so once in a while
            log.warning("sd_notify failed", extra={"state": state, "error": str(exc)})
            return False
        return True

    async def watchdog(self) -> None:
        """Ping the watchdog until cancelled (returns at once when systemd asked for none)."""
        if self.watchdog_interval_s is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)
