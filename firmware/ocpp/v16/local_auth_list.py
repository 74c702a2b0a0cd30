"""Local Auth List Management over OCPP 1.6 (§3.5.2, §5.10, §5.15): GetLocalListVersion, SendLocalList, the keys
of the feature profile, and LocalListConflict.

The list itself is :class:`~firmware.storage.auth_stores.LocalAuthorizationList` (atomic updates with their
version, on disk); who wins over whom when a card is presented is
:func:`firmware.charger.authorization.decide` (docs/authorization.md). This feature owns the keys
LocalAuthListEnabled, LocalAuthListMaxLength and SendLocalListMaxLength: the authorization feature asks
:meth:`LocalAuthList.enabled`, and tells :meth:`LocalAuthList.conflict` when the CSMS contradicts the list.

* LocalAuthListEnabled false: the list is neither consulted nor changed — GetLocalListVersion answers -1 and
  SendLocalList NotSupported (OCTT TC_042_1, TC_043_1), and the stored list comes back as it was when the key
  is set to true again.
* SendLocalList is answered Failed, with the list unchanged, for more entries than SendLocalListMaxLength, a
  list that would hold more than LocalAuthListMaxLength, an id given twice, a Full update with an entry
  lacking its idTagInfo, or a storage failure; VersionMismatch for a Differential update whose version is not
  above the current one. A request so large that it exceeds the RPC layer's bound on a payload
  (``firmware.ocpp.rpc.MAX_PAYLOAD_VALUES``: 1,600 to 2,500 entries, as their fields go) is refused before it gets
  here, with a CALLERROR OccurrenceConstraintViolation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.session.id_token import mask_token
from firmware.storage.auth_stores import (
    LOCAL_AUTH_LIST_MAX_LENGTH,
    IdTagInfo,
    ListUpdateStatus,
    LocalAuthorizationList,
)

log = logging.getLogger(__name__)

#: SendLocalListMaxLength: the most identifiers one SendLocalList.req may carry. About 100 bytes each, so a full
#: request stays far below the 1 MiB frame limit of ``firmware.ocpp.rpc``, and its 6,000 or so JSON values below
#: ``MAX_PAYLOAD_VALUES``; 100 requests fill a list of LocalAuthListMaxLength.
SEND_LOCAL_LIST_MAX_LENGTH = 1_000

KEYS = (
    KeyDefinition("LocalAuthListEnabled", KeyType.BOOL, "true"),
    KeyDefinition("LocalAuthListMaxLength", KeyType.INT, str(LOCAL_AUTH_LIST_MAX_LENGTH), readonly=True),
    KeyDefinition("SendLocalListMaxLength", KeyType.INT, str(SEND_LOCAL_LIST_MAX_LENGTH), readonly=True),
)

#: The feature profile this module adds to SupportedFeatureProfiles.
PROFILE = "LocalAuthListManagement"

#: ``report(errorCode, info)``: a StatusNotification for connector 0 (``StatusReporter.charge_point_error``).
ReportError = Callable[[str, str], bool]


class LocalAuthList:
    def __init__(self, ctx: V16Context, report_error: ReportError) -> None:
        self.ctx = ctx
        self.store = LocalAuthorizationList(ctx.db, ctx.keys.get_int("LocalAuthListMaxLength"))
        self._report_error = report_error

    def enabled(self) -> bool:
        return self.ctx.keys.get_bool("LocalAuthListEnabled")

    # --- GetLocalListVersion (§5.10) ------------------------------------------------------------------

    @handles(Action.get_local_list_version)
    async def _get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(list_version=self.list_version())

    def list_version(self) -> int:
        """-1 while the list is disabled (no list is supported then), 0 while it is empty, else its version."""
        if not self.enabled():
            return -1
        return self.store.version

    # --- SendLocalList (§5.15) ------------------------------------------------------------------------

    @handles(Action.send_local_list, validated_here_only=True)  # the largest request there is
    async def _send_local_list(self, list_version: int, update_type: str,
                               local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        return call_result.SendLocalList(status=self.send_local_list(list_version, update_type,
                                                                     local_authorization_list or []))

    def send_local_list(self, version: int, update_type: str, entries: list[dict[str, Any]]) -> str:
        """One SendLocalList.req (entries as the library hands them over: snake_case keys); the status."""
        if not self.enabled():
            log.info("SendLocalList refused: LocalAuthListEnabled is false")
            return "NotSupported"
        limit = self.ctx.keys.get_int("SendLocalListMaxLength")
        if len(entries) > limit:
            log.warning("SendLocalList refused: more entries than SendLocalListMaxLength",
                        extra={"entries": len(entries), "max_length": limit})
            return ListUpdateStatus.FAILED.value
        changes = [(str(e["id_tag"]), _info(e.get("id_tag_info"))) for e in entries]
        status = self.store.apply(version, changes, full=update_type == "Full")
        log.info("SendLocalList", extra={"update_type": update_type, "version": version, "entries": len(entries),
                                         "status": status.value})
        return status.value

    # --- LocalListConflict (§3.5.2) -------------------------------------------------------------------

    def conflict(self, id_tag: str, listed: IdTagInfo, answer: IdTagInfo) -> None:
        """The CSMS's IdTagInfo for a listed id contradicts the list: StatusNotification on connector 0 with
        errorCode LocalListConflict. The list stays as the CSMS last sent it; the CSMS's answer is what the
        charge point acts on for this id now."""
        info = f"list {listed.status.value}, CSMS {answer.status.value}"
        sent = self._report_error("LocalListConflict", info)
        log.warning("local authorization list contradicted by the CSMS", extra={
            "id_tag": mask_token(id_tag), "list_status": listed.status.value, "csms_status": answer.status.value,
            "reported": sent})


def _info(raw: dict[str, Any] | None) -> IdTagInfo | None:
    if raw is None:
        return None
    return mapping.id_tag_info({"status": raw.get("status"), "expiryDate": raw.get("expiry_date"),
                                "parentIdTag": raw.get("parent_id_tag")})
