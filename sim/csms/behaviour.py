"""What the simulated CSMS answers: boot sequences, idTag lists, DataTransfer answers, injected faults.

Kept apart from the server so a test (or a TOML file for ``python -m sim csms --config``) can script the
central system without touching sockets. Everything is validated when it is set, so a typo in a test
fails at the line that made it, not as a schema error on the wire later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16.enums import AuthorizationStatus, DataTransferStatus, RegistrationStatus
from ocpp.v201.enums import AuthorizationStatusEnumType

from sim.csms.ocppj import ErrorCode
from sim.csms.transcript import utc_timestamp

MAX_ID_TAG_LENGTH = 20  # IdToken is CiString20Type


class BehaviourError(ValueError):
    """A scripted behaviour that no OCPP 1.6 CSMS could produce (bad status, empty sequence, ...)."""


@dataclass
class ChargePointProfile:
    """Per charge point: what BootNotification answers, in order, and the security profile 1 password."""

    boot_statuses: list[str] = field(default_factory=lambda: [RegistrationStatus.accepted.value])
    heartbeat_interval: int = 60
    # interval sent with Pending/Rejected: the minimum wait before the next BootNotification (OCPP 1.6 BootNotification)
    boot_retry_interval: int | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.boot_statuses:
            raise BehaviourError("boot_statuses: at least one status")
        self.boot_statuses = [_enum_value(RegistrationStatus, s, "boot status") for s in self.boot_statuses]
        if self.heartbeat_interval < 0 or (self.boot_retry_interval or 0) < 0:
            raise BehaviourError("intervals must be >= 0 s")

    def boot_answer(self, boot_index: int) -> tuple[str, int]:
        """(status, interval) for the ``boot_index``-th BootNotification (0-based); the last status repeats."""
        status = self.boot_statuses[min(boot_index, len(self.boot_statuses) - 1)]
        if status == RegistrationStatus.accepted or self.boot_retry_interval is None:
            return status, self.heartbeat_interval
        return status, self.boot_retry_interval


@dataclass(frozen=True)
class IdTagEntry:
    status: str
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None


#: What an idTag may be answered: the 1.6 statuses and 2.0.1's own (Unknown, NoCredit, NotAtThisLocation, ...), which
#: a 1.6 session answers as Invalid (1.6 has no such status).
ID_TAG_STATUSES = tuple(dict.fromkeys([*(s.value for s in AuthorizationStatus),
                                       *(s.value for s in AuthorizationStatusEnumType)]))


class IdTagDirectory:
    """The CSMS's authorization list. Lookups are case-insensitive: IdToken is a CiString20."""

    def __init__(self, default_status: str = AuthorizationStatus.invalid.value) -> None:
        self._entries: dict[str, IdTagEntry] = {}
        self.default_status = default_status

    @property
    def default_status(self) -> str:
        return self._default_status

    @default_status.setter
    def default_status(self, status: str) -> None:
        self._default_status = _enum_value(AuthorizationStatus, status, "idTag status")

    def set(self, id_tag: str, status: str, *, expiry_date: datetime | None = None,
            parent_id_tag: str | None = None) -> None:
        _check_id_tag(id_tag, "idTag")
        if parent_id_tag is not None:
            _check_id_tag(parent_id_tag, "parentIdTag")
        if expiry_date is not None and expiry_date.tzinfo is None:
            raise BehaviourError("expiry_date must be timezone-aware (OCPP times are UTC)")
        self._entries[id_tag.casefold()] = IdTagEntry(
            _enum_value(ID_TAG_STATUSES, status, "idTag status"), expiry_date, parent_id_tag)

    def accept(self, *id_tags: str, expiry_date: datetime | None = None,
               parent_id_tag: str | None = None) -> None:
        for t in id_tags:
            self.set(t, AuthorizationStatus.accepted, expiry_date=expiry_date, parent_id_tag=parent_id_tag)

    def block(self, *id_tags: str, parent_id_tag: str | None = None) -> None:
        for t in id_tags:
            self.set(t, AuthorizationStatus.blocked, parent_id_tag=parent_id_tag)

    def expire(self, *id_tags: str, expiry_date: datetime | None = None,
               parent_id_tag: str | None = None) -> None:
        """Status Expired; ``expiry_date`` defaults to one day ago so the answer carries a past date."""
        when = expiry_date or datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        for t in id_tags:
            self.set(t, AuthorizationStatus.expired, expiry_date=when, parent_id_tag=parent_id_tag)

    def invalidate(self, *id_tags: str) -> None:
        for t in id_tags:
            self.set(t, AuthorizationStatus.invalid)

    def concurrent(self, *id_tags: str, parent_id_tag: str | None = None) -> None:
        for t in id_tags:
            self.set(t, AuthorizationStatus.concurrent_tx, parent_id_tag=parent_id_tag)

    def remove(self, id_tag: str) -> None:
        self._entries.pop(id_tag.casefold(), None)

    def lookup(self, id_tag: str) -> IdTagEntry | None:
        return self._entries.get(id_tag.casefold())

    def id_tag_info(self, id_tag: str, now: datetime) -> dict[str, Any]:
        """The IdTagInfo object (camelCase, as on the wire) for ``id_tag`` at time ``now``.

        An Accepted entry whose expiry date has passed answers Expired, as a real CSMS would.
        """
        entry = self.lookup(id_tag)
        if entry is None:
            return {"status": self.default_status}
        status = entry.status
        if status == AuthorizationStatus.accepted and entry.expiry_date is not None and entry.expiry_date <= now:
            status = AuthorizationStatus.expired.value
        info: dict[str, Any] = {"status": status}
        if entry.expiry_date is not None:
            info["expiryDate"] = utc_timestamp(entry.expiry_date)
        if entry.parent_id_tag is not None:
            info["parentIdTag"] = entry.parent_id_tag
        return info


