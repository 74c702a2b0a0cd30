"""The central system's answers to charge point requests (OCPP 1.6 Core), without any I/O.

Each method takes the request payload exactly as received (camelCase, already schema-checked), updates
the :class:`ChargePointState` and returns the ocpp library's ``call_result`` object to send back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.v16 import call_result, datatypes
from ocpp.v16.enums import AuthorizationStatus, DataTransferStatus, RegistrationStatus

from sim.csms.behaviour import CsmsBehaviour
from sim.csms.state import BootRecord, ChargePointState, ConnectorStatus, Transaction
from sim.csms.transcript import utc_timestamp

log = logging.getLogger(__name__)

MAX_TRANSACTION_ID = 2**31 - 1  # transactionId is a JSON integer; CPs commonly hold it in an int32


class CsmsRecords:
    """What the answers of every OCPP version share: the per charge point state, the boot sequence the behaviour
    scripts, the heartbeat count (:mod:`sim.csms.logic201` builds on it for 2.0.1)."""

    def __init__(self, behaviour: CsmsBehaviour, clock: Callable[[], datetime] | None = None) -> None:
        self.behaviour = behaviour
        self.states: dict[str, ChargePointState] = {}
        self._clock = clock or (lambda: datetime.now(UTC))

    def state(self, cp_id: str) -> ChargePointState:
        st = self.states.get(cp_id)
        if st is None:
            st = self.states[cp_id] = ChargePointState(cp_id)
        return st

    def _boot(self, cp_id: str, payload: dict[str, Any]) -> tuple[str, int, datetime]:
        """Record a BootNotification; (status, interval, now) to answer it with."""
        st = self.state(cp_id)
        status, interval = self.behaviour.profile(cp_id).boot_answer(len(st.boots))
        now = self._clock()
        st.boots.append(BootRecord(dict(payload), status, interval, now))
        st.registration_status = status
        log.info("BootNotification", extra={"cp_id": cp_id, "status": status, "interval": interval,
                                            "boot": len(st.boots)})
        return status, interval, now

    def _heartbeat(self, cp_id: str) -> datetime:
        st = self.state(cp_id)
        now = self._clock()
        st.heartbeat_count += 1
        st.last_heartbeat_at = now
        return now


class CentralSystemLogic(CsmsRecords):
    def __init__(self, behaviour: CsmsBehaviour, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(behaviour, clock)
        self._next_transaction_id = behaviour.first_transaction_id

    def allocate_transaction_id(self) -> int:
        tx_id = self._next_transaction_id
        self._next_transaction_id = 1 if tx_id >= MAX_TRANSACTION_ID else tx_id + 1
        return tx_id

    # ---- Core profile, charge point initiated -----------------------------------------------------

    def boot_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        status, interval, now = self._boot(cp_id, payload)
        return call_result.BootNotification(
            current_time=utc_timestamp(now), interval=interval, status=RegistrationStatus(status))

    def heartbeat(self, cp_id: str, payload: dict[str, Any]) -> Any:
        return call_result.Heartbeat(current_time=utc_timestamp(self._heartbeat(cp_id)))

    def authorize(self, cp_id: str, payload: dict[str, Any]) -> Any:
        return call_result.Authorize(id_tag_info=self._id_tag_info(payload["idTag"]))

    def start_transaction(self, cp_id: str, payload: dict[str, Any]) -> Any:
        st = self.state(cp_id)
        info = self._id_tag_info(payload["idTag"])
        repeated = self._repeated_start(st, payload)
        if repeated is not None:
            repeated.repeat_count += 1
            log.info("StartTransaction repeated; answered with its first id", extra={
                "cp_id": cp_id, "transaction_id": repeated.transaction_id, "connector_id": repeated.connector_id})
            return call_result.StartTransaction(transaction_id=repeated.transaction_id, id_tag_info=info)
        tx = Transaction(
            transaction_id=self.allocate_transaction_id(), connector_id=payload["connectorId"],
            id_tag=payload["idTag"], meter_start=payload["meterStart"], start_timestamp=payload["timestamp"],
            reservation_id=payload.get("reservationId"), id_tag_status=str(info.status))
        st.transactions[tx.transaction_id] = tx
        log.info("StartTransaction", extra={"cp_id": cp_id, "transaction_id": tx.transaction_id,
                                            "connector_id": tx.connector_id, "status": str(info.status)})
        return call_result.StartTransaction(transaction_id=tx.transaction_id, id_tag_info=info)

    def _repeated_start(self, st: ChargePointState, payload: dict[str, Any]) -> Transaction | None:
        """OCPP 1.6 has no message-level duplicate detection; a charge point that lost the answer sends the same
        StartTransaction again (same connector, idTag, meterStart and timestamp), which no new session can."""
        if not self.behaviour.recognise_repeated_starts:
            return None
        for tx in st.transactions.values():
            if (tx.started and tx.connector_id == payload["connectorId"] and tx.id_tag == payload["idTag"]
                    and tx.meter_start == payload["meterStart"] and tx.start_timestamp == payload["timestamp"]):
                return tx
        return None

    def stop_transaction(self, cp_id: str, payload: dict[str, Any]) -> Any:
        st = self.state(cp_id)
        tx_id = payload["transactionId"]
        tx = st.transactions.get(tx_id)
        if tx is None:
            log.warning("StopTransaction for a transaction never started here",
                        extra={"cp_id": cp_id, "transaction_id": tx_id})
            tx = st.transactions[tx_id] = Transaction(tx_id, None, None, None, None, started=False)
        tx.stop_count += 1
        if tx.stop_count == 1:
            tx.meter_stop = payload["meterStop"]
            tx.stop_timestamp = payload["timestamp"]
            tx.stop_reason = payload.get("reason")
            tx.stop_id_tag = payload.get("idTag")
            tx.meter_values.extend(payload.get("transactionData", []))
        log.info("StopTransaction", extra={"cp_id": cp_id, "transaction_id": tx_id,
                                           "energy_wh": tx.energy_wh, "stop_count": tx.stop_count})
        # idTagInfo only when an idTag was given
        id_tag = payload.get("idTag")
        return call_result.StopTransaction(id_tag_info=None if id_tag is None else self._id_tag_info(id_tag))

    def status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        st = self.state(cp_id)
        c = ConnectorStatus(
            connector_id=payload["connectorId"], status=payload["status"], error_code=payload["errorCode"],
            info=payload.get("info"), vendor_id=payload.get("vendorId"),
            vendor_error_code=payload.get("vendorErrorCode"), timestamp=payload.get("timestamp"),
            received_at=self._clock())
        st.connectors[c.connector_id] = c
        return call_result.StatusNotification()

    def meter_values(self, cp_id: str, payload: dict[str, Any]) -> Any:
        st = self.state(cp_id)
        tx = st.transactions.get(payload.get("transactionId", -1))
        if tx is not None:
            tx.meter_values.extend(payload["meterValue"])
        else:
            st.meter_values.append(dict(payload))
        return call_result.MeterValues()

    def data_transfer(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).data_transfers.append(dict(payload))
        answer = self.behaviour.data_transfer.answer(payload["vendorId"], payload.get("messageId"))
        return call_result.DataTransfer(status=DataTransferStatus(answer.status), data=answer.data)

    def firmware_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).firmware_status = payload["status"]
        return call_result.FirmwareStatusNotification()

    def signed_firmware_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).signed_firmware_status = payload["status"]
        return call_result.SignedFirmwareStatusNotification()

    def log_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).log_status = payload["status"]
        return call_result.LogStatusNotification()

    def sign_certificate(self, cp_id: str, payload: dict[str, Any]) -> Any:
        """Kept for the test or operator to sign (``state.csrs``); Accepted: the CSMS will send CertificateSigned."""
        self.state(cp_id).csrs.append(payload["csr"])
        return call_result.SignCertificate(status=self.behaviour.sign_certificate_status)

    def security_event_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).security_events.append(dict(payload))
        return call_result.SecurityEventNotification()

    def diagnostics_status_notification(self, cp_id: str, payload: dict[str, Any]) -> Any:
        self.state(cp_id).diagnostics_status = payload["status"]
        return call_result.DiagnosticsStatusNotification()

    def _id_tag_info(self, id_tag: str) -> Any:
        info = self.behaviour.id_tags.id_tag_info(id_tag, self._clock())
        statuses = {s.value for s in AuthorizationStatus}  # a 2.0.1-only status is Invalid in 1.6
        status = info["status"] if info["status"] in statuses else AuthorizationStatus.invalid.value
        return datatypes.IdTagInfo(status=AuthorizationStatus(status),
                                   parent_id_tag=info.get("parentIdTag"), expiry_date=info.get("expiryDate"))
