"""The installed charging profiles, on disk (schema v6), so that smart charging keeps working after a power cut
and without the CSMS.

Storage only: which profiles are installed, replaced or dropped is decided by
:mod:`firmware.charger.smart_charging.installed`; a profile is kept as the JSON of its persisted form
(``ChargingProfile.to_dict``), which the charger layer reads back and checks. A replacement — the old profiles out,
the new one in — is one commit: a power cut leaves the old set or the new one, and a replaced profile never comes
back after a restart (libocpp #1051).

A RemoteStartTransaction's profile waits for the transaction it starts (per connector) in the settings table
(``smart_charging.pending.<connector>``), so that a restart in between does not lose it; it leaves the settings in
the commit that installs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from firmware.storage.database import Database
from firmware.storage.settings import Settings

PENDING_KEY = "smart_charging.pending."


@dataclass(frozen=True)
class StoredProfile:
    profile_id: int
    connector: int  # 0: the whole charger
    transaction_local_id: int | None  # a TxProfile's transaction (the connector's local id)
    document: Any  # the profile's persisted form (JSON types); whatever the row held, when read back


class ChargingProfileStore:
    """The ``charging_profiles`` table of one database. Every call is its own commit, or joins the caller's."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._settings = Settings(db)

    def load(self) -> list[StoredProfile]:
        """Every row, by id. A document that is not JSON comes back as its text: the reader refuses it."""
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT profile_id, connector, transaction_local_id, profile FROM charging_profiles "
                                "ORDER BY profile_id").fetchall()
        out = []
        for profile_id, connector, local_id, text in rows:
            try:
                document = json.loads(text)
            except (TypeError, ValueError):
                document = text
            out.append(StoredProfile(int(profile_id), int(connector), None if local_id is None else int(local_id),
                                     document))
        return out

    def save(self, added: StoredProfile | None, removed: Iterable[int] = ()) -> None:
        """Remove the profiles ``removed`` (ids) and store ``added`` (replacing a row with its id), in one commit."""
        text = None if added is None else json.dumps(added.document, separators=(",", ":"), allow_nan=False)
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM charging_profiles WHERE profile_id = ?", [(i,) for i in removed])
            if added is not None:
                conn.execute("INSERT OR REPLACE INTO charging_profiles(profile_id, connector, transaction_local_id, "
                             "profile) VALUES(?, ?, ?, ?)",
                             (added.profile_id, added.connector, added.transaction_local_id, text))

    def remove(self, profile_ids: Iterable[int]) -> None:
        self.save(None, profile_ids)

    def load_pending(self) -> dict[int, Any]:
        """The remote starts' profiles waiting for their transaction, by connector (a document that is not JSON comes
        back as its text)."""
        out: dict[int, Any] = {}
        for key, text in self._settings.with_prefix(PENDING_KEY).items():
            suffix = key[len(PENDING_KEY):]
            if not suffix.isdigit():
                continue
            try:
                out[int(suffix)] = json.loads(text)
            except ValueError:
                out[int(suffix)] = text
        return out

    def save_pending(self, connector: int, document: Any | None) -> None:
        """Keep ``document`` waiting for ``connector``'s next transaction (None: nothing waits there)."""
        with self.db.transaction() as conn:
            if document is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (f"{PENDING_KEY}{connector}",))
            else:
                self._settings.put(f"{PENDING_KEY}{connector}",
                                   json.dumps(document, separators=(",", ":"), allow_nan=False))
