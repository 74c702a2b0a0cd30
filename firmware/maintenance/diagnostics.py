"""The diagnostics archive a CSMS fetches (OCPP 1.6 GetDiagnostics; 2.0.1 GetLog): one ``.tar.gz`` holding

* ``log.jsonl`` — the agent's log lines (its own copy in the state directory, firmware/logs.py) within the
  requested time window (both ends optional), oldest first;
* ``configuration.json`` — the agent's configuration file as parsed, secrets masked (firmware/logs.py ``redact``:
  passwords, authorization keys), and the protocol's configuration keys as the adapter gives them (masked too);
* ``selftest.json`` — what each device and task says now (the running agent holds the ports, so this is its live
  view, not a fresh probe: ``python -m firmware selftest`` is the probe, for a stopped agent);
* ``storage.json`` — the database: its size, schema version, row counts, open transactions, queued messages.

Version-agnostic: the adapter hands in its keys; the upload itself is :mod:`transfer`'s.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.logs import LOG_DIR, LOG_FILE, redact
from firmware.storage import Database

log = logging.getLogger(__name__)


@dataclass
class DiagnosticsSources:
    charge_point_id: str
    config_path: str
    state_dir: Path
    db: Database
    live: Callable[[], dict[str, Any]]  # devices, connectors, tasks, outbox (firmware/station_report.py)
    keys: Callable[[], dict[str, Any]] = dict  # the protocol's configuration keys, secrets masked by the adapter


def _ts(line: str) -> datetime | None:
    try:
        value = json.loads(line).get("ts")
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def log_lines(state_dir: Path, start: datetime | None, stop: datetime | None) -> list[str]:
    """The agent's log lines within [start, stop], oldest first (rotated files included)."""
    directory = state_dir / LOG_DIR
    rotated = sorted(directory.glob(f"{LOG_FILE}.*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                     else 0)  # agent.log.3 is the oldest
    files = [*rotated, directory / LOG_FILE]
    lines: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            ts = _ts(line)
            if ts is None or (start is not None and ts < start) or (stop is not None and ts > stop):
                continue
            lines.append(line)
    return lines


def _configuration(sources: DiagnosticsSources) -> dict[str, Any]:
    try:
        parsed: Any = tomllib.loads(Path(sources.config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        parsed = {"error": f"cannot read {sources.config_path}: {exc}"}
    return {"file": sources.config_path, "agent": redact(parsed), "keys": redact(sources.keys())}


def _storage(db: Database) -> dict[str, Any]:
    with db.read() as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                                             "LIKE 'sqlite_%' ORDER BY name")]
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        open_tx = conn.execute("SELECT count(*) FROM transactions WHERE stopped_at IS NULL").fetchone()[0] \
            if "transactions" in tables else 0
        queued = [dict(zip(("action", "count"), r, strict=True)) for r in conn.execute(
            "SELECT action, count(*) FROM outbox GROUP BY action ORDER BY action")] if "outbox" in tables else []
    size = sum(p.stat().st_size for p in db.path.parent.glob(db.path.name + "*") if p.is_file())
    return {"path": str(db.path), "bytes": size, "schema": db.version, "rows": counts,
            "open_transactions": open_tx, "queued": queued}


def build_archive(sources: DiagnosticsSources, dest_dir: Path, start: datetime | None = None,
                  stop: datetime | None = None) -> Path:
    """Write the archive into ``dest_dir``; its path (name: ``diagnostics-<id>-<UTC time>.tar.gz``)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for old in dest_dir.glob("diagnostics-*.tar.gz"):  # one at a time: the last one asked for
        old.unlink()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = dest_dir / f"diagnostics-{sources.charge_point_id}-{stamp}.tar.gz"
    members: dict[str, bytes] = {
        "log.jsonl": ("\n".join(log_lines(sources.state_dir, start, stop)) + "\n").encode(),
        "configuration.json": json.dumps(_configuration(sources), indent=2, default=str).encode(),
        "selftest.json": json.dumps(sources.live(), indent=2, default=str).encode(),
        "storage.json": json.dumps(_storage(sources.db), indent=2, default=str).encode(),
    }
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path
