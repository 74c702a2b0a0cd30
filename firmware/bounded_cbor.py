"""Decoding CBOR that came over a wire, with the limits checked before the decoder sees it.

``cbor2.loads`` decodes about forty tags into arbitrary Python objects — bignums of any size (``float()``
of one past 1024 bits raises ``OverflowError``), ``Decimal``, ``Fraction``, datetimes, compiled regular
expressions, e-mail messages, sets, and shared references that make a list contain itself. It returns
``undefined`` and unassigned simple values as objects of its own, nests up to its own 400 levels, and
silently ignores whatever follows the first item.

:func:`check` walks the item headers (RFC 8949 section 3) iteratively, decoding nothing, and refuses
what is not well-formed (reserved additional information, a break outside an indefinite-length item,
indefinite-length strings with chunks of another type, a map with a key and no value, truncation),
declared lengths beyond what is left of the input, nesting deeper than a limit, every tag but a leading
self-describe tag (55799), simple values other than false, true and null, and bytes after the item.
:func:`loads` then decodes with cbor2; what is left can only be integers of at most 64 bits, floats,
strings, byte strings, booleans, null, arrays and maps — and it checks that too. Every failure is
:class:`CborRejected` with a reason a log line can carry; nothing else is raised for any input.
"""

from __future__ import annotations

from typing import Any

import cbor2

#: Deepest nesting accepted by default (arrays, maps and indefinite-length strings each count a level).
MAX_DEPTH = 32
#: Largest integer accepted, in bits: what CBOR encodes without a bignum tag (major types 0 and 1).
MAX_INT_BITS = 64
_INT_LIMIT = 1 << MAX_INT_BITS  # major type 0 reaches 2**64 - 1, major type 1 -2**64
SELF_DESCRIBE = b"\xd9\xd9\xf7"  # tag 55799: "this is CBOR", a magic number, meaningless as a value
_BREAK = 0xFF
_SIMPLE_OK = (20, 21, 22)  # false, true, null
_FLOAT_WIDTH = {25: 2, 26: 4, 27: 8}


class CborRejected(ValueError):
    """The data is not CBOR this charger accepts; ``str()`` says why, in a few words."""


class NotCbor(CborRejected):
    """Not well-formed CBOR: truncated, reserved values, a misplaced break, bytes after the item."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not valid CBOR: {why}")


class LimitExceeded(CborRejected):
    """Well-formed as far as it was read, but beyond a limit: nesting, a tag, a simple value, an integer's size."""


class _Open:
    """A container still being read: items left (-1: indefinite length, up to a break), what it is."""

    __slots__ = ("chunks_of", "is_map", "items", "left")

    def __init__(self, left: int, *, is_map: bool = False, chunks_of: int = -1) -> None:
        self.left, self.is_map, self.chunks_of, self.items = left, is_map, chunks_of, 0


def _completed(stack: list[_Open]) -> bool:
    """One item finished inside the innermost open container; closes every definite container it completes.
    True when the top-level item is complete."""
    while stack:
        top = stack[-1]
        top.items += 1
        if top.left < 0:
            return False
        top.left -= 1
        if top.left:
            return False
        stack.pop()
    return True


