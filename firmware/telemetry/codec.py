"""Payload encodings: JSON (default, what dashboards and Home Assistant read) or CBOR (constrained links)."""

from __future__ import annotations

import json
from typing import Any

import cbor2

from firmware import bounded_cbor, bounded_json

FORMATS = ("json", "cbor")
#: Deepest nesting of a received payload: a command nests one level (``{"amps": 16}``); the rest is room
#: for later commands, far below what could exhaust a recursion.
MAX_DEPTH = 8


class PayloadError(ValueError):
    """A payload that cannot be decoded; ``str()`` says why."""


def encode(value: Any, fmt: str) -> bytes:
    if fmt == "cbor":
        return cbor2.dumps(value, canonical=True)  # canonical: floats in the fewest bytes that keep them exact
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(data: bytes, fmt: str) -> Any:
    """Decode a received (untrusted) payload within explicit limits — nesting, numbers' size, lone
    surrogates, CBOR tags and declared lengths (:mod:`firmware.bounded_json`, :mod:`firmware.bounded_cbor`).
    NaN/Infinity in JSON are refused, not read as numbers. Raises :class:`PayloadError` and nothing else."""
    try:
        if fmt == "cbor":
            return bounded_cbor.loads(data, max_depth=MAX_DEPTH)
        return bounded_json.loads(data, max_depth=MAX_DEPTH)
    except (bounded_cbor.CborRejected, bounded_json.JsonRejected) as exc:
        raise PayloadError(str(exc)) from None
