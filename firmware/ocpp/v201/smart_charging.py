"""K Smart Charging over OCPP 2.0.1: SetChargingProfile (K01), GetChargingProfiles / ReportChargingProfiles (K09),
ClearChargingProfile (K10), GetCompositeSchedule (K08), the chargingProfile of a RequestStartTransaction (K05)
and the SmartChargingCtrlr variables — translated to and from the version-agnostic
:class:`~firmware.charger.smart_charging.SmartChargingScheduler`, the same one the 1.6 adapter uses: it holds the
profiles, keeps them on disk and puts their limits on the pilot. This module only translates, and checks what
2.0.1 adds to 1.6's rules (docs/smart-charging.md):

* a TxProfile names its transaction (K01.FR.03; the station's own UUID) and an EVSE > 0 (K01.FR.16);
* Absolute and Recurring profiles carry a startSchedule, Relative ones do not (K01.FR.40, K01.FR.41);
* a profile with the same stack level and purpose on the same EVSE (another id) is refused where both can be
  valid at once, not replaced as in 1.6 (K01.FR.06, K01.FR.39: :attr:`SameStackLevel.REFUSED_IF_OVERLAPPING`);
* one chargingSchedule per profile: three are for an EV to choose from over ISO 15118, which this station does
  not speak; no phaseToUse (SmartChargingCtrlr.ACPhaseSwitchingSupported false: the hardware cannot choose the
  phase an EV charges on; K01.FR.19/20) — numberPhases 1 is taken, as the phases a limit in W is spread over;
* ChargingStationExternalConstraints are an external system's (K11-K13), never the CSMS's to set or clear
  (K01.FR.22): the site's energy manager (MQTT, ``site``) and its fail-safe (``failsafe``) are this station's
  external limits (:mod:`firmware.charger.external_limits`). They are reported as they change —
  NotifyChargingLimit (chargingLimitSource EMS, or Other for the fail-safe; a schedule with
  SmartChargingCtrlr.NotifyChargingLimitWithSchedules) when one is set or moves by more than
  LimitChangeSignificance, ClearedChargingLimit when it is removed — on the connection once online, in order; in
  GetChargingProfiles as ChargingStationExternalConstraints profiles (ids below 0: :func:`external_profile_id`, not
  the CSMS's); and they bound the composite schedule as they bind the pilot.

Numbers arrive as floats (2.0.1's schemas have no ``multipleOf``; one that is not finite is the charger layer's
to refuse). A refusal is Rejected with a ``reasonCode`` and the reason in words (``additionalInfo``). The profiles
a GetChargingProfiles selects are reported after its answer in ReportChargingProfiles messages — one EVSE each, at
most :data:`PROFILES_PER_REPORT` profiles, ``tbc`` on all but the last — with chargingLimitSource CSO.

LimitChangeSignificance: while a transaction charges, a change of the current offered on the pilot by more than
that many percent (a profile, the site's limit, a share of the station's maximum) is reported in a
TransactionEvent Updated with triggerReason ChargingRateChanged (an offer withdrawn or made again is a change of
chargingState, reported as such).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.connector import ConnectorController
from firmware.charger.external_limits import (
    EXTERNAL_SOURCES,
    FAILSAFE,
    SITE,
    ExternalLimit,
    LimitChange,
    Scope,
    caps,
    changes,
    external_limits,
)
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.metering import ReadingContext
from firmware.charger.smart_charging import (
    ChargingProfile,
    ChargingSchedule,
    CompositeSchedule,
    InstalledProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    Refusal,
    SameStackLevel,
    SchedulePeriod,
    SmartChargingScheduler,
    floor_limit,
)
from firmware.ocpp.charging_schedule import composite_periods
from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost, InvalidResponse, after_answering, handles
from firmware.ocpp.timestamps import parse_timestamp, timestamp
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.ocpp.v201.transactions import Transactions
from firmware.session import Effect, OfferCurrent, TransactionStopped
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

COMPONENT = "SmartChargingCtrlr"
#: who installed the profiles this station holds: the CSMS (the only source it takes profiles from)
LIMIT_SOURCE = "CSO"
#: profiles in one ReportChargingProfiles message
PROFILES_PER_REPORT = 10
EXTERNAL_CONSTRAINTS = "ChargingStationExternalConstraints"
#: the charger layer's external sources -> ChargingLimitSourceEnumType
EXTERNAL_SOURCE_NAMES = {SITE: "EMS", FAILSAFE: "Other"}
#: a report of an external limit that did not reach the CSMS is tried again after this long
EXTERNAL_RETRY_S = 2.0

_PURPOSE = {"ChargingStationMaxProfile": ProfilePurpose.CHARGER_MAX, "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
            "TxProfile": ProfilePurpose.TX}
_PURPOSE_NAME = {v: k for k, v in _PURPOSE.items()}
_KIND = {"Absolute": ProfileKind.ABSOLUTE, "Recurring": ProfileKind.RECURRING, "Relative": ProfileKind.RELATIVE}
_KIND_NAME = {v: k for k, v in _KIND.items()}
_RECURRENCY = {"Daily": Recurrency.DAILY, "Weekly": Recurrency.WEEKLY}
_RECURRENCY_NAME = {v: k for k, v in _RECURRENCY.items()}
_UNIT = {"A": RateUnit.AMPERES, "W": RateUnit.WATTS}

#: the charger layer's kind of refusal -> reasonCode
_REASON = {
    Refusal.UNUSABLE: "InvalidProfile", Refusal.UNKNOWN_CONNECTOR: "UnknownEvse",
    Refusal.STACK_LEVEL: "InvalidStackLevel", Refusal.PERIODS: "InvalidSchedule",
    Refusal.UNIT: "UnsupportedRateUnit", Refusal.WRONG_CONNECTOR: "InvalidValue",
    Refusal.NO_TRANSACTION: "TxNotFound", Refusal.OTHER_TRANSACTION: "TxNotFound",
    Refusal.SAME_STACK_LEVEL: "DuplicateProfile", Refusal.FULL: "InvalidProfile",
}


class NotAProfile(ValueError):
    """A ChargingProfileType the schema let through that 2.0.1 (or this station) does not take."""

    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code


def _status_info(code: str, reason: str) -> dict[str, Any]:
    return {"reasonCode": code, "additionalInfo": reason[:512]}


# --- the wire form <-> the charger layer's ---------------------------------------------------------------


def profile_from_201(raw: dict[str, Any]) -> ChargingProfile:
    """A ChargingProfileType as the library hands it to a handler (snake_case keys) as a profile; the 2.0.1 rules
    the charger layer does not know are :class:`NotAProfile` (its rules are checked when it is installed)."""
    purpose = raw["charging_profile_purpose"]
    if purpose not in _PURPOSE:
        raise NotAProfile("UnsupportedParam", f"{purpose} profiles come from an external system, never from the "
                                              "CSMS (K01.FR.22)")
    schedules = raw["charging_schedule"]
    if len(schedules) != 1:
        raise NotAProfile("InvalidSchedule", f"{len(schedules)} chargingSchedules: more than one is for an EV to "
                                             "choose from over ISO 15118, which this station does not speak")
    schedule = schedules[0]
    kind = _KIND[raw["charging_profile_kind"]]
    start = schedule.get("start_schedule")
    if kind is not ProfileKind.RELATIVE and start is None:
        raise NotAProfile("InvalidSchedule", f"an {raw['charging_profile_kind']} profile needs startSchedule "
                                             "(K01.FR.40)")
    if kind is ProfileKind.RELATIVE and start is not None:
        raise NotAProfile("InvalidSchedule", "a Relative profile starts with its transaction: no startSchedule "
                                             "(K01.FR.41)")
    periods = []
    for p in schedule["charging_schedule_period"]:
        if p.get("phase_to_use") is not None:
            if p.get("number_phases") != 1:
                raise NotAProfile("InvalidSchedule", "phaseToUse is only for numberPhases 1 (K01.FR.19)")
            raise NotAProfile("UnsupportedParam", "phaseToUse: this station cannot switch the phase it charges on "
                                                  "(SmartChargingCtrlr.ACPhaseSwitchingSupported false, K01.FR.20)")
        periods.append(SchedulePeriod(int(p["start_period"]), float(p["limit"]), p.get("number_phases")))
    rate = schedule.get("min_charging_rate")
    return ChargingProfile(
        id=int(raw["id"]), stack_level=int(raw["stack_level"]), purpose=_PURPOSE[purpose], kind=kind,
        schedule=ChargingSchedule(_UNIT[schedule["charging_rate_unit"]], tuple(periods), schedule.get("duration"),
                                  _time(start, "startSchedule"), None if rate is None else float(rate),
                                  schedule.get("id")),
        recurrency=_RECURRENCY[raw["recurrency_kind"]] if raw.get("recurrency_kind") else None,
        valid_from=_time(raw.get("valid_from"), "validFrom"), valid_to=_time(raw.get("valid_to"), "validTo"),
        transaction_id=raw.get("transaction_id"))


def profile_to_201(profile: ChargingProfile, transaction_id: str | None) -> dict[str, Any]:
    """A held profile as a ChargingProfileType (camelCase), for ReportChargingProfiles; ``transaction_id``: its
    transaction's, for a TxProfile."""
    s = profile.schedule
    periods = []
    for p in s.periods:
        period: dict[str, Any] = {"startPeriod": p.start, "limit": p.limit}
        if p.number_phases is not None:
            period["numberPhases"] = p.number_phases
        periods.append(period)
    schedule: dict[str, Any] = {"id": 0 if s.id is None else s.id, "chargingRateUnit": s.unit.value,
                                "chargingSchedulePeriod": periods}
    if s.start is not None:
        schedule["startSchedule"] = timestamp(s.start)
    if s.duration is not None:
        schedule["duration"] = s.duration
    if s.min_charging_rate is not None:
        schedule["minChargingRate"] = s.min_charging_rate
    out: dict[str, Any] = {"id": profile.id, "stackLevel": profile.stack_level,
                           "chargingProfilePurpose": _PURPOSE_NAME[profile.purpose],
                           "chargingProfileKind": _KIND_NAME[profile.kind], "chargingSchedule": [schedule]}
    if profile.kind is ProfileKind.RECURRING and profile.recurrency is not None:
        out["recurrencyKind"] = _RECURRENCY_NAME[profile.recurrency]
    if profile.valid_from is not None:
        out["validFrom"] = timestamp(profile.valid_from)
    if profile.valid_to is not None:
        out["validTo"] = timestamp(profile.valid_to)
    if profile.purpose is ProfilePurpose.TX and transaction_id is not None:
        out["transactionId"] = transaction_id
    return out


