"""What crossed the wire between a CSMS and its charge points, in order, as evidence.

Tests assert on the transcript rather than on the simulator's internals, so what the agent *actually
sent* (including frames that failed validation) is what gets checked. Every entry can be appended to a
JSON-lines file for CI artefacts; the in-memory copy answers queries and lets tests ``await`` a frame.

Frames are recorded when they are received, or just before they are sent, so the order in the
transcript is the order on the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class EntryKind(StrEnum):
    CALL = "CALL"
    CALLRESULT = "CALLRESULT"
    CALLERROR = "CALLERROR"
    MALFORMED = "malformed"  # a frame that is not OCPP-J (bad JSON, wrong shape, binary)
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    REFUSED = "refused"  # opening handshake answered with an HTTP error


FRAME_KINDS = frozenset({EntryKind.CALL, EntryKind.CALLRESULT, EntryKind.CALLERROR, EntryKind.MALFORMED})
EVENT_KINDS = frozenset({EntryKind.CONNECT, EntryKind.DISCONNECT, EntryKind.REFUSED})


class Direction(StrEnum):
    FROM_CP = "from_cp"  # charge point -> CSMS
    TO_CP = "to_cp"  # CSMS -> charge point


def utc_timestamp(ts: datetime) -> str:
    """OCPP-style UTC timestamp with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class TranscriptEntry:
    """One frame or connection event.

    For a CALLERROR, ``payload`` holds the errorDetails object and the code/description have their own
    fields. ``raw`` is the frame text exactly as it crossed the wire.
    """

    seq: int
    ts: datetime
    cp_id: str | None
    kind: EntryKind
    direction: Direction | None = None
    unique_id: str | None = None
    action: str | None = None
    payload: Any = None
    error_code: str | None = None
    error_description: str | None = None
    raw: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": utc_timestamp(self.ts),
            "cp_id": self.cp_id,
            "kind": str(self.kind),
            "direction": None if self.direction is None else str(self.direction),
            "unique_id": self.unique_id,
            "action": self.action,
            "payload": self.payload,
            "error_code": self.error_code,
            "error_description": self.error_description,
            "raw": self.raw,
            "detail": self.detail,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


