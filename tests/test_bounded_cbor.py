"""firmware.bounded_cbor: every input decodes to plain values or is refused with CborRejected, never another
exception; what the header walk accepts, cbor2 decodes as it would have."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import bounded_cbor
from firmware.bounded_cbor import LimitExceeded, NotCbor, check, loads
from tests.mqtt_payloads import CBOR_PAYLOADS, head


@pytest.mark.parametrize("hex_data, value", [
    ("00", 0), ("17", 23), ("1818", 24), ("1bffffffffffffffff", 2**64 - 1), ("3bffffffffffffffff", -(2**64)),
    ("f4", False), ("f5", True), ("f6", None), ("f93c00", 1.0), ("fa47c35000", 100000.0), ("f98000", -0.0),
    ("6161", "a"), ("4161", b"a"), ("80", []), ("a0", {}), ("a164616d70730a", {"amps": 10}),
    ("9f0102ff", [1, 2]), ("9fff", []), ("bf6161f5ff", {"a": True}), ("5f41614162ff", b"ab"), ("7f6161ff", "a"),
    ("d9d9f7a164616d70730a", {"amps": 10}),  # a leading self-describe tag is a magic number: skipped
    ("d9d9f7d9d9f70a", 10), ("83010203", [1, 2, 3]), ("a1820102f6", {(1, 2): None}),
])
def test_plain_cbor_decodes(hex_data: str, value: Any) -> None:
    assert loads(bytes.fromhex(hex_data)) == value


@pytest.mark.parametrize("hex_data, why", [
    ("", "empty"), ("d9d9f7", "empty"), ("18", "truncated"), ("1b00", "truncated"), ("fa0000", "truncated"),
    ("62", "declares 2 bytes, 0 are left"), ("82", "declares 2 entries"), ("9f00", "truncated"), ("bf00", "truncated"),
    ("1c", "reserved"), ("fd", "reserved"), ("ff", "break"), ("8100ff", "trailing"), ("bf00ff", "key and no value"),
    ("5f01ff", "indefinite-length string"), ("5f6161ff", "indefinite-length string"),
    ("5f5fffff", "indefinite-length string"), ("1f", "indefinite length for major type 0"),
    ("df", "indefinite length for major type 6"),
    ("0a00", "1 trailing byte"), ("0aff", "trailing"), ("a164616d70730a0a", "trailing"),
    ("5bffffffffffffffff", "declares 18446744073709551615 bytes"), ("7a00010000", "declares 65536 bytes"),
    ("9bffffffffffffffff00", "declares 18446744073709551615 entries"), ("a2000000", "declares 2 entries"),
    ("62eda0", "not valid CBOR"), ("63eda080", "not valid CBOR"),  # not UTF-8 / a lone surrogate, in cbor2
])
def test_malformed_cbor_is_not_cbor(hex_data: str, why: str) -> None:
    with pytest.raises(NotCbor, match=why) as info:
        loads(bytes.fromhex(hex_data))
    assert str(info.value).startswith("not valid CBOR")


@pytest.mark.parametrize("hex_data, why", [
    ("c2410a", "tag 2"), ("c3590100" + "ff" * 256, "tag 3"),  # bignums: float() of one overflows
    ("c11a00000000", "tag 1"), ("c4820102", "tag 4"), ("c5821a7fffffff01", "tag 5"), ("d81c81d81d00", "tag 28"),
    ("d8236128", "tag 35"), ("d901028180", "tag 258"), ("a1d9d9f70a00", "tag 55799 at byte 1"),
    ("dbffffffffffffffff0a", "tag 18446744073709551615"),
    ("f7", "undefined"), ("f0", "simple value"), ("f820", "simple value"), ("f810", "simple value"),
    ("81" * 33 + "00", "deeper than 32"), ("9f" * 33 + "ff" * 33, "deeper than 32"), ("a100" * 33 + "00", "deeper"),
    ("5f" * 1, "truncated"),
])
def test_beyond_the_limits_is_refused(hex_data: str, why: str) -> None:
    with pytest.raises(bounded_cbor.CborRejected, match=why):
        loads(bytes.fromhex(hex_data))


def test_depth_limit_is_exact_and_adjustable() -> None:
    assert loads(b"\x81" * 32 + b"\x00") is not None
    assert loads(b"\x9f" * 32 + b"\xff" * 32) is not None
    with pytest.raises(LimitExceeded):
        loads(b"\x81" * 3 + b"\x00", max_depth=2)
    assert check(b"\x81\x81\x00", max_depth=2) == 0


def test_declared_lengths_are_checked_before_cbor2_allocates_anything() -> None:
    # an array of 2**32 - 1 entries in 5 bytes: refused by the walk, cbor2 never sees it
    with pytest.raises(NotCbor, match="declares 4294967295 entries, 0 bytes are left"):
        check(head(4, 2**32 - 1))


def _plain(value: Any) -> bool:
    """Values cbor2 encodes without tags or simple values (what loads returns unchanged)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**64) <= value < 2**64
    return value is None or isinstance(value, bool | float | str | bytes)


_PLAIN_KEYS = st.one_of(st.text(max_size=6), st.integers(-(2**64), 2**64 - 1), st.booleans(), st.none())
_PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(allow_nan=False),
              st.floats(width=16, allow_nan=False), st.text(max_size=8), st.binary(max_size=8)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_PLAIN_KEYS, children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_PLAIN, st.booleans())
def test_plain_values_round_trip(value: Any, canonical: bool) -> None:
    assert _plain(value)
    encoded = cbor2.dumps(value, canonical=canonical)
    assert loads(encoded) == value
    assert loads(b"\xd9\xd9\xf7" + encoded) == value


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), CBOR_PAYLOADS))
def test_any_input_decodes_to_plain_values_or_is_refused(data: bytes) -> None:
    try:
        value = loads(data)
    except bounded_cbor.CborRejected as exc:
        assert str(exc)
        str(exc).encode("utf-8")  # the reason can go into a log line and a reply
        return
    assert _plain_decoded(value)
    # what the walk accepted, cbor2 decodes exactly as alone (loads adds limits, never changes a value)
    start = check(data)
    assert _same(cbor2.loads(data[start:]), value)


def _plain_decoded(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_plain_decoded(v) for v in value)
    if isinstance(value, dict | cbor2.frozendict):
        return all(_plain_decoded(k) and _plain_decoded(v) for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**64) <= value < 2**64
    return value is None or isinstance(value, bool | float | str | bytes)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) or repr(a) == repr(b)  # NaN inside containers


@pytest.mark.parametrize("depth", [100, 399, 401, 1000, 100_000])
def test_deep_nesting_never_reaches_cbor2(depth: int) -> None:
    for prefix in (b"\x81", b"\x9f", b"\xa1\x00", b"\xd8\x1c", b"\x5f"):
        with pytest.raises(bounded_cbor.CborRejected):
            loads(prefix * depth + b"\x00")
