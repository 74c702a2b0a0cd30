"""EVSE-DIN charge controller (Stegen Electronics, "SimpleEVSE-WB") on Modbus RTU: registers and driver.

The board generates the pilot PWM and switches its own relay; the host writes the offered current and
configuration bits and polls the status block. ``codec`` (register map, status decoding) is pure: the
simulator imports it; the driver, which needs the Modbus line, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.evse_din.driver import EvseDinBoard

__all__ = ["EvseDinBoard"]


def __getattr__(name: str) -> Any:
    if name == "EvseDinBoard":
        from hal.evse_din.driver import EvseDinBoard

        return EvseDinBoard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
