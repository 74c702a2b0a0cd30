"""Meter values: measurand selection, phases, units, contexts, clock alignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.charger.metering import ReadingContext, Sample, next_aligned_time, samples_from_reading, total_reading
from hal.interfaces import MeterReading

T0 = datetime(2026, 11, 27, 10, 7, 30, tzinfo=UTC)
THREE_PHASE = MeterReading("m1", T0, 12345.6, 7360.0, (10.0, 10.5, 11.0), (230.1, 229.9, 231.0), 50.01, 2.0)


def test_selected_measurands_in_order_with_phases_and_units() -> None:
    samples = samples_from_reading(THREE_PHASE, ["Power.Active.Import", "Energy.Active.Import.Register",
                                                 "Current.Import", "Voltage", "Frequency", "Current.Offered"],
                                   ReadingContext.PERIODIC, offered_current_a=16.0)
    assert [(s.measurand, s.phase, s.unit) for s in samples] == [
        ("Power.Active.Import", None, "W"), ("Energy.Active.Import.Register", None, "Wh"),
        ("Current.Import", "L1", "A"), ("Current.Import", "L2", "A"), ("Current.Import", "L3", "A"),
        ("Voltage", "L1-N", "V"), ("Voltage", "L2-N", "V"), ("Voltage", "L3-N", "V"),
        ("Frequency", None, None), ("Current.Offered", None, "A"),
    ]
    assert samples[1].formatted_value() == "12346" and samples[0].formatted_value() == "7360"
    assert samples[5].formatted_value() == "230.1"
    assert all(s.context is ReadingContext.PERIODIC and s.location == "Outlet" for s in samples)


def test_single_phase_meter_reports_one_phase_and_skips_missing() -> None:
    r = MeterReading("m1", T0, 10.0, 100.0, (0.4,), (230.0,))
    samples = samples_from_reading(r, ["Current.Import", "Frequency", "Energy.Active.Export.Register"],
                                   ReadingContext.CLOCK)
    assert samples == [Sample("Current.Import", 0.4, "A", ReadingContext.CLOCK, phase="L1")]


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (T0, 900, datetime(2026, 11, 27, 10, 15, tzinfo=UTC)),
        (datetime(2026, 11, 27, 10, 15, tzinfo=UTC), 900, datetime(2026, 11, 27, 10, 30, tzinfo=UTC)),
        (datetime(2026, 11, 27, 23, 59, tzinfo=UTC), 7 * 3600, datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
    ],
)
def test_clock_alignment(now: datetime, interval: int, expected: datetime) -> None:
    assert next_aligned_time(now, interval) == expected


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)),
       st.integers(min_value=1, max_value=86400))
def test_aligned_time_is_after_now_and_on_grid(now: datetime, interval: int) -> None:
    now = now.replace(tzinfo=UTC)
    nxt = next_aligned_time(now, interval)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert now < nxt <= now + timedelta(seconds=interval)
    offset = (nxt - midnight).total_seconds()
    assert offset % interval == 0 or nxt == midnight + timedelta(days=1)


def test_total_reading_adds_what_adds_up() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    one = MeterReading("m1", t, 1000.0, 7000.0, (10.0, 10.0, 10.0), (230.0, 230.0, 230.0), 50.0, 5.0)
    two = MeterReading("m2", t - timedelta(seconds=1), 250.5, 3680.0, (16.0,), (231.0,), 50.0, None)
    total = total_reading([one, two])
    assert total is not None
    assert (total.energy_import_wh, total.power_w, total.taken_at) == (1250.5, 10680.0, t - timedelta(seconds=1))
    assert total.current_a == () and total.voltage_v == () and total.frequency_hz is None
    assert total.energy_export_wh is None  # one meter has no export register: no total of it
    assert total_reading([one]) is not None and total_reading([]) is None
