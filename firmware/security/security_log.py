"""The charge point's security log: every security event, one JSON line each, in a rolling file.

The 1.6 security whitepaper asks a charge point to keep a log of its security events (GetLog SecurityLog
uploads it); this is that file. It rolls over at ``max_bytes`` and keeps ``backups`` older files
(``security.log.1`` … newest first), so it never fills the disk. Writes are flushed at once: the log is for
after an incident. Never a secret in it: callers pass what the event is, not the credentials.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SecurityLog:
    def __init__(self, path: str | Path, *, max_bytes: int = 256 * 1024, backups: int = 3) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups

    def write(self, event: str, timestamp: datetime, tech_info: str | None = None, **fields: Any) -> None:
        """Append one event; a failure to write is logged and never raised (the event itself still goes out)."""
        record = {"timestamp": timestamp.isoformat(), "type": event, **({"techInfo": tech_info} if tech_info else {}),
                  **fields}
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            self._roll_if_full(len(line.encode("utf-8")))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as exc:
            log.warning("security log not written", extra={"path": str(self.path), "error": str(exc),
                                                           "event": event})

    def _roll_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for n in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                os.replace(newer, older)

    def files(self) -> list[Path]:
        """The log's files, oldest first (what an upload sends)."""
        olds = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.backups, 0, -1)]
        return [p for p in [*olds, self.path] if p.exists()]
