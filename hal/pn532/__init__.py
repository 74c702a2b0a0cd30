"""NXP PN532 NFC reader over HSU: frame codec and the polling driver.

``codec`` (frames, answers) is pure: the simulated chip imports it; the driver, which needs pyserial,
loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.pn532.driver import Pn532LinkError, Pn532Reader

__all__ = ["Pn532LinkError", "Pn532Reader"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hal.pn532 import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
