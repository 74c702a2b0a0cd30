"""Payload encodings: JSON (default, what dashboards and Home Assistant read) or CBOR (constrained links)."""

from __future__ import annotations

import json
from typing import Any

import cbor2

FORMATS = ("json", "cbor")


class PayloadError(ValueError):
    """A payload that cannot be decoded; ``str()`` says why."""


def _no_constants(name: str) -> Any:
    raise PayloadError(f"{name} is not a number")


def encode(value: Any, fmt: str) -> bytes:
    if fmt == "cbor":
        return cbor2.dumps(value, canonical=True)  # canonical: floats in the fewest bytes that keep them exact
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(data: bytes, fmt: str) -> Any:
    """Decode a received payload; NaN/Infinity in JSON are refused, not read as numbers."""
    if fmt == "cbor":
        try:
            return cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types for corrupt input
            raise PayloadError(f"not valid CBOR ({exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON ({exc.msg} at {exc.pos})") from None
