"""RDM6300-style 125 kHz (EM4100) frames: the ASCII frame the module sends, decoded; pure, no I/O.

Frame (14 bytes, 9600 8N1)::

    02 | D0 D1 .. D9 | C0 C1 | 03
    STX  10 ASCII hex digits: 2 for the version/customer byte, 8 for the 32-bit tag id
         2 ASCII hex digits: XOR of the 5 data bytes
                                 ETX

UID: the 10 hex digits, upper-case (all 40 bits the tag carries, so two tags that differ only in
the version byte stay distinct). Cards are often printed with the last 8 digits as a 10-digit
decimal number (``int(uid[2:], 16)``, e.g. ``0C0008A1B2`` -> ``0000565682``); :func:`card_number`
gives it for display or for mapping to such printed ids.

Used by :mod:`hal.rdm6300.driver` and by the simulated module in ``sim/``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

STX = 0x02
ETX = 0x03
FRAME_LENGTH = 14  # STX + 10 data digits + 2 checksum digits + ETX
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")


def checksum(data: bytes) -> int:
    """XOR of the data bytes (the 5 bytes the 10 hex digits stand for)."""
    value = 0
    for b in data:
        value ^= b
    return value


def encode_frame(uid: str) -> bytes:
    """The frame a module sends for the tag whose UID is ``uid`` (10 hex digits)."""
    data = parse_tag_uid(uid)
    return bytes([STX]) + data.hex().upper().encode() + f"{checksum(data):02X}".encode() + bytes([ETX])


def parse_tag_uid(uid: str) -> bytes:
    """The 5 bytes of an EM4100 UID given as 10 hex digits; ValueError otherwise."""
    if len(uid) != 10:
        raise ValueError(f"EM4100 UID {uid!r} must be 10 hex digits (version byte + 32-bit id)")
    try:
        return bytes.fromhex(uid)
    except ValueError as exc:
        raise ValueError(f"EM4100 UID {uid!r} is not hex") from exc


def card_number(uid: str) -> str:
    """The decimal number often printed on 125 kHz cards: the last 8 hex digits, 10 decimal digits."""
    return f"{int(uid[2:], 16):010d}"


@dataclass(frozen=True)
class Rdm6300Frame:
    data: bytes  # the 5 bytes: version/customer byte + 32-bit tag id

    @property
    def uid(self) -> str:
        return self.data.hex().upper()


class DropReason(StrEnum):
    NOISE = "noise"  # bytes outside STX..ETX
    WRONG_LENGTH = "wrong_length"  # a new STX before the frame was complete: it was cut short
    MISSING_ETX = "missing_etx"
    NON_HEX = "non_hex"
    BAD_CHECKSUM = "bad_checksum"


@dataclass
class Rdm6300Decoder:
    """Incremental decoder: feed bytes in any chunks, get the valid frames; bad ones are dropped and
    counted (``dropped``, by reason in ``reasons``), and decoding resumes at the next STX."""

    dropped: int = 0
    reasons: Counter[DropReason] = field(default_factory=Counter)
    _buf: bytearray = field(default_factory=bytearray)
    _in_noise: bool = False

    def _drop(self, reason: DropReason) -> None:
        self.dropped += 1
        self.reasons[reason] += 1

    def _discard(self, n: int) -> None:
        if n <= 0:
            return
        if not self._in_noise:
            self._in_noise = True
            self._drop(DropReason.NOISE)
        del self._buf[:n]

    def _reject(self, reason: DropReason, n: int) -> None:
        self._drop(reason)
        del self._buf[:n]
        self._in_noise = True  # what follows up to the next STX belongs to this bad frame

    def feed(self, data: bytes) -> list[Rdm6300Frame]:
        self._buf.extend(data)
        frames: list[Rdm6300Frame] = []
        while True:
            start = self._buf.find(STX)
            if start < 0:
                self._discard(len(self._buf))
                return frames
            self._discard(start)
            next_stx = self._buf.find(STX, 1, FRAME_LENGTH)
            if next_stx > 0:
                self._reject(DropReason.WRONG_LENGTH, next_stx)
                continue
            if len(self._buf) < FRAME_LENGTH:
                return frames
            frame = bytes(self._buf[:FRAME_LENGTH])
            if frame[-1] != ETX:
                self._reject(DropReason.MISSING_ETX, 1)
                continue
            digits = frame[1:-1]
            if not all(b in _HEX_DIGITS for b in digits):
                self._reject(DropReason.NON_HEX, FRAME_LENGTH)
                continue
            payload = bytes.fromhex(digits[:10].decode())
            if checksum(payload) != int(digits[10:], 16):
                self._reject(DropReason.BAD_CHECKSUM, FRAME_LENGTH)
                continue
            del self._buf[:FRAME_LENGTH]
            self._in_noise = False
            frames.append(Rdm6300Frame(payload))
