"""Durable state on SQLite (standard library): the database and its migrations (``database``), key/value
settings (``settings``), billing records (``ledger``), the outbox (``outbox``) and the local authorization stores
(``auth_stores``); docs/storage.md."""

from firmware.storage.database import Database, StorageError

__all__ = ["Database", "StorageError"]
