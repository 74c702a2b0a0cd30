"""IEC 61851-1 duty cycle mapping (both directions) and the contactor supervisor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.contactor import ContactorSupervisor
from hal.duty_cycle import current_to_duty, duty_to_current
from hal.interfaces import FaultCode


@pytest.mark.parametrize(("amps", "duty"), [(6, 10.0), (10, 16.66), (16, 26.66), (32, 53.33), (51, 85.0),
                                             (63, 89.2), (80, 96.0)])
def test_current_to_duty_table(amps: float, duty: float) -> None:
    assert current_to_duty(amps) == duty


def test_below_6a_means_no_pwm_and_above_80_is_clamped() -> None:
    assert current_to_duty(5.9) is None
    assert current_to_duty(0) is None
    assert current_to_duty(100) == 96.0


@given(st.floats(min_value=6.0, max_value=80.0))
def test_ev_never_reads_more_than_offered(amps: float) -> None:
    duty = current_to_duty(amps)
    assert duty is not None
    read_back = duty_to_current(duty)
    assert read_back <= amps + 0.01
    # exact within rounding, except in the gap between the standard's two ranges
    # (85 % reads as 51 A, 85.01 % as 52.525 A)
    assert amps - read_back < (1.6 if 51.0 < amps <= 52.53 else 0.05)


def test_gap_between_ranges_offers_51a() -> None:
    assert current_to_duty(52.0) == 85.0
    assert duty_to_current(85.0) == 51.0


def test_ev_side_reading() -> None:
    assert duty_to_current(5.0) == 0.0  # digital communication only
    assert duty_to_current(9.0) == 6.0
    assert duty_to_current(98.0) == 0.0


def test_contactor_welded_and_failed_to_close() -> None:
    sup = ContactorSupervisor(settle_s=0.5)
    assert sup.update(0.0, commanded=True, feedback=False) == []  # still moving
    [v] = sup.update(0.6, commanded=True, feedback=False)
    assert (v.code, v.active) == (FaultCode.CONTACTOR_FAILED_TO_CLOSE, True)
    [v] = sup.update(0.7, commanded=True, feedback=True)
    assert (v.code, v.active) == (FaultCode.CONTACTOR_FAILED_TO_CLOSE, False)
    assert sup.update(1.0, commanded=False, feedback=True) == []
    [v] = sup.update(1.6, commanded=False, feedback=True)
    assert (v.code, v.active) == (FaultCode.CONTACTOR_WELDED, True)
    assert sup.update(2.0, commanded=False, feedback=True) == []  # reported once
    assert sup.active_fault is FaultCode.CONTACTOR_WELDED
