"""Our safety I/O board: protocol codec (COBS + CRC-32 + CBOR) and the host driver.

The board's microcontroller owns pilot PWM, pilot sensing and the contactor; the host talks to it
over a UART with the protocol specified in docs/ioboard-protocol.md. ``codec`` and ``messages``
are pure (the simulator imports them); the driver, which needs pyserial, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.ioboard.driver import IoBoard

__all__ = ["IoBoard"]


def __getattr__(name: str) -> Any:
    if name == "IoBoard":
        from hal.ioboard.driver import IoBoard

        return IoBoard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