class Transcript:
    """Append-only record with query helpers; optionally mirrored to a JSON-lines file."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._entries: list[TranscriptEntry] = []
        self._path = Path(path) if path is not None else None
        self._file: TextIO | None = None
        self._appended = asyncio.Event()

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def entries(self) -> list[TranscriptEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> int:
        """Position to pass as ``since=`` so a later query ignores what was recorded before."""
        return len(self._entries)

    def record(
        self,
        kind: EntryKind,
        *,
        cp_id: str | None,
        direction: Direction | None = None,
        unique_id: str | None = None,
        action: str | None = None,
        payload: Any = None,
        error_code: str | None = None,
        error_description: str | None = None,
        raw: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> TranscriptEntry:
        entry = TranscriptEntry(
            seq=len(self._entries), ts=datetime.now(UTC), cp_id=cp_id, kind=kind, direction=direction,
            unique_id=unique_id, action=action, payload=payload, error_code=error_code,
            error_description=error_description, raw=raw, detail=dict(detail or {}),
        )
        self._entries.append(entry)
        self._write(entry)
        # wake every waiter; they re-scan from where they were
        self._appended.set()
        self._appended = asyncio.Event()
        return entry

    def _write(self, entry: TranscriptEntry) -> None:
        if self._path is None:
            return
        try:
            if self._file is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("a", encoding="utf-8")
            self._file.write(entry.to_json() + "\n")
            self._file.flush()
        except OSError as exc:
            # the in-memory transcript stays complete; a full disk must not take the CSMS down
            log.error("transcript file write failed", extra={"path": str(self._path), "error": str(exc)})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- queries -------------------------------------------------------------------------------

    def messages(
        self,
        cp_id: str | None = None,
        *,
        action: str | None = None,
        direction: Direction | None = None,
        kind: EntryKind | None = None,
        since: int = 0,
    ) -> list[TranscriptEntry]:
        """Frames (not connection events) matching every given filter, oldest first."""
        return [
            e for e in self._entries[since:]
            if e.kind in FRAME_KINDS and _matches(e, cp_id, action, direction, kind)
        ]

    def events(
        self, cp_id: str | None = None, *, kind: EntryKind | None = None, since: int = 0
    ) -> list[TranscriptEntry]:
        """Connection events (connect / disconnect / refused) matching the filters, oldest first."""
        return [
            e for e in self._entries[since:]
            if e.kind in EVENT_KINDS and _matches(e, cp_id, None, None, kind)
        ]

    def response_to(self, call: TranscriptEntry) -> TranscriptEntry | None:
        """The CALLRESULT/CALLERROR answering ``call`` (same uniqueId, opposite direction), if any yet."""
        for e in self._entries[call.seq + 1:]:
            if _is_response_to(e, call):
                return e
        return None

    # ---- waiting -------------------------------------------------------------------------------

    async def wait_for(
        self,
        action: str | None = None,
        predicate: Callable[[TranscriptEntry], bool] | None = None,
        *,
        cp_id: str | None = None,
        direction: Direction | None = Direction.FROM_CP,
        kind: EntryKind | None = EntryKind.CALL,
        timeout_s: float = 5.0,
        since: int = 0,
    ) -> TranscriptEntry:
        """First entry at or after ``since`` that matches; waits up to ``timeout_s`` s for it.

        Defaults look for a CALL from a charge point. Raises ``TimeoutError`` naming what was asked.
        """
        def match(e: TranscriptEntry) -> bool:
            return _matches(e, cp_id, action, direction, kind) and (predicate is None or predicate(e))

        what = f"{kind or 'any'} {action or ''} {direction or ''} cp={cp_id or '*'}"
        return await self._wait(match, since, timeout_s, what)

    async def wait_for_response(self, call: TranscriptEntry, timeout_s: float = 5.0) -> TranscriptEntry:
        return await self._wait(
            lambda e: _is_response_to(e, call), call.seq + 1, timeout_s, f"response to {call.unique_id}"
        )

    async def wait_for_event(
        self, kind: EntryKind, cp_id: str | None = None, *, timeout_s: float = 5.0, since: int = 0
    ) -> TranscriptEntry:
        return await self._wait(lambda e: _matches(e, cp_id, None, None, kind), since, timeout_s,
                                f"{kind} cp={cp_id or '*'}")

    async def _wait(
        self, match: Callable[[TranscriptEntry], bool], since: int, timeout_s: float, what: str
    ) -> TranscriptEntry:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        index = since
        while True:
            while index < len(self._entries):
                entry = self._entries[index]
                index += 1
                if match(entry):
                    return entry
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no transcript entry {what!s} within {timeout_s} s "
                                   f"({len(self._entries) - since} entries seen)")
            try:
                await asyncio.wait_for(self._appended.wait(), remaining)
            except TimeoutError:
                pass  # re-scan once more, then raise above


def _matches(
    e: TranscriptEntry,
    cp_id: str | None,
    action: str | None,
    direction: Direction | None,
    kind: EntryKind | None,
) -> bool:
    return ((cp_id is None or e.cp_id == cp_id)
            and (action is None or e.action == action)
            and (direction is None or e.direction == direction)
            and (kind is None or e.kind == kind))


def _is_response_to(e: TranscriptEntry, call: TranscriptEntry) -> bool:
    return (e.kind in (EntryKind.CALLRESULT, EntryKind.CALLERROR)
            and e.unique_id == call.unique_id
            and e.cp_id == call.cp_id
            and e.direction is not None and e.direction != call.direction)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Load a transcript file written by :class:`Transcript` (one JSON object per line)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
