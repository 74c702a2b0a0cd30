"""Structured logging: one JSON object per line, readable by a technician and by machines.

Context goes in ``extra=`` (``log.info("meter fault", extra={"device": "meter1", "port": ...})``) and
becomes fields of the line. Values of keys that look like secrets are replaced by ``"***"`` so a
password or authorization key never reaches a log, whatever a caller passes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

SECRET_MARKERS = ("password", "passwd", "secret", "authorization", "auth_key", "authkey", "token_secret")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(m in k for m in SECRET_MARKERS)


def redact(value: Any) -> Any:
    """Copy of ``value`` with secret-looking keys masked, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = "***" if is_secret_key(key) else redact(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class DeviceLibraryLevels(logging.Filter):
    """pymodbus logs a meter that did not answer in time as an ERROR; on a charger that is an expected event of
    the line, which our driver reports in its own terms (timeouts counted, a fault after several): a WARNING.
    ERROR stays what it means in this log — a fault of the agent."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("pymodbus"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(DeviceLibraryLevels())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter stays at WARNING unless we are debugging
    for noisy in ("pymodbus", "websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


#: The agent's own copy of its log in its state directory, for GetDiagnostics (journald is not the agent's to read):
#: bounded, 4 files of 1 MB.
LOG_DIR = "logs"
LOG_FILE = "agent.log"
LOG_FILE_BYTES = 1 << 20
LOG_FILE_BACKUPS = 3


def add_file_log(state_dir: str | Path) -> Path | None:
    """Also write the log lines to ``<state_dir>/logs/agent.log`` (rotated); the file, or None when it cannot be
    opened (the agent runs on without it: the log still goes to the journal)."""
    directory = Path(state_dir) / LOG_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(directory / LOG_FILE, maxBytes=LOG_FILE_BYTES,
                                                       backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("log file not opened", extra={"dir": str(directory), "error": str(exc)})
        return None
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(DeviceLibraryLevels())
    logging.getLogger().addHandler(handler)
    return directory / LOG_FILE
