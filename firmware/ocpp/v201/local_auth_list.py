"""D Local Authorization List over OCPP 2.0.1: SendLocalList (D01), GetLocalListVersion (D02) and the
LocalAuthListCtrlr variables — a translation of the same list the 1.6 adapter manages.

The list is :class:`~firmware.storage.auth_stores.LocalAuthorizationList` (atomic Full / Differential updates with
their version, on disk), keyed by the idToken's value; who wins over whom when a token is presented is
:func:`firmware.charger.authorization.decide` (docs/authorization.md), which
:class:`~firmware.ocpp.v201.authorization.Authorization` feeds this list while LocalAuthListCtrlr.Enabled is true.

* Enabled false: the list is neither consulted nor changed — GetLocalListVersion answers 0 (D02: no list), and
  SendLocalList Failed (2.0.1 has no NotSupported for it); the stored list comes back when Enabled is set again.
* SendLocalList is answered Failed, with the list unchanged, for more entries than ItemsPerMessage, a request
  longer than BytesPerMessage (as JSON), a list that would hold more than Entries' maxLimit, an idToken given twice,
  a Full update with an entry lacking its idTokenInfo, or a storage failure; VersionMismatch for a Differential
  update whose versionNumber is not above the current one. An entry of a Differential update without idTokenInfo
  removes that idToken.
* Entries is the actual number of idTokens on the list, read when asked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.storage.auth_stores import IdTagInfo, ListUpdateStatus, LocalAuthorizationList

log = logging.getLogger(__name__)

COMPONENT = "LocalAuthListCtrlr"


class LocalAuthList:
    def __init__(self, ctx: V201Context) -> None:
        self.ctx = ctx
        entries = ctx.variables.definitions[VariableKey(COMPONENT, "Entries")]
        assert entries.maximum is not None  # device_model.json gives Entries its maxLimit
        self.store = LocalAuthorizationList(ctx.db, int(entries.maximum))
        ctx.variables.provide(entries.key, lambda: str(len(self.store)))

    def enabled(self) -> bool:
        return self.ctx.variables.get_bool(COMPONENT, "Enabled")

    # --- GetLocalListVersion (D02) --------------------------------------------------------------------

    @handles(Action.get_local_list_version)
    async def _get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(version_number=self.list_version())

    def list_version(self) -> int:
        """0 while the list is disabled or empty, else its version."""
        return self.store.version if self.enabled() else 0

    # --- SendLocalList (D01) --------------------------------------------------------------------------

    @handles(Action.send_local_list, validated_here_only=True)  # the largest request there is
    async def _send_local_list(self, version_number: int, update_type: str,
                               local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        entries = [snake_to_camel_case(e) for e in local_authorization_list or []]
        return call_result.SendLocalList(status=self.send_local_list(version_number, update_type, entries))

    def send_local_list(self, version: int, update_type: str, entries: list[dict[str, Any]]) -> str:
        """One SendLocalListRequest (entries as on the wire: ``{"idToken": …, "idTokenInfo": …}``); the status."""
        if not self.enabled():
            log.info("SendLocalList refused: LocalAuthListCtrlr.Enabled is false")
            return ListUpdateStatus.FAILED.value
        items = self.ctx.variables.get_int(COMPONENT, "ItemsPerMessage")
        size = len(json.dumps({"versionNumber": version, "updateType": update_type,
                               "localAuthorizationList": entries}, separators=(",", ":")))
        limit = self.ctx.variables.get_int(COMPONENT, "BytesPerMessage")
        if len(entries) > items or size > limit:
            log.warning("SendLocalList refused: over ItemsPerMessage or BytesPerMessage",
                        extra={"entries": len(entries), "items_per_message": items, "bytes": size,
                               "bytes_per_message": limit})
            return ListUpdateStatus.FAILED.value
        changes = [(str(e["idToken"]["idToken"]), _info(e.get("idTokenInfo"))) for e in entries]
        status = self.store.apply(version, changes, full=update_type == "Full")
        log.info("SendLocalList", extra={"update_type": update_type, "version": version, "entries": len(entries),
                                         "status": status.value})
        return status.value


def _info(raw: object) -> IdTagInfo | None:
    return mapping.id_token_info(raw) if isinstance(raw, dict) else None
