"""The one fault latch every driver reports its faults through.

A device says "fault X" on every poll or report while X lasts; its consumers (the session state machine,
OCPP StatusNotification, telemetry) want one ``DeviceFault`` when X starts and one ``DeviceRecovered`` when it
ends, and never a recovery without a fault before it. :class:`FaultLatch` keeps the set of active codes for
one device and turns "raise"/"clear" calls into exactly those transitions. It holds no timing and no policy
(how many failed polls make a lost link is the driver's decision) and logs nothing: the driver logs with its
own context when a call returns ``True``.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from typing import Protocol

from hal.interfaces import DeviceFault, DeviceRecovered, FaultCode


class FaultEvents(Protocol):
    """Where the latch publishes: a driver's ``events`` stream (any ``EventStream`` that takes fault events)."""

    def publish(self, event: DeviceFault | DeviceRecovered, /) -> None: ...


class FaultLatch:
    """Active faults of one device, by :class:`FaultCode`, each with the causes it was raised for.

    A code is active from the ``DeviceFault`` published for it to the ``DeviceRecovered`` that ends it. Raising
    an active code again publishes nothing (its first detail stands), unless the driver uses
    :meth:`raise_causes` for a code several independent causes map to (e.g. board fault bits).
    """

    def __init__(self, device: str, events: FaultEvents) -> None:
        self.device = device
        self._events = events
        self._causes: dict[FaultCode, frozenset[str]] = {}  # in the order the codes were raised

    @property
    def active(self) -> Mapping[FaultCode, str]:
        """The active codes (in the order they were raised) with their detail, for diagnostics."""
        return {code: _detail(causes) for code, causes in self._causes.items()}

    def __contains__(self, code: object) -> bool:
        return code in self._causes

    def raise_fault(self, code: FaultCode, detail: str) -> bool:
        """Latch ``code``; publish ``DeviceFault`` only if it was not active. True if it was published."""
        if code in self._causes:
            return False
        self._causes[code] = frozenset({detail})
        self._events.publish(DeviceFault(self.device, code, detail))
        return True

    def raise_causes(self, code: FaultCode, causes: Collection[str]) -> bool:
        """Latch ``code`` for the ``causes`` the device reports now (at least one).

        ``DeviceFault`` (detail: the causes, sorted, ``"; "``-joined) is published when the code becomes active
        and again when a cause joins the latched ones, so a second reason for the same code is not lost. The
        latched causes become ``causes``: one that went away and comes back is reported again. True if
        published.
        """
        now = frozenset(causes)
        if not now:
            raise ValueError(f"{self.device}: {code} raised without a cause")
        known = self._causes.get(code)
        self._causes[code] = now
        if known is not None and now <= known:
            return False
        self._events.publish(DeviceFault(self.device, code, _detail(now)))
        return True

    def clear(self, code: FaultCode) -> bool:
        """Unlatch ``code``; publish ``DeviceRecovered`` only if it was active. True if it was published."""
        if self._causes.pop(code, None) is None:
            return False
        self._events.publish(DeviceRecovered(self.device, code))
        return True

    def clear_all(self, *, among: Container[FaultCode] | None = None,
                  keep: Container[FaultCode] = ()) -> list[FaultCode]:
        """Clear every active code (only those in ``among``, if given) that is not in ``keep``, in the order
        they were raised; the codes cleared. A driver whose status report lists its faults in full clears the
        ones the report no longer shows with ``among=<codes the report can show>, keep=<those it shows>``."""
        gone = [code for code in self._causes if (among is None or code in among) and code not in keep]
        for code in gone:
            self.clear(code)
        return gone


def _detail(causes: frozenset[str]) -> str:
    return "; ".join(sorted(causes))