def check(data: bytes, *, max_depth: int = MAX_DEPTH) -> int:
    """Check that ``data`` is exactly one acceptable CBOR item; return where it starts (after any leading
    self-describe tags). Raises :class:`NotCbor` or :class:`LimitExceeded`."""
    end = len(data)
    pos = 0
    while data.startswith(SELF_DESCRIBE, pos):
        pos += len(SELF_DESCRIBE)
    start = pos
    stack: list[_Open] = []
    while True:
        if pos >= end:
            raise NotCbor("empty" if end == start else f"truncated: ends inside an item at byte {pos}")
        at, initial = pos, data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if initial == _BREAK:
            if not stack or stack[-1].left >= 0:
                raise NotCbor(f"a break (0xff) outside an indefinite-length item at byte {at}")
            closed = stack.pop()
            if closed.is_map and closed.items % 2:
                raise NotCbor(f"a map with a key and no value, closed at byte {at}")
            if _completed(stack):
                break
            continue
        if stack and stack[-1].chunks_of >= 0 and (major != stack[-1].chunks_of or info == 31):
            raise NotCbor(f"an indefinite-length string holds something else than definite chunks of its type "
                          f"at byte {at}")
        if major == 7:
            if info in _FLOAT_WIDTH:
                pos += _FLOAT_WIDTH[info]
                if pos > end:
                    raise NotCbor("truncated: ends inside a float")
            elif info not in _SIMPLE_OK:
                if 28 <= info <= 30:
                    raise NotCbor(f"reserved additional information {info} at byte {at}")
                what = "undefined" if info == 23 else "a simple value"
                raise LimitExceeded(f"{what} at byte {at} (accepted: false, true, null)")
            if _completed(stack):
                break
            continue
        if 28 <= info <= 30:
            raise NotCbor(f"reserved additional information {info} at byte {at}")
        if info == 31:  # indefinite length
            if major in (0, 1, 6):
                raise NotCbor(f"indefinite length for major type {major} at byte {at}")
            stack.append(_Open(-1, is_map=major == 5, chunks_of=major if major in (2, 3) else -1))
            if len(stack) > max_depth:
                raise LimitExceeded(f"nested deeper than {max_depth} levels")
            continue
        if info < 24:
            argument = info
        else:
            width = 1 << (info - 24)
            if pos + width > end:
                raise NotCbor("truncated: ends inside an item's header")
            argument = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        if major == 6:
            raise LimitExceeded(f"tag {argument} at byte {at} (no tags are accepted)")
        if major in (2, 3):
            if argument > end - pos:
                raise NotCbor(f"a string declares {argument} bytes, {end - pos} are left")
            pos += argument
        elif major in (4, 5):
            count = argument * 2 if major == 5 else argument
            if count > end - pos:  # every item takes at least a byte
                raise NotCbor(f"{'a map' if major == 5 else 'an array'} declares {argument} entries, "
                              f"{end - pos} bytes are left")
            if count:
                stack.append(_Open(count, is_map=major == 5))
                if len(stack) > max_depth:
                    raise LimitExceeded(f"nested deeper than {max_depth} levels")
                continue
        if _completed(stack):
            break
    if pos != end:
        raise NotCbor(f"{end - pos} trailing byte(s) after the item")
    return start


def _check_decoded(value: Any) -> None:
    """What cbor2 made of checked input: only plain values, integers within ``MAX_INT_BITS`` (iterative;
    the depth was bounded by :func:`check`)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, bool | float | str | bytes) or item is None:
            continue
        if isinstance(item, int):
            if not -_INT_LIMIT <= item < _INT_LIMIT:
                raise LimitExceeded(f"an integer of {item.bit_length()} bits (at most {MAX_INT_BITS})")
        elif isinstance(item, list | tuple):  # a tuple: an array used as a map key
            pending.extend(item)
        elif isinstance(item, dict | cbor2.frozendict):  # a frozendict: a map used as a map key
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            raise LimitExceeded(f"decoded to an unexpected {type(item).__name__}")


def _reason(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = type(exc).__name__
    return text[:120].encode("utf-8", "backslashreplace").decode("utf-8")


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one CBOR item. Raises :class:`NotCbor` or :class:`LimitExceeded` (both :class:`CborRejected`)
    and nothing else."""
    data = bytes(data)
    start = check(data, max_depth=max_depth)
    try:
        value = cbor2.loads(data[start:])
    except Exception as exc:  # cbor2 raises several types; e.g. a text string that is not UTF-8
        raise NotCbor(_reason(exc)) from None
    _check_decoded(value)
    return value
