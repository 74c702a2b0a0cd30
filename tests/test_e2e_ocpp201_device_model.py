"""OCPP 2.0.1 B Provisioning, the device model, end to end: the OCTT 2.0.1 charging-station test cases of B05-B08
(GetVariables / SetVariables, GetBaseReport, GetReport), each test named after the case it stands for, against
one agent process (two EVSEs) and the simulated 2.0.1 CSMS, which checks every request and answer against the
2.0.1 schemas. The tests share the station: each leaves the variables it sets as the case found them, or sets
variables no other test reads. And the version change: a value set through 1.6 is read through 2.0.1 and back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sim.csms.server import CallErrorReceived
from tests.station import CP_ID, WAIT_S, Station

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("dm"), ocpp="2.0.1",
                       presets={"OCPPCommCtrlr.OfflineThreshold": 300}) as s:
        await s.start_agent()
        yield s


def _item(component: str, variable: str, *, instance: str | None = None, evse: dict[str, int] | None = None,
          **more: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": component}
    if evse is not None:
        c["evse"] = evse
    v: dict[str, Any] = {"name": variable}
    if instance is not None:
        v["instance"] = instance
    return {"component": c, "variable": v, **more}


async def _get(s: Station, *items: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": list(items)}, timeout_s=WAIT_S)
    return list(answer["getVariableResult"])


async def _set(s: Station, *items: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": list(items)}, timeout_s=WAIT_S)
    return list(answer["setVariableResult"])


async def _report(s: Station, action: str, payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Sends GetBaseReport / GetReport; its status, and (when Accepted) the reportData of all NotifyReport pages,
    checked to be one report: the requestId, seqNo 0, 1, … and tbc true on all but the last."""
    mark = s.mark()
    answer = await s.csms.call(CP_ID, action, payload, timeout_s=WAIT_S)
    if answer["status"] != "Accepted":
        return str(answer["status"]), []
    request_id = payload["requestId"]
    await s.wait_call("NotifyReport", lambda e: e.payload["requestId"] == request_id and not e.payload.get("tbc"),
                      since=mark)
    pages = [e.payload for e in s.calls("NotifyReport", mark) if e.payload["requestId"] == request_id]
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert [p.get("tbc", False) for p in pages] == [True] * (len(pages) - 1) + [False]
    return "Accepted", [d for p in pages for d in p["reportData"]]


def _where(d: dict[str, Any]) -> tuple[str, int | None, int | None, str, str | None]:
    evse = d["component"].get("evse", {})
    return (d["component"]["name"], evse.get("id"), evse.get("connectorId"), d["variable"]["name"],
            d["variable"].get("instance"))


# --- B06 GetVariables --------------------------------------------------------------------------------------------

async def test_TC_B_06_CS_get_variables_single_value(station: Station) -> None:
    [result] = await _get(station, _item("OCPPCommCtrlr", "OfflineThreshold", attributeType="Actual"))
    assert result == {"attributeStatus": "Accepted", "attributeType": "Actual", "attributeValue": "300",
                      "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"}}


async def test_TC_B_07_CS_get_variables_multiple_values(station: Station) -> None:
    results = await _get(station, _item("OCPPCommCtrlr", "OfflineThreshold", attributeType="Actual"),
                         _item("AuthCtrlr", "LocalAuthorizeOffline", attributeType="Actual"))
    assert [(r["attributeStatus"], r["attributeValue"], r["variable"]["name"]) for r in results] == [
        ("Accepted", "300", "OfflineThreshold"), ("Accepted", "true", "LocalAuthorizeOffline")]