@dataclass(frozen=True)
class DataTransferAnswer:
    status: str
    data: str | None = None


class DataTransferAnswers:
    """DataTransfer.conf per (vendorId, messageId); ``message_id=None`` answers any message of a vendor.

    A vendor we know but a messageId we do not gets UnknownMessageId; an unknown vendor gets the default
    (UnknownVendorId), as the OCPP 1.6 DataTransfer statuses mean.
    """

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str | None], DataTransferAnswer] = {}
        self.default = DataTransferAnswer(DataTransferStatus.unknown_vendor_id.value)

    def set(self, vendor_id: str, message_id: str | None = None, *, status: str = "Accepted",
            data: str | None = None) -> None:
        self._answers[(vendor_id, message_id)] = DataTransferAnswer(
            _enum_value(DataTransferStatus, status, "DataTransfer status"), data)

    def set_default(self, status: str, data: str | None = None) -> None:
        self.default = DataTransferAnswer(_enum_value(DataTransferStatus, status, "DataTransfer status"), data)

    def answer(self, vendor_id: str, message_id: str | None) -> DataTransferAnswer:
        exact = self._answers.get((vendor_id, message_id))
        if exact is not None:
            return exact
        any_message = self._answers.get((vendor_id, None))
        if any_message is not None:
            return any_message
        if any(v == vendor_id for v, _ in self._answers):
            return DataTransferAnswer(DataTransferStatus.unknown_message_id.value)
        return self.default


