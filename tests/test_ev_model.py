"""The simulated EV: pilot state from plug/pause/battery, current = min(own max, offer) on its phases."""

from __future__ import annotations

import pytest

from hal.types import PilotState
from sim.devices.ev import EvModel
from sim.devices.interfaces import ElectricalState


def test_pilot_follows_plug_pause_and_full_battery() -> None:
    ev = EvModel()
    assert ev.pilot() is PilotState.A
    ev.plug()
    assert ev.pilot() is PilotState.C
    ev.paused = True
    assert ev.pilot() is PilotState.B
    ev.paused = False
    ev.ventilation = True
    assert ev.pilot() is PilotState.D
    ev.battery_wh = ev.battery_capacity_wh
    assert ev.pilot() is PilotState.B  # a full battery stops asking for energy
    ev.unplug()
    assert ev.pilot() is PilotState.A


@pytest.mark.parametrize(("max_a", "offer", "phases", "expected"), [
    (32, 16, 3, (16, 16, 16)),
    (16, 32, 3, (16, 16, 16)),
    (32, 20, 1, (20, 0, 0)),
    (32, 5, 3, (0, 0, 0)),  # below 6 A there is no valid offer
])
def test_draw_is_min_of_own_max_and_offer(max_a: float, offer: float, phases: int,
                                          expected: tuple[float, float, float]) -> None:
    ev = EvModel(max_current_a=max_a, phases=phases)
    ev.plug()
    assert ev.draw(offer, contactor_closed=True) == expected
    assert ev.draw(offer, contactor_closed=False) == (0, 0, 0)
    ev.paused = True
    assert ev.draw(offer, contactor_closed=True) == (0, 0, 0)


def test_energy_integrates_power_over_time() -> None:
    state = ElectricalState(current_a=(16.0, 16.0, 16.0))
    assert state.power_w == pytest.approx(3 * 230 * 16)
    state.advance(3600.0)
    assert state.energy_import_wh == pytest.approx(11040.0)
    ev = EvModel(battery_wh=59_000)
    ev.absorb(5_000)
    assert ev.battery_wh == ev.battery_capacity_wh
