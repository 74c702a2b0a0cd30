"""The operator's CSMS commands of the control API, one verb each, mapped onto the message of the OCPP version the
builtin CSMS speaks (pure: values in, ``(action, payload)`` out; the control API sends it).

* remote-start: RemoteStartTransaction (idTag, connectorId); 2.0.1 RequestStartTransaction (idToken with its
  type, remoteStartId, evseId = the connector)
* remote-stop: RemoteStopTransaction (an integer id); 2.0.1 RequestStopTransaction (the station's own id)
* reset: Reset Soft / Hard; 2.0.1 Reset Immediate / OnIdle, optionally of one EVSE
* availability: ChangeAvailability of a connector (0: all); 2.0.1 of the station, an EVSE, or a connector of an EVSE
* unlock: UnlockConnector (connectorId); 2.0.1 (evseId, connectorId)
* clear-cache: ClearCache in both
* get-variables: GetConfiguration (keys); 2.0.1 GetVariables (``Component.Variable[instance]``)
* set-variable: ChangeConfiguration (key, value); 2.0.1 SetVariables (one item)
* trigger: TriggerMessage (connectorId); 2.0.1 TriggerMessage (evse)

This charger's connector *n* is EVSE *n* with one connector: where 2.0.1 wants an EVSE and only a connector is
given, the connector's number is the EVSE's.
"""

from __future__ import annotations

from typing import Any

from sim.csms.commands201 import variable_ref

V16, V201 = "1.6", "2.0.1"

#: TriggerMessage's requestedMessage per version (1.6: the TriggerMessage schema's list; 2.0.1:
#: MessageTriggerEnumType).
TRIGGER_MESSAGES = {
    V16: ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
          "MeterValues", "StatusNotification"),
    V201: ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues",
           "SignChargingStationCertificate", "SignV2GCertificate", "StatusNotification", "TransactionEvent",
           "SignCombinedCertificate", "PublishFirmwareStatusNotification"),
}
RESET_TYPES = {V16: ("Soft", "Hard"), V201: ("Immediate", "OnIdle")}

Command = tuple[str, dict[str, Any]]


class CommandError(ValueError):
    """A command that cannot be put into the version's message (the control API answers 400)."""


def _evse(connector: int | None, evse: int | None) -> dict[str, Any] | None:
    """2.0.1's EVSEType for an ``evse`` (and a ``connector`` of it), or for a ``connector`` alone (EVSE n)."""
    if evse is not None:
        return {"id": evse} | ({"connectorId": connector} if connector is not None else {})
    return None if connector is None else {"id": connector}


def _only_201(version: str, what: str, value: object) -> None:
    if version != V201 and value is not None:
        raise CommandError(f"{what} is OCPP 2.0.1 only (the builtin CSMS speaks {version})")


def remote_start(version: str, id_tag: str, *, connector: int | None = None, token_type: str = "ISO14443",
                 remote_start_id: int = 1) -> Command:
    if version == V201:
        payload: dict[str, Any] = {"idToken": {"idToken": id_tag, "type": token_type}, "remoteStartId": remote_start_id}
        return "RequestStartTransaction", payload | ({"evseId": connector} if connector is not None else {})
    return "RemoteStartTransaction", {"idTag": id_tag} | ({"connectorId": connector} if connector is not None else {})


def remote_stop(version: str, transaction_id: str | int) -> Command:
    if version == V201:
        return "RequestStopTransaction", {"transactionId": str(transaction_id)}
    try:
        return "RemoteStopTransaction", {"transactionId": int(transaction_id)}
    except ValueError:
        raise CommandError(f"transaction_id: OCPP 1.6 ids are integers, got {transaction_id!r}") from None


def reset(version: str, reset_type: str | None = None, *, evse: int | None = None) -> Command:
    _only_201(version, "a Reset of one EVSE", evse)
    kind = reset_type or RESET_TYPES[version][0]
    if kind not in RESET_TYPES[version]:
        raise CommandError(f"type: OCPP {version} resets are {' or '.join(RESET_TYPES[version])}, not {kind!r}")
    return "Reset", {"type": kind} | ({"evseId": evse} if evse is not None else {})


def availability(version: str, operative: bool, *, connector: int | None = None, evse: int | None = None) -> Command:
    status = "Operative" if operative else "Inoperative"
    if version == V201:
        target = _evse(connector, evse)
        return "ChangeAvailability", {"operationalStatus": status} | ({"evse": target} if target else {})
    _only_201(version, "evse", evse)
    return "ChangeAvailability", {"connectorId": connector or 0, "type": status}


def unlock(version: str, *, connector: int | None = None, evse: int | None = None) -> Command:
    if version == V201:
        if evse is None and connector is None:
            raise CommandError("unlock: give the connector (or the evse and its connector)")
        return "UnlockConnector", {"evseId": evse if evse is not None else connector,
                                   "connectorId": connector if evse is not None and connector is not None else 1}
    _only_201(version, "evse", evse)
    if connector is None:
        raise CommandError("unlock: give the connector")
    return "UnlockConnector", {"connectorId": connector}


def clear_cache(version: str) -> Command:
    return "ClearCache", {}


def get_variables(version: str, names: list[str]) -> Command:
    if version == V201:
        try:
            return "GetVariables", {"getVariableData": [variable_ref(n) for n in names]}
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return "GetConfiguration", {"key": names} if names else {}


def set_variable(version: str, name: str, value: str) -> Command:
    if version == V201:
        try:
            return "SetVariables", {"setVariableData": [{**variable_ref(name), "attributeValue": value}]}
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return "ChangeConfiguration", {"key": name, "value": value}


def trigger(version: str, message: str, *, connector: int | None = None, evse: int | None = None) -> Command:
    if message not in TRIGGER_MESSAGES[version]:
        raise CommandError(f"message: expected one of {', '.join(TRIGGER_MESSAGES[version])}, got {message!r}")
    if version == V201:
        target = _evse(connector, evse)
        return "TriggerMessage", {"requestedMessage": message} | ({"evse": target} if target else {})
    _only_201(version, "evse", evse)
    return "TriggerMessage", {"requestedMessage": message} | ({"connectorId": connector} if connector is not None
                                                              else {})
