"""Decoding JSON that came over a wire, with the limits the standard library does not set.

``json.loads`` recurses once per nesting level, so 2,000 nested empty arrays — 4 KB — raise
``RecursionError``, which is not a ``ValueError`` and escapes every ``except JSONDecodeError``. It turns
any run of digits into an ``int``, and CPython refuses to convert more than 4,300 digits (``ValueError``
from deep inside the decoder); shorter ones still cost quadratic time. It accepts ``\\ud800`` escapes
that decode to a lone surrogate, a ``str`` that cannot be encoded again (SQLite, a log line or the
WebSocket would then fail far from the input). And it accepts ``NaN`` and ``Infinity``, which JSON does
not have.

:func:`loads` checks the nesting depth with a flat scan before parsing, bounds every number's length
while parsing, refuses lone surrogates after it, and turns every failure into :class:`JsonRejected`
with a reason a log line can carry. It never raises anything else for any input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

#: Deepest nesting accepted by default. OCPP 1.6's deepest message (SetChargingProfile) nests 6 levels
#: inside its frame; OCPP 2.0.1's DataTransfer ``data`` is free-form, hence the room.
MAX_DEPTH = 32
#: Longest number token accepted by default, in characters (a 64-bit integer has 20, a double's
#: shortest repr at most 24).
MAX_NUMBER_CHARS = 40

# A complete string (so brackets inside strings are not counted), or a bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonRejected(ValueError):
    """The text is not JSON this charger accepts; ``str()`` says why, in a few words."""


class NotJson(JsonRejected):
    """Not JSON at all: not UTF-8, or a syntax error."""


class LimitExceeded(JsonRejected):
    """Well-formed as far as it was read, but beyond a limit: nesting, a number's length, a lone surrogate."""


def nesting_depth(text: str, limit: int) -> int:
    """The deepest nesting of arrays and objects in ``text``, counting no further than ``limit + 1``."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def _bounded(convert: Callable[[str], Any], max_chars: int) -> Callable[[str], Any]:
    def parse(token: str) -> Any:
        if len(token) > max_chars:
            raise LimitExceeded(f"number of {len(token)} characters (at most {max_chars})")
        return convert(token)
    return parse


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON number")


def _has_lone_surrogate(value: Any, depth: int = 0) -> bool:
    """Depth is bounded by the scan before parsing, so this recursion is too."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_has_lone_surrogate(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k, depth + 1) or _has_lone_surrogate(v, depth + 1) for k, v in value.items())
    return False


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, max_number_chars: int = MAX_NUMBER_CHARS,
          parse_float: Callable[[str], Any] = float) -> Any:
    """Decode one JSON text (``bytes`` must be UTF-8). Raises :class:`NotJson` or :class:`LimitExceeded`
    (both :class:`JsonRejected`) and nothing else."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotJson(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if nesting_depth(text, max_depth) > max_depth:
        raise LimitExceeded(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=_bounded(int, max_number_chars),
                           parse_float=_bounded(parse_float, max_number_chars), parse_constant=_no_constant)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        raise NotJson(f"not valid JSON ({exc.msg} at {exc.pos})") from None
    except (ValueError, ArithmeticError, RecursionError, MemoryError) as exc:  # defence in depth: never escapes
        raise LimitExceeded(f"not decodable ({type(exc).__name__})") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise LimitExceeded("a string holds a lone UTF-16 surrogate (\\uD800-\\uDFFF not in a pair)")
    return value
