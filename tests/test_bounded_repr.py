"""hal.bounded_repr: any value a wire can carry is shown short and printable, never an exception."""

from __future__ import annotations

from hal.bounded_repr import bounded_repr


def test_values_that_break_repr_or_a_log_line() -> None:
    assert bounded_repr(10 ** 5000) == "a 16610-bit integer"  # repr() raises past 4,300 digits
    assert bounded_repr(-(1 << 64)) == "-18446744073709551616"
    assert bounded_repr("\ud800") == "'\\ud800'"  # a lone surrogate stays writable as UTF-8
    bounded_repr("\ud800").encode("utf-8")
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert bounded_repr(deep) == "<list>"  # RecursionError inside repr()
    assert bounded_repr("x" * 100) == "'" + "x" * 36 + "..."
    assert len(bounded_repr(list(range(1000)), 60)) == 60
