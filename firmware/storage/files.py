"""State kept in small files rather than in the database (an update or upload job, a fetched CRL): written so that a
power cut at any instant leaves the old content or the new, never a torn file — beside the target, fsynced, renamed
over it, the directory fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """``data`` as ``path`` (created with ``mode``), durable once this returns."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json_durably(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON in ``path`` (a job's state: readable by the agent's user only)."""
    write_durably(path, json.dumps(data, sort_keys=True).encode())
