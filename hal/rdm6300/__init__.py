"""RDM6300-style 125 kHz (EM4100) reader: ASCII frame codec and the listening driver.

The module only transmits, repeating the tag's frame while the tag is in the field. ``codec`` is pure:
the simulator imports it; the driver, which needs pyserial, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.rdm6300.driver import Rdm6300Reader

__all__ = ["Rdm6300Reader"]


def __getattr__(name: str) -> Any:
    if name == "Rdm6300Reader":
        from hal.rdm6300.driver import Rdm6300Reader

        return Rdm6300Reader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
