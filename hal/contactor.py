"""Contactor supervision from the mirror contact: welded and failed-to-close detection.

Pure logic, shared by every board driver. A contactor needs some tens of milliseconds to move, so a
mismatch between command and mirror contact only counts once it has lasted ``settle_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.interfaces import FaultCode


@dataclass(frozen=True)
class ContactorVerdict:
    code: FaultCode
    active: bool  # True: fault raised now; False: fault cleared now


class ContactorSupervisor:
    """Feed it the commanded state and the mirror contact with a monotonic time; it reports changes."""

    def __init__(self, settle_s: float = 0.5) -> None:
        self.settle_s = settle_s
        self._commanded = False
        self._mismatch_since: float | None = None
        self._active: FaultCode | None = None

    def deadline(self) -> float | None:
        """When a running mismatch will have lasted ``settle_s`` (``update`` is due then), or None."""
        return None if self._mismatch_since is None or self._active is not None else \
            self._mismatch_since + self.settle_s

    @property
    def active_fault(self) -> FaultCode | None:
        return self._active

    def update(self, now: float, commanded: bool, feedback: bool) -> list[ContactorVerdict]:
        if commanded != self._commanded:
            self._commanded = commanded
            self._mismatch_since = None  # a new command gets a fresh settle time
        verdicts: list[ContactorVerdict] = []
        if commanded == feedback:
            self._mismatch_since = None
            if self._active is not None:
                verdicts.append(ContactorVerdict(self._active, False))
                self._active = None
            return verdicts
        if self._mismatch_since is None:
            self._mismatch_since = now
        wanted = FaultCode.CONTACTOR_FAILED_TO_CLOSE if commanded else FaultCode.CONTACTOR_WELDED
        if now - self._mismatch_since >= self.settle_s and self._active != wanted:
            if self._active is not None:
                verdicts.append(ContactorVerdict(self._active, False))
            self._active = wanted
            verdicts.append(ContactorVerdict(wanted, True))
        return verdicts