def composite_to_201(schedule: CompositeSchedule) -> dict[str, Any]:
    """GetCompositeScheduleResponse's CompositeScheduleType: limits rounded down to one decimal (never above what
    is applied), numberPhases where it is not 3."""
    return {"evseId": schedule.connector, "duration": schedule.duration,
            "scheduleStart": timestamp(schedule.start), "chargingRateUnit": schedule.unit.value,
            "chargingSchedulePeriod": composite_periods(schedule)}


def external_profile_id(limit: ExternalLimit) -> int:
    """The id an external limit is reported under: below 0, so never one the CSMS gave (and not the CSMS's to clear);
    stable while the limit holds: -(1 + 10 * EVSE + the source's index), EVSE 0 for the whole station."""
    return -(1 + 10 * (limit.connector or 0) + EXTERNAL_SOURCES.index(limit.source))


def external_schedule(limit: ExternalLimit, since: datetime) -> dict[str, Any]:
    """An external limit as a ChargingScheduleType: in force since ``since``, with no known end, in A."""
    return {"id": external_profile_id(limit), "startSchedule": timestamp(since), "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": floor_limit(limit.amps)}]}


def external_profile(limit: ExternalLimit, since: datetime) -> dict[str, Any]:
    """An external limit as the ChargingStationExternalConstraints profile GetChargingProfiles reports."""
    return {"id": external_profile_id(limit), "stackLevel": 0, "chargingProfilePurpose": EXTERNAL_CONSTRAINTS,
            "chargingProfileKind": "Absolute", "chargingSchedule": [external_schedule(limit, since)]}


