"""firmware.bounded_json: every input decodes or is refused with JsonRejected, never another exception."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import bounded_json
from firmware.bounded_json import LimitExceeded, NotJson, loads, nesting_depth


def test_deep_nesting_is_refused_before_parsing() -> None:
    frame = "[" * 2000 + "]" * 2000  # 4,000 bytes: json.loads alone raises RecursionError
    with pytest.raises(LimitExceeded, match="deeper than 32"):
        loads(frame)
    assert loads("[" * 32 + "]" * 32) is not None


def test_brackets_inside_strings_do_not_count() -> None:
    assert nesting_depth('["[[[[", {"k": "]]]{{"}]', 10) == 2
    assert loads('["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"["]') == ["[" * 38 + '"[']


def test_numbers_beyond_their_length_are_refused() -> None:
    with pytest.raises(LimitExceeded, match="number of 5000 characters"):
        loads("[" + "9" * 5000 + "]")  # int() alone raises ValueError past 4,300 digits
    with pytest.raises(LimitExceeded):
        loads('{"a": 1.' + "5" * 100 + "}")
    assert loads('{"a": 12345678901234567890, "b": 1.5e300}') == {"a": 12345678901234567890, "b": 1.5e300}
    assert loads('{"a": 0.1}', parse_float=Decimal) == {"a": Decimal("0.1")}


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "[-Infinity]", "[1,", "", "\x00", '"\\x"'])
def test_not_json(text: str) -> None:
    with pytest.raises(NotJson):
        loads(text)


def test_invalid_utf8_and_lone_surrogates() -> None:
    with pytest.raises(NotJson, match="not UTF-8"):
        loads(b'["\xff"]')
    with pytest.raises(LimitExceeded, match="surrogate"):
        loads('["\\ud800"]')
    with pytest.raises(LimitExceeded, match="surrogate"):
        loads('{"\\udc00": 1}')
    assert loads('["\\ud83d\\ude00"]') == ["\U0001f600"]  # a pair is one character


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.text(alphabet='[]{}",:0123456789.eE-\\u tfnrl')))
def test_any_input_decodes_or_is_refused(data: str | bytes) -> None:
    try:
        value = loads(data)
    except bounded_json.JsonRejected:
        return
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # what was accepted can be written again
