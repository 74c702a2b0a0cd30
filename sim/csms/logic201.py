"""The CSMS's answers to an OCPP 2.0.1 charging station's requests, without any I/O (the 1.6 ones are
:mod:`sim.csms.logic`'s).

Each method takes the request payload exactly as received (camelCase, already checked against the library's 2.0.1
schema), updates the :class:`ChargePointState` and returns the ocpp library's ``ocpp.v201.call_result`` object.
The same :class:`CsmsBehaviour` steers both versions: the boot sequence and the id list (an idTag entry answers an
idToken of that value, whatever its type).
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.v201 import call_result

from sim.csms.logic import CsmsRecords
from sim.csms.state import ConnectorStatus, Transaction201
from sim.csms.transcript import utc_timestamp

log = logging.getLogger(__name__)


class CsmsLogic201(CsmsRecords):
    def boot_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        status, interval, now = self._boot(cp_id, payload)
        return call_result.BootNotification(current_time=utc_timestamp(now), interval=interval, status=status)

    def heartbeat(self, cp_id: str, payload: dict[str, Any]) -> Any:
        return call_result.Heartbeat(current_time=utc_timestamp(self._heartbeat(cp_id)))

    def status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        """Kept by EVSE id (this CSMS models one connector per EVSE, as the station does)."""
        st = self.state(cp_id)
        st.connectors[payload["evseId"]] = ConnectorStatus(
            connector_id=payload["evseId"], status=payload["connectorStatus"], error_code="", info=None,
            vendor_id=None, vendor_error_code=None, timestamp=payload.get("timestamp"), received_at=self._clock())
        return call_result.StatusNotification()

    def authorize(self, cp_id: str, payload: dict[str, Any]) -> Any:
        return call_result.Authorize(id_token_info=self._id_token_info(payload["idToken"]))

    def transaction_event(self, cp_id: str, payload: dict[str, Any]) -> Any:
        st = self.state(cp_id)
        st.transaction_events.append(dict(payload))
        tx_id = payload["transactionInfo"]["transactionId"]
        tx = st.transactions201.setdefault(tx_id, Transaction201(tx_id))
        tx.events.append(dict(payload))
        log.info("TransactionEvent", extra={"cp_id": cp_id, "transaction_id": tx_id,
                                            "event_type": payload["eventType"], "seq_no": payload["seqNo"],
                                            "trigger_reason": payload["triggerReason"]})
        token = payload.get("idToken")
        return call_result.TransactionEvent(id_token_info=None if token is None else self._id_token_info(token))

    def meter_values(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).meter_values.append(dict(payload))
        return call_result.MeterValues()

    def notify_report(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).notify_reports.append(dict(payload))
        return call_result.NotifyReport()

    def notify_event(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).notify_events.append(dict(payload))
        return call_result.NotifyEvent()

    def reservation_status_update(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).reservation_updates.append(dict(payload))
        log.info("ReservationStatusUpdate", extra={"cp_id": cp_id, "reservation_id": payload["reservationId"],
                                                   "status": payload["reservationUpdateStatus"]})
        return call_result.ReservationStatusUpdate()

    def firmware_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).firmware_status = payload["status"]
        return call_result.FirmwareStatusNotification()

    def log_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).log_status = payload["status"]
        return call_result.LogStatusNotification()

    def report_charging_profiles(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).charging_profile_reports.append(dict(payload))
        log.info("ReportChargingProfiles", extra={"cp_id": cp_id, "request_id": payload["requestId"],
                                                  "evse": payload["evseId"], "tbc": payload.get("tbc", False),
                                                  "profiles": [p["id"] for p in payload["chargingProfile"]]})
        return call_result.ReportChargingProfiles()

    def notify_charging_limit(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).charging_limits.append(("NotifyChargingLimit", dict(payload)))
        log.info("NotifyChargingLimit", extra={"cp_id": cp_id, "evse": payload.get("evseId"),
                                               "source": payload["chargingLimit"]["chargingLimitSource"]})
        return call_result.NotifyChargingLimit()

    def cleared_charging_limit(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).charging_limits.append(("ClearedChargingLimit", dict(payload)))
        log.info("ClearedChargingLimit", extra={"cp_id": cp_id, "evse": payload.get("evseId"),
                                                "source": payload["chargingLimitSource"]})
        return call_result.ClearedChargingLimit()

    def security_event_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).security_events.append(dict(payload))
        return call_result.SecurityEventNotification()

    def sign_certificate(self, cp_id: str, payload: dict[str, Any]) -> Any:
        """Kept for the test or operator to sign (``state.csrs``); the behaviour's answer (Accepted unless told)."""
        self.state(cp_id).csrs.append(payload["csr"])
        return call_result.SignCertificate(status=self.behaviour.sign_certificate_status)

    def data_transfer(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).data_transfers.append(dict(payload))
        answer = self.behaviour.data_transfer.answer(payload["vendorId"], payload.get("messageId"))
        return call_result.DataTransfer(status=answer.status, data=answer.data)

    def _id_token_info(self, token: dict[str, Any]) -> dict[str, Any]:
        """IdTokenInfoType from the behaviour's id list (1.6 IdTagInfo: expiryDate -> cacheExpiryDateTime,
        parentIdTag -> groupIdToken of type Central)."""
        info = self.behaviour.id_tags.id_tag_info(str(token["idToken"]), self._clock())
        out: dict[str, Any] = {"status": info["status"]}
        if "expiryDate" in info:
            out["cacheExpiryDateTime"] = info["expiryDate"]
        if "parentIdTag" in info:
            out["groupIdToken"] = {"idToken": info["parentIdTag"], "type": "Central"}
        return out
