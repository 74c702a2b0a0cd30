"""parse_command on hostile input: every payload on every topic is a valid Command or a Rejected with a reason
that a log line and a reply can carry — never an exception (issue 16: untrusted input never escapes its
parser). Valid and ordinary bad commands are in tests/test_telemetry.py."""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.telemetry import payloads as telemetry_payloads
from firmware.telemetry.codec import encode
from firmware.telemetry.commands import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandRules,
    Rejected,
    SetAvailability,
    SetLimit,
    parse_command,
)
from firmware.telemetry.topics import Topics
from hal.interfaces import utcnow
from tests.mqtt_payloads import payloads, topic_suffixes

T = Topics("evse", "CP-1")
RATINGS = {1: 32.0, 2: 16.0}
RULES = {fmt: CommandRules(RATINGS, fmt, site_limits=True, local_availability=True) for fmt in ("json", "cbor")}


def _parse(suffix: str, payload: bytes, fmt: str) -> Command | Rejected:
    """parse_command, and the checks every result must pass: a Rejected's reason goes into a log line
    and a reply in either encoding; a SetLimit is within the connector's (or the charger's) rating."""
    topic = T.command_prefix + suffix
    result = parse_command(topic, payload, T, RULES[fmt])
    if isinstance(result, Rejected):
        assert result.topic == topic and result.reason
        json.dumps({"reason": result.reason}, ensure_ascii=False).encode("utf-8")
        for out in ("json", "cbor"):
            encode(telemetry_payloads.reply(topic, False, result.reason, utcnow()), out)
    elif isinstance(result, SetLimit):
        top = RATINGS[result.connector] if result.connector is not None else sum(RATINGS.values())
        assert result.amps is None or (type(result.amps) is float and math.isfinite(result.amps)
                                       and 0.0 <= result.amps <= top and math.copysign(1, result.amps) == 1)
    else:
        assert isinstance(result, SetAvailability) and isinstance(result.operative, bool)
    return result


@settings(max_examples=400, deadline=None)
@given(topic_suffixes(connectors=2), payloads("json"))
def test_any_json_command_is_parsed_or_refused(suffix: str, payload: bytes) -> None:
    _parse(suffix, payload, "json")


@settings(max_examples=400, deadline=None)
@given(topic_suffixes(connectors=2), payloads("cbor"))
def test_any_cbor_command_is_parsed_or_refused(suffix: str, payload: bytes) -> None:
    _parse(suffix, payload, "cbor")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["limit", "available", "connector/1/limit", "connector/2/available"]),
       st.binary(max_size=MAX_PAYLOAD_BYTES + 8), st.sampled_from(["json", "cbor"]))
def test_random_bytes_are_parsed_or_refused(suffix: str, payload: bytes, fmt: str) -> None:
    _parse(suffix, payload, fmt)


_ANY_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**63, 2**4000), st.floats(), st.text(),
              st.binary(max_size=8)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.one_of(st.text(max_size=8), st.just("amps"), st.just("operative"), st.integers()), children, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["limit", "connector/1/limit", "available", "connector/2/available"]),
       st.one_of(_ANY_VALUE, st.builds(lambda v: {"amps": v}, _ANY_VALUE),
                 st.builds(lambda v: {"operative": v}, _ANY_VALUE)))
def test_any_cbor_value_is_parsed_or_refused(suffix: str, value: Any) -> None:
    _parse(suffix, cbor2.dumps(value), "cbor")
    try:
        text = json.dumps(value, default=repr).encode()  # NaN, Infinity, bytes as text: what a sloppy sender writes
    except ValueError:  # an int past 4,300 digits
        return
    _parse(suffix, text, "json")


