"""The limit combiner: the lowest source wins; a whole-charger limit is shared among connectors with an EV."""

from __future__ import annotations

import math

import pytest

from firmware.charger.limits import ChargingLimits


def test_no_limits_means_the_rating() -> None:
    limits = ChargingLimits({1: 32.0, 2: 16.0})
    assert limits.effective() == {1: 32.0, 2: 16.0}


def test_the_lowest_source_of_a_connector_wins_and_clearing_restores() -> None:
    limits = ChargingLimits({1: 32.0, 2: 32.0})
    limits.set("ocpp", 20.0, 1)
    limits.set("site", 25.0, 1)
    assert limits.effective() == {1: 20.0, 2: 32.0}
    limits.set("site", 10.0, 1)
    assert limits.effective()[1] == 10.0
    limits.clear("site", 1)
    assert limits.effective()[1] == 20.0
    limits.clear("ocpp", 1)
    assert limits.effective()[1] == 32.0
    limits.set("site", 40.0, 2)  # above the rating: the rating still caps
    assert limits.effective()[2] == 32.0


def test_whole_charger_limit_is_shared_among_connectors_with_an_ev() -> None:
    limits = ChargingLimits({1: 32.0, 2: 32.0, 3: 32.0})
    limits.set("site", 30.0)
    limits.set_sharing([1, 2])
    eff = limits.effective()
    assert eff[1] == eff[2] == 15.0
    # connector 3 has no EV: it is offered what it would get if one arrived now (30 / 3)
    assert eff[3] == 10.0
    limits.set_sharing([1])
    assert limits.effective()[1] == 30.0


def test_a_connector_capped_lower_leaves_the_rest_to_the_others() -> None:
    limits = ChargingLimits({1: 32.0, 2: 16.0, 3: 32.0})
    limits.set("site", 60.0)
    limits.set_sharing([1, 2, 3])
    assert limits.effective() == {1: 22.0, 2: 16.0, 3: 22.0}
    limits.set("ocpp", 6.0, 1)
    assert limits.effective() == {1: 6.0, 2: 16.0, 3: 32.0}
    assert math.isclose(sum(limits.effective().values()), 54.0)


def test_the_lowest_whole_charger_source_wins_and_clear_everywhere() -> None:
    limits = ChargingLimits({1: 32.0})
    limits.set("site", 20.0)
    limits.set("failsafe", 8.0)
    limits.set("site", 12.0, 1)
    assert limits.charger_limit == 8.0 and limits.effective() == {1: 8.0}
    limits.clear_everywhere("failsafe")
    assert limits.effective() == {1: 12.0}
    limits.clear_everywhere("site")
    assert limits.effective() == {1: 32.0} and limits.sources(1) == {} and limits.sources(None) == {}


@pytest.mark.parametrize("amps", [-1.0, math.nan, math.inf])
def test_invalid_limits_are_refused(amps: float) -> None:
    limits = ChargingLimits({1: 32.0})
    with pytest.raises(ValueError):
        limits.set("site", amps, 1)
    assert limits.effective() == {1: 32.0}


def test_unknown_connector_is_refused() -> None:
    with pytest.raises(KeyError):
        ChargingLimits({1: 32.0}).set("site", 10.0, 2)
