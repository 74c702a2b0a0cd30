"""NXP PN532 NFC reader: frame codec (:mod:`hal.pn532.codec`) and HSU driver (:mod:`hal.pn532.driver`)."""

from hal.pn532.driver import Pn532LinkError, Pn532Reader

__all__ = ["Pn532LinkError", "Pn532Reader"]