@pytest.mark.parametrize(("case", "item", "status"), [
    ("TC_B_32_CS", _item("UnknownComponent", "OfflineThreshold"), "UnknownComponent"),
    ("TC_B_33_CS", _item("OCPPCommCtrlr", "UnknownVariable"), "UnknownVariable"),
    ("TC_B_34_CS", _item("OCPPCommCtrlr", "OfflineThreshold", attributeType="Target"), "NotSupportedAttributeType"),
], ids=["TC_B_32_CS-unknown_component", "TC_B_33_CS-unknown_variable", "TC_B_34_CS-not_supported_attribute"])
async def test_get_variables_refused(station: Station, case: str, item: dict[str, Any], status: str) -> None:
    [result] = await _get(station, item)
    assert result["attributeStatus"] == status, case
    assert "attributeValue" not in result  # B06.FR.06-08
    assert result["component"] == item["component"] and result["variable"] == item["variable"]
    assert result["attributeType"] == item.get("attributeType", "Actual")


async def test_get_variables_of_evse_and_connector_components(station: Station) -> None:
    """Part 2 "Charging Infrastructure related": EVSE and Connector addressed on their tier (component.evse)."""
    results = await _get(station, _item("EVSE", "AvailabilityState", evse={"id": 1}),
                         _item("EVSE", "Power", evse={"id": 2}),
                         _item("Connector", "ConnectorType", evse={"id": 2, "connectorId": 1}),
                         _item("Connector", "SupplyPhases", evse={"id": 1, "connectorId": 1}),
                         _item("EVSE", "Available", evse={"id": 3}),
                         _item("EVSE", "Available"),
                         _item("ChargingStation", "AvailabilityState"))
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 4 + ["UnknownComponent"] * 2 + ["Accepted"]
    assert results[0]["attributeValue"] == "Available"
    power = results[1]["attributeValue"]
    async with asyncio.timeout(WAIT_S):  # "" (unknown) until the EVSE's meter was first read
        while power == "":
            await asyncio.sleep(0.2)
            [result] = await _get(station, _item("EVSE", "Power", evse={"id": 2}))
            power = result["attributeValue"]
    assert float(power) >= 0.0
    assert results[2]["attributeValue"] in ("sType2", "cType2")
    assert results[3]["attributeValue"] == "3"
    assert results[0]["component"] == {"name": "EVSE", "evse": {"id": 1}}
    assert results[6]["attributeValue"] == "Available"


async def test_get_variables_over_bytes_per_message(station: Station) -> None:
    """B06.FR.17: a GetVariablesRequest longer than DeviceDataCtrlr.BytesPerMessage[GetVariables] is refused with
    CALLERROR FormatViolation; within it, the same items are answered."""
    [limit] = await _get(station, _item("DeviceDataCtrlr", "BytesPerMessage", instance="GetVariables"))
    item = _item("OCPPCommCtrlr", "OfflineThreshold", instance="x" * 50)
    count = int(limit["attributeValue"]) // len(json.dumps(item, separators=(",", ":"))) + 1
    with pytest.raises(CallErrorReceived) as refused:
        await _get(station, *[item] * count)
    assert refused.value.code == "FormatViolation"
    assert [r["attributeStatus"] for r in await _get(station, item, item)] == ["UnknownVariable"] * 2


# --- B05 SetVariables --------------------------------------------------------------------------------------------

async def test_TC_B_09_CS_set_variables_single_value(station: Station) -> None:
    [result] = await _set(station, _item("OCPPCommCtrlr", "OfflineThreshold", attributeValue="300",
                                         attributeType="Actual"))
    assert result == {"attributeStatus": "Accepted", "attributeType": "Actual",
                      "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"}}


async def test_TC_B_10_CS_set_variables_multiple_values(station: Station) -> None:
    results = await _set(station, _item("OCPPCommCtrlr", "OfflineThreshold", attributeValue="300"),
                         _item("AuthCtrlr", "LocalAuthorizeOffline", attributeValue="true", attributeType="Actual"))
    assert [(r["attributeStatus"], r["attributeType"]) for r in results] == [("Accepted", "Actual")] * 2