@pytest.mark.parametrize("fmt, opener, inner, closer", [
    ("json", b"[", b"16", b"]"), ("json", b'{"amps":', b"16", b"}"),
    ("cbor", b"\x81", b"\x10", b""), ("cbor", b"\x9f", b"\x10", b"\xff"), ("cbor", b"\xa1\x64amps", b"\x10", b""),
])
@pytest.mark.parametrize("depth", [2, 8, 9, 100, 333, 511, 512, 1000, 1023, 1024, 5000])
def test_deep_nesting_is_refused_with_a_reason(fmt: str, opener: bytes, inner: bytes, closer: bytes,
                                               depth: int) -> None:
    unclosed = _parse("connector/1/limit", opener * depth, fmt)
    assert isinstance(unclosed, Rejected)
    closed = opener * depth + inner + closer * depth
    result = _parse("connector/1/limit", closed, fmt)
    assert isinstance(result, Rejected)
    if len(closed) <= MAX_PAYLOAD_BYTES and depth > 8:
        assert "nested deeper than 8 levels" in result.reason, result


@pytest.mark.parametrize("fmt, payload, reason", [
    # json.loads recursed into RecursionError, which escaped the parser
    ("json", b"[" * MAX_PAYLOAD_BYTES, "nested deeper than 8 levels"),
    # a 400-digit integer: float() raised OverflowError; one of 5,000 digits: int() raised ValueError
    ("json", b"9" * 400, "number of 400 characters"),
    ("json", b'{"amps": -' + b"9" * 1000 + b"}", "number of 1001 characters"),
    ("json", b'"\\ud800"', "lone UTF-16 surrogate"),
    ("json", b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
    ("json", b'{"amps": 1e999}', "expected a finite number"),
    ("json", b"Infinity", "Infinity is not a JSON number"),
    # CBOR bignums: float() of one past 1024 bits raised OverflowError
    ("cbor", b"\xc2\x59\x01\x00" + b"\xff" * 256, "tag 2"),
    ("cbor", b"\xa1\x64amps\xc3\x58\x81" + b"\x01" * 129, "tag 3"),
    ("cbor", b"\xf7", "undefined"),
    ("cbor", b"\xf9\x7e\x00", "expected a finite number; got nan"),  # a half-float NaN
    ("cbor", b"\xfa\xff\x80\x00\x00", "expected a finite number; got -inf"),
    ("cbor", b"\x0a\x0a", "trailing byte"),  # cbor2 alone read 10 and ignored the rest
    ("cbor", b"\x9b" + b"\xff" * 8, "declares 18446744073709551615 entries"),
    ("cbor", b"\xd8\x1c\x81\xd8\x1d\x00", "tag 28"),  # a list containing itself
    ("cbor", b"\x62\xed\xa0", "not valid CBOR"),  # a lone surrogate in UTF-8
    ("cbor", b"\xa1\x80\x0a", "exactly the key 'amps'; got keys [()]"),  # an array as a map key
    ("cbor", b"\xa2\x64amps\x0a\xf9\x7e\x00\x00", "got keys ['amps', nan]"),
    ("cbor", b"\x3b" + b"\xff" * 8, "got -18446744073709551616 (negative)"),
    ("cbor", b"\x1b" + b"\xff" * 8, "got 18446744073709551615"),
])
def test_what_used_to_escape_or_slip_through_is_refused(fmt: str, payload: bytes, reason: str) -> None:
    result = _parse("connector/1/limit", payload, fmt)
    assert isinstance(result, Rejected) and reason in result.reason, result


def test_odd_but_valid_encodings_are_accepted() -> None:
    assert _parse("connector/1/limit", b"\xd9\xd9\xf7\xa1\x64amps\x0a", "cbor") == SetLimit(1, 10.0)  # self-describe
    assert _parse("connector/1/limit", b"\xbf\x64amps\xf9\x4c\x00\xff", "cbor") == SetLimit(1, 16.0)  # indefinite map
    assert _parse("limit", b"\xf9\x80\x00", "cbor") == SetLimit(None, 0.0)  # -0.0 is 0 A, not a negative limit
    assert _parse("limit", b"-0", "json") == SetLimit(None, 0.0)
    assert _parse("connector/2/available", b" OFF\n", "cbor") == SetAvailability(2, False)
