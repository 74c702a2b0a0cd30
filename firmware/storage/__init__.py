"""Durable state on SQLite (standard library): the database and its migrations (``database``), key/value
settings (``settings``), billing records (``ledger``) and the outbox (``outbox``); docs/storage.md."""

from firmware.storage.database import Database, StorageError

__all__ = ["Database", "StorageError"]