def _time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    when = parse_timestamp(value)  # the RPC layer let only RFC 3339 date-times with a zone through
    if when is None:
        raise NotAProfile("InvalidValue", f"{name} {value!r} is not a date-time")
    return when


# --- the feature ---------------------------------------------------------------------------------------------


class SmartCharging:
    def __init__(self, ctx: V201Context, scheduler: SmartChargingScheduler, transactions: Transactions,
                 limits: LimitApplier | None = None) -> None:
        """``limits``: the charger's limit sources, whose external ones are reported (None: none are)."""
        self.ctx = ctx
        self.scheduler = scheduler
        self.transactions = transactions
        self.limits = limits
        self._offered: dict[int, float] = {}  # EVSE -> the current its pilot offers (since the agent started)
        self._reported: dict[Scope, float] = {}  # external limits as the CSMS last heard of them
        self._since: dict[Scope, tuple[float, datetime]] = {}  # external limits in force: (amps, since when)
        self._external_changed = asyncio.Event()
        if limits is not None:
            limits.source_listeners.append(self._sources_changed)
            self._sources_changed()  # the fail-safe may hold from the start
        taken = scheduler.limits
        variables = ctx.variables
        # what the charger layer takes, read when asked (the same limits 1.6 reports as its keys)
        for name, read in (
                ("ProfileStackLevel", lambda: str(taken.max_stack_level)),
                ("PeriodsPerSchedule", lambda: str(taken.max_periods)),
                ("RateUnit", lambda: ",".join(u.value for u in RateUnit if u in taken.units))):
            variables.provide(VariableKey(COMPONENT, name), read)
        variables.provide(VariableKey(COMPONENT, "Entries", None, "ChargingProfiles"),
                          lambda: str(len(scheduler.installed)))
        # whether the site's energy manager may limit the charger (docs/mqtt.md: [mqtt] site_limits)
        mqtt = ctx.config.mqtt
        variables.provide(VariableKey(COMPONENT, "ExternalControlSignalsEnabled"),
                          lambda: "true" if mqtt is not None and mqtt.site_limits else "false")
        self._reports: dict[int, list[dict[str, Any]]] = {}  # requestId -> the ReportChargingProfiles to send

    # --- external limits (K11-K13) -------------------------------------------------------------------------

    def external(self) -> tuple[ExternalLimit, ...]:
        return () if self.limits is None else external_limits(self.limits.limits)

    def _sources_changed(self) -> None:
        now = utcnow()
        since: dict[Scope, tuple[float, datetime]] = {}
        for limit in self.external():
            before = self._since.get(limit.scope)
            since[limit.scope] = before if before is not None and before[0] == limit.amps else (limit.amps, now)
        self._since = since
        self._external_changed.set()

    def since(self, limit: ExternalLimit) -> datetime:
        return self._since.get(limit.scope, (limit.amps, utcnow()))[1]

    async def report_external_limits(self) -> None:
        """K12/K13 (K11 with a transaction: its ChargingRateChanged is :meth:`record`'s): each change worth telling
        (:func:`~firmware.charger.external_limits.changes`) as NotifyChargingLimit or ClearedChargingLimit, once
        online, in order; one that does not get through is tried again (what the CSMS refuses is not)."""
        while True:
            await self._external_changed.wait()
            await self.ctx.online.wait()
            self._external_changed.clear()
            significance = float(self.ctx.variables.get(COMPONENT, "LimitChangeSignificance"))
            for change in changes(self._reported, self.external(), significance):
                if not await self._tell(change):
                    self._external_changed.set()
                    await asyncio.sleep(EXTERNAL_RETRY_S)
                    break

    async def _tell(self, change: LimitChange) -> bool:
        limit = change.limit
        source = EXTERNAL_SOURCE_NAMES[limit.source]
        payload: dict[str, Any]
        if change.cleared:
            action, payload = "ClearedChargingLimit", {"chargingLimitSource": source}
        else:
            action, payload = "NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": source}}
            if self.ctx.variables.get(COMPONENT, "NotifyChargingLimitWithSchedules") == "true":
                payload["chargingSchedule"] = [external_schedule(limit, self.since(limit))]
        if limit.connector is not None:
            payload["evseId"] = limit.connector
        try:
            await self.ctx.call(action, payload)
        except (ConnectionLost, TimeoutError) as exc:
            log.info("external limit not reported yet", extra={"action": action, "error": str(exc)})
            return False
        except (CallErrorReceived, InvalidResponse) as exc:
            log.warning("external limit report refused", extra={"action": action, "error": str(exc)})
        log.info("external limit reported", extra={"action": action, "source": source, "evse": limit.connector,
                                                   "amps": None if change.cleared else limit.amps})
        if change.cleared:
            self._reported.pop(limit.scope, None)
        else:
            self._reported[limit.scope] = limit.amps
        return True

    # --- LimitChangeSignificance: ChargingRateChanged (a connector observer's record, in the commit) ---------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        for e in effects:
            if isinstance(e, TransactionStopped):
                self._offered.pop(ctrl.id, None)
            elif isinstance(e, OfferCurrent):
                before = self._offered.get(ctrl.id)
                self._offered[ctrl.id] = e.amps
                if ctrl.machine.transaction is None or before is None or before <= 0 or e.amps <= 0:
                    continue  # no transaction, or the offer made or withdrawn: a chargingState change
                significance = float(self.ctx.variables.get(COMPONENT, "LimitChangeSignificance"))
                if abs(e.amps - before) * 100 > significance * before:
                    log.info("charging rate changed", extra={"evse": ctrl.id, "from_a": before, "to_a": e.amps})
                    self.transactions.updated(ctrl, "ChargingRateChanged", ReadingContext.PERIODIC)

    # --- SetChargingProfile (K01) -----------------------------------------------------------------------

    @handles(Action.set_charging_profile)
    async def _set(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        try:
            profile = profile_from_201(charging_profile)
            if profile.purpose is ProfilePurpose.TX and profile.transaction_id is None:
                raise NotAProfile("TxNotFound", "a TxProfile names its transaction (transactionId, K01.FR.03)")
        except NotAProfile as exc:
            log.info("charging profile rejected", extra={"evse": evse_id, "profile_id": charging_profile.get("id"),
                                                         "reason": str(exc)})
            return call_result.SetChargingProfile(status="Rejected",
                                                  status_info=_status_info(exc.reason_code, str(exc)))
        result = self.scheduler.install(evse_id, profile, same_stack_level=SameStackLevel.REFUSED_IF_OVERLAPPING)
        if result.accepted:
            return call_result.SetChargingProfile(status="Accepted")
        code = _REASON[result.refusal] if result.refusal is not None else "InvalidProfile"
        return call_result.SetChargingProfile(status="Rejected", status_info=_status_info(code, result.reason))

    # --- the chargingProfile of a RequestStartTransaction (K05) --------------------------------------------

    def attach_to_remote_start(self, evse_id: int, raw: dict[str, Any]) -> tuple[str, str] | None:
        """Keep a RequestStartTransaction's TxProfile for the transaction it starts on ``evse_id`` (installed in
        that start's commit); (reasonCode, reason) when it cannot be. Its transactionId, if any, is ignored."""
        try:
            profile = profile_from_201(raw)
        except NotAProfile as exc:
            return exc.reason_code, str(exc)
        reason = self.scheduler.attach_to_next_transaction(evse_id, profile)
        return None if reason is None else ("InvalidProfile", reason)

    def cancel_remote_start(self, evse_id: int) -> None:
        self.scheduler.cancel_pending(evse_id)

    # --- ClearChargingProfile (K10) ------------------------------------------------------------------------

    @handles(Action.clear_charging_profile)
    async def _clear(self, charging_profile_id: int | None = None,
                     charging_profile_criteria: dict[str, Any] | None = None, **_: Any) -> Any:
        criteria = charging_profile_criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        if charging_profile_id is None and purpose == EXTERNAL_CONSTRAINTS:
            removed: tuple[InstalledProfile, ...] = ()  # none held; not the CSMS's to clear anyway
        elif charging_profile_id is not None:
            removed = self.scheduler.clear(profile_id=charging_profile_id)
        else:
            removed = self.scheduler.clear(connector=criteria.get("evse_id"), stack_level=criteria.get("stack_level"),
                                           purpose=None if purpose is None else _PURPOSE[purpose])
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    # --- GetCompositeSchedule (K08) ------------------------------------------------------------------------

    @handles(Action.get_composite_schedule)
    async def _composite(self, duration: int, evse_id: int, charging_rate_unit: str | None = None,
                         **_: Any) -> Any:
        unit = _UNIT[charging_rate_unit] if charging_rate_unit else RateUnit.AMPERES
        if unit not in self.scheduler.limits.units:
            return call_result.GetCompositeSchedule(
                status="Rejected", status_info=_status_info("UnsupportedRateUnit", f"{unit.value} is not supported"))
        try:
            schedule = self.scheduler.composite(evse_id, duration, unit, external=caps(self.external()))
        except KeyError:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_status_info(
                "UnknownEvse", f"there is no EVSE {evse_id}"))
        except ValueError as exc:
            return call_result.GetCompositeSchedule(status="Rejected",
                                                    status_info=_status_info("InvalidValue", str(exc)))
        return call_result.GetCompositeSchedule(status="Accepted", schedule=composite_to_201(schedule))

    # --- GetChargingProfiles (K09) -> ReportChargingProfiles ----------------------------------------------

    @handles(Action.get_charging_profiles)
    async def _get_profiles(self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None,
                            **_: Any) -> Any:
        selected = self.select(evse_id, charging_profile)
        external = self.select_external(evse_id, charging_profile)
        if not selected and not external:
            return call_result.GetChargingProfiles(status="NoProfiles")
        self._reports[request_id] = self.reports(request_id, selected, external)
        return call_result.GetChargingProfiles(status="Accepted")

    @after_answering(Action.get_charging_profiles)
    def _after_get_profiles(self, request_id: int, **_: Any) -> None:
        reports = self._reports.pop(request_id, None)
        if reports:
            self.ctx.spawn(self._send_reports(reports))

    def select(self, evse_id: int | None, criterion: dict[str, Any]) -> list[InstalledProfile]:
        """K09: the held profiles of ``evse_id`` (0: the station's own; absent: all) matching every field given."""
        sources = criterion.get("charging_limit_source")
        if sources is not None and LIMIT_SOURCE not in sources:
            return []
        purpose_name = criterion.get("charging_profile_purpose")
        if purpose_name is not None and purpose_name not in _PURPOSE:
            return []
        purpose = None if purpose_name is None else _PURPOSE[purpose_name]
        ids = criterion.get("charging_profile_id")
        level = criterion.get("stack_level")
        return [p for p in self.scheduler.installed
                if (evse_id is None or p.connector == evse_id) and (purpose is None or p.profile.purpose is purpose)
                and (level is None or p.profile.stack_level == level) and (ids is None or p.profile.id in ids)]

    def select_external(self, evse_id: int | None, criterion: dict[str, Any]) -> list[ExternalLimit]:
        """K09 for the external limits, reported as ChargingStationExternalConstraints profiles (stack level 0)."""
        sources = criterion.get("charging_limit_source")
        purpose = criterion.get("charging_profile_purpose")
        ids = criterion.get("charging_profile_id")
        level = criterion.get("stack_level")
        return [e for e in self.external()
                if (evse_id is None or (e.connector or 0) == evse_id)
                and (sources is None or EXTERNAL_SOURCE_NAMES[e.source] in sources)
                and purpose in (None, EXTERNAL_CONSTRAINTS) and level in (None, 0)
                and (ids is None or external_profile_id(e) in ids)]

    def reports(self, request_id: int, selected: Iterable[InstalledProfile],
                external: Iterable[ExternalLimit] = ()) -> list[dict[str, Any]]:
        """The ReportChargingProfilesRequests for ``selected`` (and the ``external`` limits): one EVSE and one
        chargingLimitSource per message (CSO first), at most :data:`PROFILES_PER_REPORT` profiles each, ``tbc``
        true on all but the last."""
        groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
        for p in sorted(selected, key=lambda p: (p.connector, p.profile.id)):
            groups.setdefault((p.connector, 0, LIMIT_SOURCE), []).append(
                profile_to_201(p.profile, self._transaction_id(p)))
        for e in external:
            groups.setdefault((e.connector or 0, 1 + EXTERNAL_SOURCES.index(e.source),
                               EXTERNAL_SOURCE_NAMES[e.source]), []).append(external_profile(e, self.since(e)))
        pages = [(key, profiles[i:i + PROFILES_PER_REPORT]) for key, profiles in sorted(groups.items())
                 for i in range(0, len(profiles), PROFILES_PER_REPORT)]
        return [{"requestId": request_id, "chargingLimitSource": source, "tbc": n < len(pages) - 1,
                 "evseId": evse, "chargingProfile": profiles}
                for n, ((evse, _, source), profiles) in enumerate(pages)]

    def _transaction_id(self, p: InstalledProfile) -> str | None:
        if p.transaction is None:
            return None
        record = self.ctx.ledger.get(p.connector, p.transaction)
        return None if record is None else record.transaction_id

    async def _send_reports(self, reports: list[dict[str, Any]]) -> None:
        """On the current connection, in order; one that fails ends the report (the CSMS asks again)."""
        for payload in reports:
            try:
                await self.ctx.call("ReportChargingProfiles", payload)
            except (ConnectionLost, CallErrorReceived, InvalidResponse, TimeoutError) as exc:
                log.warning("ReportChargingProfiles not delivered", extra={
                    "request_id": payload["requestId"], "evse": payload["evseId"], "error": str(exc)})
                return