@pytest.mark.parametrize(("item", "status"), [
    (_item("UnknownComponent", "OfflineThreshold", attributeValue="1"), "UnknownComponent"),
    (_item("OCPPCommCtrlr", "UnknownVariable", attributeValue="1"), "UnknownVariable"),
    (_item("OCPPCommCtrlr", "OfflineThreshold", attributeValue="1", attributeType="Target"),
     "NotSupportedAttributeType"),
    (_item("OCPPCommCtrlr", "MessageTimeout", instance="Default", attributeValue="10"), "Rejected"),
], ids=["TC_B_35_CS-unknown_component", "TC_B_36_CS-unknown_variable", "TC_B_37_CS-not_supported_attribute",
        "TC_B_39_CS-read_only"])
async def test_set_variables_refused(station: Station, item: dict[str, Any], status: str) -> None:
    [result] = await _set(station, item)
    assert result["attributeStatus"] == status
    assert result["component"] == item["component"] and result["variable"] == item["variable"]
    assert result["attributeType"] == item.get("attributeType", "Actual")
    if status == "Rejected":  # DefaultMessageTimeout is [ocpp] response_timeout_s (5 s here), unchanged
        [value] = await _get(station, {"component": item["component"], "variable": item["variable"]})
        assert value["attributeValue"] == "5"


