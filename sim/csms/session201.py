"""One OCPP 2.0.1 charging station's connection to the simulated CSMS (subprotocol ``ocpp2.0.1``).

Everything but the handlers is :class:`~sim.csms.server.CsmsSession`'s: framing, faults, the transcript, commands.
Requests are validated against the ocpp library's 2.0.1 schemas (``ocpp/v201/schemas``) with 2.0.1's error
codes (:func:`sim.csms.ocppj.check_payload` with ``version="2.0.1"``) before :class:`~sim.csms.logic201.CsmsLogic201`
answers them; answers to our CALLs are checked against the same schemas.
"""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from sim.csms.ocppj import OCPP201_ACTIONS
from sim.csms.server import CsmsSession, SimulatedCsms, _handles

OCPP201_SUBPROTOCOL = "ocpp2.0.1"

#: The requests a 2.0.1 CSMS takes here; a 2.0.1 action not listed is NotSupported.
HANDLED = frozenset({Action.boot_notification, Action.heartbeat, Action.status_notification, Action.authorize,
                     Action.transaction_event, Action.meter_values, Action.notify_report, Action.notify_event,
                     Action.reservation_status_update,
                     Action.firmware_status_notification, Action.log_status_notification,
                     Action.report_charging_profiles, Action.security_event_notification, Action.sign_certificate,
                     Action.data_transfer, Action.notify_charging_limit, Action.cleared_charging_limit})


class CsmsSession201(CsmsSession):
    ocpp_version = "2.0.1"
    actions = OCPP201_ACTIONS
    call_results: Any = call_result

    def __init__(self, csms: SimulatedCsms, cp_id: str, ws: ServerConnection) -> None:
        super().__init__(csms, cp_id, ws)
        # of the handlers this class inherits only those of the actions 1.6 and 2.0.1 share (SignCertificate, which
        # with a csr_signer answers by CertificateSigned; SecurityEventNotification; DataTransfer) answer here,
        # through CsmsLogic201; the others are the ones below
        self.route_map: dict[str, Any] = {action: h for action, h in self.route_map.items() if action in HANDLED}

    @_handles(Action.boot_notification)  # type: ignore[arg-type]
    def _on_boot_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.boot_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.heartbeat)  # type: ignore[arg-type]
    def _on_heartbeat(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.heartbeat(self.id, self._payloads[call_unique_id])

    @_handles(Action.status_notification)  # type: ignore[arg-type]
    def _on_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.authorize)  # type: ignore[arg-type]
    def _on_authorize(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.authorize(self.id, self._payloads[call_unique_id])

    @_handles(Action.transaction_event)  # type: ignore[arg-type]
    def _on_transaction_event(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.transaction_event(self.id, self._payloads[call_unique_id])

    @_handles(Action.meter_values)  # type: ignore[arg-type]
    def _on_meter_values(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.meter_values(self.id, self._payloads[call_unique_id])

    @_handles(Action.notify_report)  # type: ignore[arg-type]
    def _on_notify_report(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.notify_report(self.id, self._payloads[call_unique_id])

    @_handles(Action.notify_event)  # type: ignore[arg-type]
    def _on_notify_event(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.notify_event(self.id, self._payloads[call_unique_id])

    @_handles(Action.reservation_status_update)  # type: ignore[arg-type]
    def _on_reservation_status_update(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.reservation_status_update(self.id, self._payloads[call_unique_id])

    @_handles(Action.firmware_status_notification)  # type: ignore[arg-type]
    def _on_firmware_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.firmware_status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.log_status_notification)  # type: ignore[arg-type]
    def _on_log_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.log_status_notification(self.id, self._payloads[call_unique_id])
    @_handles(Action.report_charging_profiles)  # type: ignore[arg-type]
    def _on_report_charging_profiles(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.report_charging_profiles(self.id, self._payloads[call_unique_id])

    @_handles(Action.notify_charging_limit)  # type: ignore[arg-type]
    def _on_notify_charging_limit(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.notify_charging_limit(self.id, self._payloads[call_unique_id])

    @_handles(Action.cleared_charging_limit)  # type: ignore[arg-type]
    def _on_cleared_charging_limit(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.cleared_charging_limit(self.id, self._payloads[call_unique_id])
