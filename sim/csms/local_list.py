"""OCPP 1.6 SendLocalList requests from plain values: a Local Authorization List entry, and a large list cut
into requests of at most SendLocalListMaxLength entries (one Full update, then Differential ones).

Pure (no I/O), so the simulated CSMS, the control API, the tests and the bench build the same payloads. Whether a
payload is valid 1.6 is :func:`sim.csms.ocppj.check_payload`'s job; whether the charge point takes it is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sim.csms.transcript import utc_timestamp

UPDATE_TYPES = ("Full", "Differential")
STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")


def entry(id_tag: str, status: str | None = "Accepted", *, expiry_date: datetime | None = None,
          parent_id_tag: str | None = None) -> dict[str, Any]:
    """One localAuthorizationList item; ``status=None``: the id alone (a Differential update removes it)."""
    item: dict[str, Any] = {"idTag": id_tag}
    if status is None:
        return item
    info: dict[str, Any] = {"status": status}
    if expiry_date is not None:
        info["expiryDate"] = utc_timestamp(expiry_date)
    if parent_id_tag is not None:
        info["parentIdTag"] = parent_id_tag
    item["idTagInfo"] = info
    return item


def request(version: int, update_type: str, entries: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    """A SendLocalList.req payload; ``entries=None`` omits the list (a Full update then empties it)."""
    payload: dict[str, Any] = {"listVersion": version, "updateType": update_type}
    if entries is not None:
        payload["localAuthorizationList"] = list(entries)
    return payload


@dataclass(frozen=True)
class Chunk:
    version: int
    update_type: str
    entries: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        return request(self.version, self.update_type, self.entries)


def chunked(entries: Sequence[dict[str, Any]], first_version: int, chunk: int) -> list[Chunk]:
    """A whole list as the requests that install it when at most ``chunk`` ids fit in one: a Full update with
    the first ``chunk`` entries and version ``first_version``, then Differential updates adding the rest, each
    one version above the previous. The last request's version is the list's."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if not entries:
        return [Chunk(first_version, "Full", [])]
    return [Chunk(first_version + i, "Full" if i == 0 else "Differential", list(entries[start:start + chunk]))
            for i, start in enumerate(range(0, len(entries), chunk))]
