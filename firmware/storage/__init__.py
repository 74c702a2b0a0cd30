"""Durable state on SQLite (standard library): schema migrations, settings, (next) queues."""

from firmware.storage.database import Database, StorageError

__all__ = ["Database", "StorageError"]
