"""Which charging profiles the charger holds: installing, replacing, clearing, and ending with a transaction
(pure: the installed set in, a new set out; the scheduler persists it).

The rules are OCPP 1.6 §3.13 / §5.5 / §5.16 (SetChargingProfile, ClearChargingProfile), which 2.0.1's K01/K10
keep: a ChargePointMaxProfile only on connector 0; a TxProfile only on a connector with a running transaction
(the one named, if a transactionId is given), ending with it; a profile with the same id — on any connector — or
with the same stack level and purpose on the same connector replaces the old one; otherwise the profile is added
while fewer than ``max_installed`` are held.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from firmware.charger.smart_charging.profiles import ChargingProfile, ProfileKind, ProfilePurpose, RateUnit


@dataclass(frozen=True)
class ProfileLimits:
    """What this charger accepts; the adapter reports them as its configuration keys (1.6:
    MaxChargingProfilesInstalled, ChargeProfileMaxStackLevel, ChargingScheduleMaxPeriods,
    ChargingScheduleAllowedChargingRateUnit). OCTT's TC_066 needs at least 3 profiles, 5 periods, stack level 8."""

    max_installed: int = 20
    max_stack_level: int = 8
    max_periods: int = 48
    units: frozenset[RateUnit] = field(default_factory=lambda: frozenset(RateUnit))


@dataclass(frozen=True)
class RunningTransaction:
    """A connector's transaction, as far as profiles care."""

    local_id: int  # the session machine's number on that connector: what a TxProfile is bound to
    started_at: datetime  # a Relative profile's start
    transaction_id: str | None = None  # the CSMS's id, once it answered the start


@dataclass(frozen=True)
class InstalledProfile:
    connector: int  # 0: the whole charger (ChargePointMaxProfile; a TxDefaultProfile for every connector)
    profile: ChargingProfile
    transaction: int | None = None  # a TxProfile's transaction: that connector's local id


@dataclass(frozen=True)
class InstallResult:
    accepted: bool
    reason: str = ""  # why it was rejected
    installed: tuple[InstalledProfile, ...] = ()  # every profile held afterwards (unchanged when rejected)
    added: InstalledProfile | None = None
    removed: tuple[InstalledProfile, ...] = ()  # the profiles it replaced


@dataclass(frozen=True)
class Removal:
    kept: tuple[InstalledProfile, ...]
    removed: tuple[InstalledProfile, ...]


def check(connector: int, profile: ChargingProfile, *, connectors: Collection[int],
          running: Mapping[int, RunningTransaction], limits: ProfileLimits) -> str | None:
    """Why ``profile`` cannot be installed on ``connector`` now (None: it can), not counting how many are held."""
    problems = profile.problems()
    if problems:
        return "; ".join(problems)
    if connector != 0 and connector not in connectors:
        return f"there is no connector {connector}"
    if profile.stack_level > limits.max_stack_level:
        return f"stackLevel {profile.stack_level} is above ChargeProfileMaxStackLevel ({limits.max_stack_level})"
    if len(profile.schedule.periods) > limits.max_periods:
        return (f"{len(profile.schedule.periods)} periods are more than ChargingScheduleMaxPeriods "
                f"({limits.max_periods})")
    if profile.schedule.unit not in limits.units:
        return f"charging rate unit {profile.schedule.unit.value} is not supported here"
    if profile.purpose is ProfilePurpose.CHARGER_MAX and connector != 0:
        return "a ChargePointMaxProfile can only be set on connector 0"
    if profile.purpose is ProfilePurpose.TX:
        if connector == 0:
            return "a TxProfile needs a connector (> 0) with a running transaction"
        tx = running.get(connector)
        if tx is None:
            return f"no transaction is running on connector {connector}"
        if profile.transaction_id is not None and profile.transaction_id != tx.transaction_id:
            known = "not known yet" if tx.transaction_id is None else tx.transaction_id
            return (f"transactionId {profile.transaction_id} is not the transaction running on connector "
                    f"{connector} ({known})")
    return None


def install(installed: Iterable[InstalledProfile], connector: int, profile: ChargingProfile, *,
            connectors: Collection[int], running: Mapping[int, RunningTransaction], limits: ProfileLimits,
            now: datetime) -> InstallResult:
    """``profile`` installed on ``connector`` — replacing what it replaces — or the reason it is rejected.

    An Absolute profile without startSchedule starts when it is installed: ``now`` is written into it, so that it
    keeps its start across restarts (1.6 leaves it open; libocpp does the same)."""
    held = tuple(installed)
    reason = check(connector, profile, connectors=connectors, running=running, limits=limits)
    if reason is not None:
        return InstallResult(False, reason, held)
    if profile.kind is ProfileKind.ABSOLUTE and profile.schedule.start is None:
        profile = replace(profile, schedule=replace(profile.schedule, start=now))
    bound = running[connector].local_id if profile.purpose is ProfilePurpose.TX else None
    new = InstalledProfile(connector, profile, bound)
    removed = tuple(p for p in held if _replaced_by(p, new))
    kept = tuple(p for p in held if not _replaced_by(p, new))
    if len(kept) >= limits.max_installed:
        return InstallResult(False, f"MaxChargingProfilesInstalled ({limits.max_installed}) are installed", held)
    return InstallResult(True, "", (*kept, new), new, removed)


def _replaced_by(old: InstalledProfile, new: InstalledProfile) -> bool:
    if old.profile.id == new.profile.id:
        return True
    return (old.connector == new.connector and old.profile.purpose is new.profile.purpose
            and old.profile.stack_level == new.profile.stack_level)


def clear(installed: Iterable[InstalledProfile], *, profile_id: int | None = None, connector: int | None = None,
          purpose: ProfilePurpose | None = None, stack_level: int | None = None) -> Removal:
    """ClearChargingProfile (1.6 §5.5): with an id, only the id counts; otherwise every criterion given must match
    (connector 0 means the profiles set on connector 0, not all); no criterion at all clears everything. The
    adapter answers Unknown when nothing was removed."""
    def matches(p: InstalledProfile) -> bool:
        if profile_id is not None:
            return p.profile.id == profile_id
        return ((connector is None or p.connector == connector)
                and (purpose is None or p.profile.purpose is purpose)
                and (stack_level is None or p.profile.stack_level == stack_level))

    held = tuple(installed)
    return Removal(tuple(p for p in held if not matches(p)), tuple(p for p in held if matches(p)))


def drop_ended(installed: Iterable[InstalledProfile], running: Mapping[int, RunningTransaction]) -> Removal:
    """TxProfiles whose transaction is no longer the one running on their connector end with it."""
    def ended(p: InstalledProfile) -> bool:
        if p.profile.purpose is not ProfilePurpose.TX:
            return False
        tx = running.get(p.connector)
        return tx is None or tx.local_id != p.transaction

    held = tuple(installed)
    return Removal(tuple(p for p in held if not ended(p)), tuple(p for p in held if ended(p)))