async def test_TC_B_11_CS_set_variables_invalidly_formatted_values(station: Station) -> None:
    """OfflineThreshold (integer) and AuthorizeRemoteStart (boolean) with 300, 300.1, true, the current time and
    "abc": Accepted where the value fits the type, else Rejected with reasonCode InvalidValue; nothing changed."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    values = ["300", "300.1", "true", now, "abc"]
    results = [r for v in values for r in await _set(station, _item("OCPPCommCtrlr", "OfflineThreshold",
                                                                    attributeValue=v))]
    results += [r for v in values for r in await _set(station, _item("AuthCtrlr", "AuthorizeRemoteStart",
                                                                     attributeValue=v))]
    assert [r["attributeStatus"] for r in results] == (["Accepted"] + ["Rejected"] * 4
                                                       + ["Rejected", "Rejected", "Accepted", "Rejected", "Rejected"])
    assert {r["attributeStatusInfo"]["reasonCode"] for r in results if r["attributeStatus"] == "Rejected"} == {
        "InvalidValue"}
    assert [r["attributeValue"] for r in await _get(station, _item("OCPPCommCtrlr", "OfflineThreshold"),
                                                    _item("AuthCtrlr", "AuthorizeRemoteStart"))] == ["300", "true"]


async def test_set_variables_over_bytes_per_message(station: Station) -> None:
    """A SetVariablesRequest longer than DeviceDataCtrlr.BytesPerMessage[SetVariables]: CALLERROR FormatViolation,
    and none of its items is set (as B06.FR.17 for GetVariables; B05 has no rule of its own)."""
    [limit] = await _get(station, _item("DeviceDataCtrlr", "BytesPerMessage", instance="SetVariables"))
    filler = _item("OCPPCommCtrlr", "OfflineThreshold", instance="x" * 50, attributeValue="y" * 900)
    count = int(limit["attributeValue"]) // len(json.dumps(filler, separators=(",", ":"))) + 1
    with pytest.raises(CallErrorReceived) as refused:
        await _set(station, _item("OCPPCommCtrlr", "OfflineThreshold", attributeValue="301"), *[filler] * count)
    assert refused.value.code == "FormatViolation"
    [value] = await _get(station, _item("OCPPCommCtrlr", "OfflineThreshold"))
    assert value["attributeValue"] == "300"


# --- B07 GetBaseReport -------------------------------------------------------------------------------------------

#: Part 2 "Charging Infrastructure related": required on the station, each EVSE and each connector.
REQUIRED = {("ChargingStation", None, None, "Available"), ("ChargingStation", None, None, "AvailabilityState"),
            ("ChargingStation", None, None, "SupplyPhases")} | {
    (c, e, k, v) for e in (1, 2) for c, k, names in (
        ("EVSE", None, ("Available", "AvailabilityState", "SupplyPhases", "Power")),
        ("Connector", 1, ("Available", "ConnectorType", "SupplyPhases"))) for v in names}


async def test_TC_B_12_CS_get_base_report_configuration_inventory(station: Station) -> None:
    status, data = await _report(station, "GetBaseReport", {"requestId": 12, "reportBase": "ConfigurationInventory"})
    assert status == "Accepted"
    assert all(any(a["mutability"] in ("ReadWrite", "WriteOnly") for a in d["variableAttribute"]) for d in data)
    assert ("OCPPCommCtrlr", None, None, "OfflineThreshold", None) in {_where(d) for d in data}
    assert all("valuesList" in d["variableCharacteristics"] for d in data
               if d["variableCharacteristics"]["dataType"] in ("OptionList", "SequenceList", "MemberList"))


async def test_TC_B_13_CS_get_base_report_full_inventory(station: Station) -> None:
    status, data = await _report(station, "GetBaseReport", {"requestId": 13, "reportBase": "FullInventory"})
    assert status == "Accepted"
    found = {_where(d)[:4] for d in data}
    assert REQUIRED <= found
    assert ("DeviceDataCtrlr", None, None, "BytesPerMessage") in found
    power = next(d for d in data if _where(d)[:4] == ("EVSE", 1, None, "Power"))
    assert power["variableCharacteristics"]["maxLimit"] > 0  # the EVSE's most power, from the configuration
    assert all("variableCharacteristics" in d for d in data)


async def test_TC_B_14_CS_get_base_report_summary_inventory(station: Station) -> None:
    status, data = await _report(station, "GetBaseReport", {"requestId": 14, "reportBase": "SummaryInventory"})
    assert status == "Accepted"
    assert {(_where(d)[:4], d["variableAttribute"][0]["value"]) for d in data} == {
        (("ChargingStation", None, None, "AvailabilityState"), "Available"),
        (("EVSE", 1, None, "AvailabilityState"), "Available"), (("EVSE", 2, None, "AvailabilityState"), "Available")}


# --- B08 GetReport -----------------------------------------------------------------------------------------------

async def test_TC_B_16_CS_get_custom_report_with_component_criteria(station: Station) -> None:
    status, data = await _report(station, "GetReport", {"requestId": 16, "componentCriteria": ["Enabled"]})
    assert status == "Accepted"
    assert {d["variable"]["name"] for d in data} == {"Enabled"}
    assert all(d["variableAttribute"][0]["value"] == "true" and "variableCharacteristics" in d for d in data)
    assert {("EVSE", 1, None, "Enabled"), ("EVSE", 2, None, "Enabled"),
            ("AuthCacheCtrlr", None, None, "Enabled")} <= {_where(d)[:4] for d in data}


async def test_TC_B_17_CS_get_custom_report_with_component_variable(station: Station) -> None:
    status, data = await _report(station, "GetReport", {"requestId": 17, "componentVariable": [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}}]})
    assert status == "Accepted"
    [d] = data
    assert d["component"] == {"name": "EVSE", "evse": {"id": 1}}
    assert d["variableCharacteristics"]["dataType"] == "OptionList"
    assert d["variableCharacteristics"]["valuesList"] == "Available,Occupied,Reserved,Unavailable,Faulted"
    assert d["variableAttribute"] == [{"type": "Actual", "value": "Available", "mutability": "ReadOnly",
                                       "persistent": True, "constant": False}]


async def test_TC_B_18_CS_get_custom_report_with_criteria_and_component_variable(station: Station) -> None:
    wanted = [{"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}}]
    status, data = await _report(station, "GetReport", {"requestId": 18, "componentCriteria": ["Available"],
                                                        "componentVariable": wanted})
    assert status == "Accepted" and [_where(d)[:4] for d in data] == [("EVSE", 1, None, "AvailabilityState")]
    mark = station.mark()
    status, _ = await _report(station, "GetReport", {"requestId": 19, "componentCriteria": ["Problem"],
                                                     "componentVariable": wanted})
    assert status == "EmptyResultSet"
    assert not [e for e in station.calls("NotifyReport", mark) if e.payload["requestId"] == 19]


async def test_TC_B_19_CS_get_custom_report_for_unknown_component_criteria(station: Station) -> None:
    """Outside ComponentCriterionEnumType the request breaks its schema; the station still answers NotSupported
    (B08.FR.02) rather than with a CALLERROR, since nothing else is wrong with it."""
    answer = await station.csms.call(CP_ID, "GetReport", {"requestId": 20, "componentCriteria": ["Available",
                                                                                                "Dazzling"]},
                                     timeout_s=WAIT_S, validate=False)
    assert answer["status"] == "NotSupported"


async def test_get_report_limits(station: Station) -> None:
    """B08.FR.17: more componentVariable entries than ItemsPerMessage[GetReport] — CALLERROR
    OccurrenceConstraintViolation; a request over BytesPerMessage[GetReport] — CALLERROR FormatViolation (B08.FR.18);
    no componentVariable that matches — EmptyResultSet."""
    [items, size] = await _get(station, _item("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport"),
                               _item("DeviceDataCtrlr", "BytesPerMessage", instance="GetReport"))
    entry = {"component": {"name": "E" * 50, "instance": "x" * 50, "evse": {"id": 1, "connectorId": 1}},
             "variable": {"name": "P" * 50, "instance": "y" * 50}}
    with pytest.raises(CallErrorReceived) as refused:
        await station.csms.call(CP_ID, "GetReport", {"requestId": 21, "componentVariable": [entry] * (
            int(items["attributeValue"]) + 1)}, timeout_s=WAIT_S)
    assert refused.value.code == "OccurrenceConstraintViolation"
    assert int(items["attributeValue"]) * len(json.dumps(entry, separators=(",", ":"))) > int(size["attributeValue"])
    with pytest.raises(CallErrorReceived) as refused:
        await station.csms.call(CP_ID, "GetReport", {"requestId": 22, "componentVariable": [entry] * int(
            items["attributeValue"])}, timeout_s=WAIT_S)
    assert refused.value.code == "FormatViolation"
    status, _ = await _report(station, "GetReport", {"requestId": 23, "componentVariable": [entry]})
    assert status == "EmptyResultSet"


# --- one store for both versions ---------------------------------------------------------------------------------

async def test_a_setting_survives_a_change_of_version(tmp_path: Path) -> None:
    """The 1.6 keys and the 2.0.1 variables are two views of one store: ConnectionTimeOut and LocalPreAuthorize
    changed by a 1.6 CSMS are TxCtrlr.EVConnectionTimeOut and AuthCtrlr.LocalPreAuthorize after the agent is
    configured for 2.0.1; a value set there is the 1.6 key's after going back."""
    async with Station(tmp_path, ocpp="1.6", connectors=1) as s:
        await s.start_agent()
        for key, value in (("ConnectionTimeOut", "95"), ("LocalPreAuthorize", "true")):
            answer = await s.csms.call(CP_ID, "ChangeConfiguration", {"key": key, "value": value}, timeout_s=WAIT_S)
            assert answer["status"] == "Accepted"
    async with Station(tmp_path, ocpp="2.0.1", connectors=1) as s:
        await s.start_agent()
        results = await _get(s, _item("TxCtrlr", "EVConnectionTimeOut"), _item("AuthCtrlr", "LocalPreAuthorize"))
        assert [r["attributeValue"] for r in results] == ["95", "true"]
        [result] = await _set(s, _item("TxCtrlr", "EVConnectionTimeOut", attributeValue="45"))
        assert result["attributeStatus"] == "Accepted"
    async with Station(tmp_path, ocpp="1.6", connectors=1) as s:
        await s.start_agent()
        answer = await s.csms.call(CP_ID, "GetConfiguration", {"key": ["ConnectionTimeOut", "LocalPreAuthorize"]},
                                   timeout_s=WAIT_S)
        assert {k["key"]: k["value"] for k in answer["configurationKey"]} == {"ConnectionTimeOut": "45",
                                                                             "LocalPreAuthorize": "true"}