@dataclass
class _Fault:
    fail_remaining: int = 0
    error_code: str = ErrorCode.INTERNAL_ERROR.value
    error_description: str = "injected failure"
    ignore_remaining: int = 0
    lose_answer_remaining: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one incoming CALL: wait ``delay_s``, then drop it, fail it, or answer normally."""

    delay_s: float = 0.0
    ignore: bool = False
    lose_answer: bool = False  # process it, but send no answer
    error_code: str | None = None
    error_description: str | None = None


class FaultPlan:
    """Injected misbehaviour per action, for one charge point or (``cp_id=None``) for all of them."""

    def __init__(self) -> None:
        self._faults: dict[tuple[str | None, str], _Fault] = {}

    def fail_next(self, action: str, n: int = 1, *, error_code: str = "InternalError",
                  description: str = "injected failure", cp_id: str | None = None) -> None:
        """Answer the next ``n`` CALLs of ``action`` with a CALLERROR instead of a CALLRESULT."""
        f = self._fault(cp_id, action)
        f.fail_remaining = _non_negative(n, "n")
        f.error_code = _enum_value(ErrorCode, error_code, "CALLERROR errorCode")
        f.error_description = description

    def ignore_next(self, action: str, n: int = 1, *, cp_id: str | None = None) -> None:
        """Send no answer at all to the next ``n`` CALLs of ``action`` (the charge point times out)."""
        self._fault(cp_id, action).ignore_remaining = _non_negative(n, "n")

    def lose_answer_next(self, action: str, n: int = 1, *, cp_id: str | None = None) -> None:
        """Process the next ``n`` CALLs of ``action`` but send no answer: the CSMS has the message, the charge
        point never learns it (as when the link or the charge point dies right after the CSMS processed it)."""
        self._fault(cp_id, action).lose_answer_remaining = _non_negative(n, "n")

    def set_delay(self, action: str, seconds: float, *, cp_id: str | None = None) -> None:
        """Delay every answer to ``action`` by ``seconds`` (0 removes the delay)."""
        if seconds < 0:
            raise BehaviourError("delay must be >= 0 s")
        self._fault(cp_id, action).delay_s = seconds

    def clear(self) -> None:
        self._faults.clear()

    def take(self, cp_id: str, action: str) -> FaultDecision:
        """Decide for one CALL, consuming one pending failure/ignore. Per-charge-point settings win."""
        f = self._faults.get((cp_id, action)) or self._faults.get((None, action))
        if f is None:
            return FaultDecision()
        if f.ignore_remaining > 0:
            f.ignore_remaining -= 1
            return FaultDecision(delay_s=f.delay_s, ignore=True)
        if f.lose_answer_remaining > 0:
            f.lose_answer_remaining -= 1
            return FaultDecision(delay_s=f.delay_s, lose_answer=True)
        if f.fail_remaining > 0:
            f.fail_remaining -= 1
            return FaultDecision(delay_s=f.delay_s, error_code=f.error_code,
                                 error_description=f.error_description)
        return FaultDecision(delay_s=f.delay_s)

    def _fault(self, cp_id: str | None, action: str) -> _Fault:
        return self._faults.setdefault((cp_id, action), _Fault())


@dataclass
class CsmsBehaviour:
    """Everything scriptable about the simulated CSMS. Mutable at run time: changes apply to the next CALL."""

    default_profile: ChargePointProfile = field(default_factory=ChargePointProfile)
    profiles: dict[str, ChargePointProfile] = field(default_factory=dict)
    id_tags: IdTagDirectory = field(default_factory=IdTagDirectory)
    data_transfer: DataTransferAnswers = field(default_factory=DataTransferAnswers)
    faults: FaultPlan = field(default_factory=FaultPlan)
    # refuse the WebSocket handshake (HTTP 404) for identities without a profile
    known_charge_points_only: bool = False
    # answer CALLs other than BootNotification with SecurityError until the charge point is Accepted
    reject_calls_before_accepted: bool = False
    first_transaction_id: int = 1
    # a StartTransaction identical to one already recorded (connector, idTag, meterStart, timestamp) is a resend
    # whose answer the charge point lost: answer with the transaction id given the first time
    recognise_repeated_starts: bool = True
    # SignCertificate's answer (Accepted, or Rejected: no CertificateSigned follows even with a csr_signer)
    sign_certificate_status: str = "Accepted"

    def profile(self, cp_id: str) -> ChargePointProfile:
        return self.profiles.get(cp_id, self.default_profile)

    def is_known(self, cp_id: str) -> bool:
        return cp_id in self.profiles

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CsmsBehaviour:
        """Build from a parsed TOML/JSON document (layout in docs/sim-csms.md). Unknown keys are errors."""
        _only(data, {"csms", "charge_points", "id_tags", "data_transfer", "faults"}, "")
        csms = _table(data, "csms")
        _only(csms, {"known_charge_points_only", "reject_calls_before_accepted", "first_transaction_id",
                     "unknown_id_tag_status", "data_transfer_default_status", "recognise_repeated_starts"}, "csms")
        b = cls(known_charge_points_only=bool(csms.get("known_charge_points_only", False)),
                reject_calls_before_accepted=bool(csms.get("reject_calls_before_accepted", False)),
                first_transaction_id=int(csms.get("first_transaction_id", 1)),
                recognise_repeated_starts=bool(csms.get("recognise_repeated_starts", True)))
        if "unknown_id_tag_status" in csms:
            b.id_tags.default_status = str(csms["unknown_id_tag_status"])
        if "data_transfer_default_status" in csms:
            b.data_transfer.set_default(str(csms["data_transfer_default_status"]))
        for cp_id, raw in _table(data, "charge_points").items():
            where = f"charge_points.{cp_id}"
            if not isinstance(raw, Mapping):
                raise BehaviourError(f"{where}: expected a table")
            _only(raw, {"boot_statuses", "heartbeat_interval", "boot_retry_interval", "password"}, where)
            profile = ChargePointProfile(
                boot_statuses=list(raw.get("boot_statuses", ["Accepted"])),
                heartbeat_interval=int(raw.get("heartbeat_interval", 60)),
                boot_retry_interval=None if raw.get("boot_retry_interval") is None
                else int(raw["boot_retry_interval"]),
                password=None if raw.get("password") is None else str(raw["password"]))
            if cp_id == "default":
                b.default_profile = profile
            else:
                b.profiles[cp_id] = profile
        for i, raw in enumerate(_array(data, "id_tags")):
            _only(raw, {"id", "status", "expiry_date", "parent_id_tag"}, f"id_tags[{i}]")
            expiry = raw.get("expiry_date")
            b.id_tags.set(str(_required(raw, "id", f"id_tags[{i}]")), str(raw.get("status", "Accepted")),
                          expiry_date=_datetime(expiry, f"id_tags[{i}].expiry_date"),
                          parent_id_tag=raw.get("parent_id_tag"))
        for i, raw in enumerate(_array(data, "data_transfer")):
            _only(raw, {"vendor_id", "message_id", "status", "data"}, f"data_transfer[{i}]")
            b.data_transfer.set(str(_required(raw, "vendor_id", f"data_transfer[{i}]")), raw.get("message_id"),
                                status=str(raw.get("status", "Accepted")), data=raw.get("data"))
        for i, raw in enumerate(_array(data, "faults")):
            where = f"faults[{i}]"
            _only(raw, {"action", "cp_id", "fail_next", "error_code", "description", "ignore_next",
                        "lose_answer_next", "delay_s"}, where)
            action, cp = str(_required(raw, "action", where)), raw.get("cp_id")
            if "fail_next" in raw:
                b.faults.fail_next(action, int(raw["fail_next"]), cp_id=cp,
                                   error_code=str(raw.get("error_code", "InternalError")),
                                   description=str(raw.get("description", "injected failure")))
            if "ignore_next" in raw:
                b.faults.ignore_next(action, int(raw["ignore_next"]), cp_id=cp)
            if "lose_answer_next" in raw:
                b.faults.lose_answer_next(action, int(raw["lose_answer_next"]), cp_id=cp)
            if "delay_s" in raw:
                b.faults.set_delay(action, float(raw["delay_s"]), cp_id=cp)
        return b


def _enum_value(enum: Iterable[Any], value: object, what: str) -> str:
    allowed = [str(getattr(e, "value", e)) for e in enum]
    text = str(getattr(value, "value", value))
    if text not in allowed:
        raise BehaviourError(f"{what}: expected one of {', '.join(allowed)}; got {value!r}")
    return text


def _check_id_tag(id_tag: object, what: str) -> None:
    if not isinstance(id_tag, str) or not 0 < len(id_tag) <= MAX_ID_TAG_LENGTH:
        raise BehaviourError(f"{what}: a string of 1..{MAX_ID_TAG_LENGTH} characters; got {id_tag!r}")


def _non_negative(n: int, what: str) -> int:
    if n < 0:
        raise BehaviourError(f"{what} must be >= 0")
    return n


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise BehaviourError(f"{where or 'top level'}: unknown key(s) {', '.join(unknown)}")


def _required(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise BehaviourError(f"{where}: missing key {key}")
    return table[key]


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise BehaviourError(f"{key}: expected a table")
    return value


def _array(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise BehaviourError(f"{key}: expected an array of tables")
    return value


def _datetime(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # TOML offset date-time
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise BehaviourError(f"{where}: not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise BehaviourError(f"{where}: needs a zone (Z or an offset)")
    return parsed
