"""The physical tiers of the device model — ChargingStation, each EVSE, each EVSE's connector (Part 2, "Charging
Infrastructure related") — read from what the station is configured with and what its connectors do.

This charger's connector *n* of the configuration is EVSE *n* with one connector (1). The values are read when
asked, never stored:

* AvailabilityState: the EVSE's ``ConnectorStatusEnumType`` as StatusNotification reports it (the connector's is
  the same: one connector per EVSE); the station's is Unavailable or Faulted when every EVSE is, else Available.
* ConnectorPlugRetentionLock Problem: true while the connector's lock failure is active (G05).
* Enabled: false while the EVSE is Unavailable (made Inoperative, by the CSMS or locally); Problem: true while a
  fault of any kind or the emergency stop is active (what NotifyEvent reports, :mod:`notify_event`; Faulted or not).
* Power: the last reading of the EVSE's meter (W); its maxLimit is what the configuration allows
  (``max_current_a`` * ``phases`` * ``nominal_voltage_v``).
* SupplyPhases: the configured ``phases`` (the station: the most of any EVSE); ConnectorType: a Type 2 socket
  (``sType2``), or a Type 2 cable (``cType2``) for a tethered connector (``cable = "tethered"``).
* VendorName and Model: ``[charge_point]``, as in BootNotification.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from firmware.config import TETHERED, AgentConfig, ConnectorConfig
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey


def connector_type(c: ConnectorConfig) -> str:
    """The ``ConnectorEnumType`` of a connector: a Type 2 socket, or a Type 2 cable when tethered."""
    return "cType2" if c.cable == TETHERED else "sType2"


def _flag(state: Callable[[int], str], evse: int, status: str, *, negate: bool = False) -> str:
    """"true" while the EVSE's AvailabilityState is ``status`` (``negate``: while it is not)."""
    return "true" if (state(evse) == status) != negate else "false"


def _problem(has_problem: Callable[[int], bool], state: Callable[[int], str], evse: int) -> str:
    """"true" while the EVSE has a problem (a fault, the emergency stop) or is Faulted."""
    return "true" if has_problem(evse) or state(evse) == "Faulted" else "false"


def _flag_of(has_problem: Callable[..., bool], evse: int, component: str) -> str:
    return "true" if has_problem(evse, component) else "false"


def _station_state(states: list[str]) -> str:
    for shared in ("Unavailable", "Faulted"):
        if states and all(s == shared for s in states):
            return shared
    return "Available"


def describe_inventory(ctx: V201Context, has_problem: Callable[..., bool]) -> None:
    """Gives every ChargingStation, EVSE and Connector variable of ``ctx.variables`` its reader and the EVSE's
    Power its maxLimit; ``has_problem(evse)`` is the EVSE's Problem, ``has_problem(evse, component)`` another
    component's (ConnectorPlugRetentionLock)."""
    model: DeviceModel = ctx.variables
    config: AgentConfig = ctx.config

    def state(evse: int) -> str:
        ctrl = ctx.connectors.get(evse)
        m = None if ctrl is None else ctrl.machine
        return "" if m is None else mapping.connector_status(m.status, m.ev_connected, m.config.tethered_cable)

    def power(evse: int) -> str:
        ctrl = ctx.connectors.get(evse)
        reading = None if ctrl is None else ctrl.latest_reading
        return "" if reading is None else str(round(reading.power_w, 1))

    model.provide(VariableKey("ChargingStation", "AvailabilityState"),
                  lambda: _station_state([state(c.id) for c in config.connectors]))
    model.provide(VariableKey("ChargingStation", "SupplyPhases"),
                  lambda: str(max((c.phases for c in config.connectors), default=0)))
    model.provide(VariableKey("ChargingStation", "VendorName"), lambda: config.identity.vendor)
    model.provide(VariableKey("ChargingStation", "Model"), lambda: config.identity.model)
    for c in config.connectors:
        evse, phases = c.id, str(c.phases)
        ctype = connector_type(c)

        def on_evse(variable: str, e: int = evse) -> VariableKey:
            return VariableKey("EVSE", variable, evse=e)

        def on_connector(variable: str, e: int = evse) -> VariableKey:
            return VariableKey("Connector", variable, evse=e, connector=1)

        model.provide(on_evse("AvailabilityState"), functools.partial(state, evse))
        model.provide(on_evse("Enabled"), functools.partial(_flag, state, evse, "Unavailable", negate=True))
        model.provide(on_evse("Problem"), functools.partial(_problem, has_problem, state, evse))
        model.provide(on_evse("Power"), functools.partial(power, evse))
        model.characterize(on_evse("Power"), maximum=round(c.max_current_a * c.phases * config.nominal_voltage_v, 1))
        model.provide(on_evse("SupplyPhases"), functools.partial(str, phases))
        model.provide(on_connector("AvailabilityState"), functools.partial(state, evse))
        model.provide(on_connector("ConnectorType"), functools.partial(str, ctype))
        model.provide(VariableKey("ConnectorPlugRetentionLock", "Problem", evse=evse, connector=1),
                      functools.partial(_flag_of, has_problem, evse, "ConnectorPlugRetentionLock"))
        model.provide(on_connector("SupplyPhases"), functools.partial(str, phases))
