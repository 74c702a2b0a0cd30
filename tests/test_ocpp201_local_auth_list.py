"""The 2.0.1 Local Authorization List's translation (firmware/ocpp/v201/local_auth_list.py) onto the shared store:
an IdTokenInfo's group and cacheExpiryDateTime kept, a Differential entry without idTokenInfo removing its token,
Failed over BytesPerMessage with nothing changed, and Entries read live. The messages end to end are in
tests/test_e2e_ocpp201.py (test_local_authorization_list)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from firmware.config import parse_config
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel
from firmware.ocpp.v201.local_auth_list import LocalAuthList
from firmware.session import AuthStatus
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from tests.test_config import GOOD


def _local_list(tmp_path: Path) -> LocalAuthList:
    db = Database(tmp_path / "agent.db")
    ctx = V201Context(parse_config(GOOD), {}, db, DeviceModel(db), Ledger(db), Outbox(db), lambda _: None)
    return LocalAuthList(ctx)


def _entry(token: str, info: dict | None) -> dict:
    entry: dict = {"idToken": {"idToken": token, "type": "ISO14443"}}
    if info is not None:
        entry["idTokenInfo"] = info
    return entry


def test_full_and_differential_keep_the_token_info(tmp_path: Path) -> None:
    feature = _local_list(tmp_path)
    group = {"idToken": "FLEET1", "type": "Central"}
    status = feature.send_local_list(2, "Full", [
        _entry("AA01", {"status": "Accepted", "groupIdToken": group, "cacheExpiryDateTime": "2031-01-02T03:04:05Z"}),
        _entry("AA02", {"status": "Blocked"})])
    assert status == "Accepted"
    info = feature.store.get("AA01")
    assert info is not None and info.status is AuthStatus.ACCEPTED and info.parent_id_tag == "FLEET1"
    assert info.expiry == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert feature.ctx.variables.get("LocalAuthListCtrlr", "Entries") == "2"

    assert feature.send_local_list(3, "Differential", [_entry("AA02", None)]) == "Accepted"
    assert feature.store.get("AA02") is None
    assert feature.list_version() == 3 and feature.ctx.variables.get("LocalAuthListCtrlr", "Entries") == "1"
    assert feature.send_local_list(4, "Full", [_entry("AA03", None)]) == "Failed"  # a Full entry needs its info


def test_over_bytes_per_message_fails_and_changes_nothing(tmp_path: Path) -> None:
    feature = _local_list(tmp_path)
    limit = feature.ctx.variables.get_int("LocalAuthListCtrlr", "BytesPerMessage")
    assert feature.send_local_list(1, "Full", [_entry("AA01", {"status": "Accepted"})]) == "Accepted"
    message = {"format": "UTF8", "content": "x" * 512}  # the longest personalMessage the schema allows
    big = [_entry(f"{i:036d}", {"status": "Accepted", "personalMessage": message}) for i in range(500)]
    assert len(big) <= feature.ctx.variables.get_int("LocalAuthListCtrlr", "ItemsPerMessage")
    assert len(str(big)) > limit
    assert feature.send_local_list(2, "Full", big) == "Failed"
    assert feature.list_version() == 1 and len(feature.store) == 1
