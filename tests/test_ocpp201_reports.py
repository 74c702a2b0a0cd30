"""B07/B08 report selection (firmware/ocpp/v201/reports.py) on the real device model: what GetBaseReport's kinds
and GetReport's componentVariable / componentCriteria select, and the ReportData of a variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import parse_config
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey
from firmware.ocpp.v201.reports import Reports, report_data
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from tests.test_config import GOOD


@pytest.fixture
def reports(tmp_path: Path) -> Reports:
    db = Database(tmp_path / "agent.db")
    model = DeviceModel(db, evse_ids=[1, 2])
    states = {1: "Available", 2: "Faulted"}
    for evse, state in states.items():
        model.provide(VariableKey("EVSE", "AvailabilityState", evse=evse), lambda s=state: s)
        model.provide(VariableKey("Connector", "AvailabilityState", evse=evse, connector=1), lambda s=state: s)
        model.provide(VariableKey("EVSE", "Problem", evse=evse), lambda s=state: str(s == "Faulted").lower())
        model.provide(VariableKey("EVSE", "Enabled", evse=evse), lambda: "true")
    model.provide(VariableKey("ChargingStation", "AvailabilityState"), lambda: "Available")
    return Reports(V201Context(parse_config(GOOD), {}, db, model, Ledger(db), Outbox(db), lambda _: None))


def _names(selection: list) -> set[tuple[str, int | None, str]]:
    return {(d.key.component, d.key.evse, d.key.variable) for d in selection}


def _entry(component: str, variable: str | None = None, evse: dict | None = None, **more: str) -> dict:
    entry: dict = {"component": {"name": component, **({"evse": evse} if evse else {})}}
    if variable is not None:
        entry["variable"] = {"name": variable}
    entry["component"].update(more)
    return entry


def test_base_report_kinds(reports: Reports) -> None:
    full = reports.base_selection("FullInventory")
    assert len(full) == len(reports.model.definitions)
    assert all(d.writable for d in reports.base_selection("ConfigurationInventory"))
    assert ("EVSE", 1, "AvailabilityState") in _names(full) and ("Connector", 2, "ConnectorType") in _names(full)
    # the station's and each EVSE's AvailabilityState, the connectors' not (the same as their EVSE's), EVSE 2's
    # Problem (true)
    assert _names(reports.base_selection("SummaryInventory")) == {
        ("ChargingStation", None, "AvailabilityState"), ("EVSE", 1, "AvailabilityState"),
        ("EVSE", 2, "AvailabilityState"), ("EVSE", 2, "Problem")}


def test_custom_report_by_component_variable(reports: Reports) -> None:
    select = reports.custom_selection
    assert _names(select([_entry("EVSE", "AvailabilityState", {"id": 1})], None)) == {
        ("EVSE", 1, "AvailabilityState")}
    assert _names(select([_entry("EVSE", "AvailabilityState")], None)) == {  # no evse: every one (B08.FR.23)
        ("EVSE", 1, "AvailabilityState"), ("EVSE", 2, "AvailabilityState")}
    every = select([_entry("Connector", None, {"id": 2})], None)  # no variable: all of them (B08.FR.20)
    assert {n[2] for n in _names(every)} == {"Available", "AvailabilityState", "ConnectorType", "SupplyPhases"}
    assert all(d.key.connector == 1 for d in every)  # no connectorId: every connector of the EVSE (B08.FR.22)
    assert select([_entry("OCPPCommCtrlr", "HeartbeatInterval", instance="x")], None) == []
    assert select([_entry("NoSuchCtrlr")], None) == []
    both = select([{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "MessageAttempts"}}], None)
    assert [d.key.variable_instance for d in both] == ["TransactionEvent"]  # no instance: every one (B08.FR.21)


def test_custom_report_by_criteria(reports: Reports) -> None:
    select = reports.custom_selection
    enabled = select(None, ["Enabled"])  # the criterion variables that are true (OCTT TC_B_16_CS)
    assert {("EVSE", 1, "Enabled"), ("EVSE", 2, "Enabled"), ("AuthCacheCtrlr", None, "Enabled")} <= _names(enabled)
    assert all(d.key.variable == "Enabled" and reports.model.value(d) == "true" for d in enabled)
    assert _names(select(None, ["Problem"])) == {("EVSE", 2, "Problem")}
    evse = [_entry("EVSE", "AvailabilityState")]
    assert _names(select(evse, ["Available"])) == {("EVSE", 1, "AvailabilityState"), ("EVSE", 2, "AvailabilityState")}
    assert _names(select(evse, ["Problem"])) == {("EVSE", 2, "AvailabilityState")}  # TC_B_18_CS: EVSE 1 has none
    assert select([_entry("EVSE", "AvailabilityState", {"id": 1})], ["Problem"]) == []  # EmptyResultSet
    # Active: a component without the variable counts as active (B08.FR.07); OR over criteria (B08.FR.13)
    assert _names(select([_entry("OCPPCommCtrlr", "HeartbeatInterval")], ["Active"])) == {
        ("OCPPCommCtrlr", None, "HeartbeatInterval")}
    assert len(select(evse, ["Problem", "Enabled"])) == 2
    assert len(select(None, None)) == len(reports.model.definitions)


def test_report_data_of_a_tiered_variable(reports: Reports) -> None:
    d = reports.model.definitions[VariableKey("Connector", "AvailabilityState", evse=2, connector=1)]
    data = report_data(d, {"Actual": "Faulted"})
    assert data["component"] == {"name": "Connector", "evse": {"id": 2, "connectorId": 1}}
    assert data["variableAttribute"] == [{"type": "Actual", "mutability": "ReadOnly", "persistent": True,
                                          "constant": False, "value": "Faulted"}]
    assert data["variableCharacteristics"]["valuesList"] == "Available,Occupied,Reserved,Unavailable,Faulted"
