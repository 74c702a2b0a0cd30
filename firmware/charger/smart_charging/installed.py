"""Which charging profiles the charger holds: installing, replacing, clearing, and ending with a transaction
(pure: the installed set in, a new set out; the scheduler persists it).

The rules are OCPP 1.6 §3.13 / §5.5 / §5.16 (SetChargingProfile, ClearChargingProfile), which 2.0.1's K01/K10
keep: a ChargePointMaxProfile only on connector 0; a TxProfile only on a connector with a running transaction
(the one named, if a transactionId is given), ending with it; a profile with the same id — on any connector —
replaces the old one; otherwise the profile is added while fewer than ``max_installed`` are held. One rule
differs between the versions, so the adapter names it (:class:`SameStackLevel`): a profile with the same stack
level and purpose on the same connector (but another id) replaces the old one in 1.6 and is refused in 2.0.1.
Every refusal says what kind it is (:class:`Refusal`), so that an adapter can give its own reason code.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

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


class SameStackLevel(StrEnum):
    """What a new profile does to an installed one of the same connector, purpose and stack level (another id)."""

    REPLACES = "replaces"  # 1.6 §3.13.2: "the Charge Point SHALL replace the existing profile"
    #: 2.0.1 K01.FR.06 / K01.FR.39: refused when both can be valid at once — their validFrom..validTo overlap
    #: (absent: from now / forever); for TxProfiles, they belong to the same transaction
    REFUSED_IF_OVERLAPPING = "refused_if_overlapping"


class Refusal(StrEnum):
    """Why a profile was not installed, by kind (the words are in :attr:`InstallResult.reason`)."""

    UNUSABLE = "unusable"  # ChargingProfile.problems()
    UNKNOWN_CONNECTOR = "unknown_connector"
    STACK_LEVEL = "stack_level"  # above ProfileLimits.max_stack_level
    PERIODS = "periods"  # more than ProfileLimits.max_periods
    UNIT = "unit"  # not in ProfileLimits.units
    WRONG_CONNECTOR = "wrong_connector"  # a charger maximum not on 0, a TxProfile on 0
    NO_TRANSACTION = "no_transaction"  # a TxProfile where no transaction runs
    OTHER_TRANSACTION = "other_transaction"  # a TxProfile naming another transaction than the one running
    SAME_STACK_LEVEL = "same_stack_level"  # SameStackLevel.REFUSED_IF_OVERLAPPING
    FULL = "full"  # max_installed are held


@dataclass(frozen=True)
class Rejection:
    kind: Refusal
    reason: str


@dataclass(frozen=True)
class InstallResult:
    accepted: bool
    reason: str = ""  # why it was rejected
    installed: tuple[InstalledProfile, ...] = ()  # every profile held afterwards (unchanged when rejected)
    added: InstalledProfile | None = None
    removed: tuple[InstalledProfile, ...] = ()  # the profiles it replaced
    refusal: Refusal | None = None  # the kind of reason, when rejected


@dataclass(frozen=True)
class Removal:
    kept: tuple[InstalledProfile, ...]
    removed: tuple[InstalledProfile, ...]


def check(connector: int, profile: ChargingProfile, *, connectors: Collection[int],
          running: Mapping[int, RunningTransaction], limits: ProfileLimits) -> str | None:
    """Why ``profile`` cannot be installed on ``connector`` now (None: it can), not counting how many are held."""
    rejection = rejection_of(connector, profile, connectors=connectors, running=running, limits=limits)
    return None if rejection is None else rejection.reason


def rejection_of(connector: int, profile: ChargingProfile, *, connectors: Collection[int],
                 running: Mapping[int, RunningTransaction], limits: ProfileLimits) -> Rejection | None:
    """:func:`check`, with the kind of the refusal."""
    problems = profile.problems()
    if problems:
        return Rejection(Refusal.UNUSABLE, "; ".join(problems))
    if connector != 0 and connector not in connectors:
        return Rejection(Refusal.UNKNOWN_CONNECTOR, f"there is no connector {connector}")
    if profile.stack_level > limits.max_stack_level:
        return Rejection(Refusal.STACK_LEVEL, f"stackLevel {profile.stack_level} is above "
                                              f"ChargeProfileMaxStackLevel ({limits.max_stack_level})")
    if len(profile.schedule.periods) > limits.max_periods:
        return Rejection(Refusal.PERIODS, f"{len(profile.schedule.periods)} periods are more than "
                                          f"ChargingScheduleMaxPeriods ({limits.max_periods})")
    if profile.schedule.unit not in limits.units:
        return Rejection(Refusal.UNIT, f"charging rate unit {profile.schedule.unit.value} is not supported here")
    if profile.purpose is ProfilePurpose.CHARGER_MAX and connector != 0:
        return Rejection(Refusal.WRONG_CONNECTOR, "a ChargePointMaxProfile can only be set on connector 0")
    if profile.purpose is ProfilePurpose.TX:
        if connector == 0:
            return Rejection(Refusal.WRONG_CONNECTOR, "a TxProfile needs a connector (> 0) with a running transaction")
        tx = running.get(connector)
        if tx is None:
            return Rejection(Refusal.NO_TRANSACTION, f"no transaction is running on connector {connector}")
        if profile.transaction_id is not None and profile.transaction_id != tx.transaction_id:
            known = "not known yet" if tx.transaction_id is None else tx.transaction_id
            return Rejection(Refusal.OTHER_TRANSACTION, f"transactionId {profile.transaction_id} is not the "
                                                        f"transaction running on connector {connector} ({known})")
    return None


def install(installed: Iterable[InstalledProfile], connector: int, profile: ChargingProfile, *,
            connectors: Collection[int], running: Mapping[int, RunningTransaction], limits: ProfileLimits,
            now: datetime, same_stack_level: SameStackLevel = SameStackLevel.REPLACES) -> InstallResult:
    """``profile`` installed on ``connector`` — replacing what it replaces — or the reason it is rejected.

    An Absolute profile without startSchedule starts when it is installed: ``now`` is written into it, so that it
    keeps its start across restarts (1.6 leaves it open; libocpp does the same)."""
    held = tuple(installed)
    rejection = rejection_of(connector, profile, connectors=connectors, running=running, limits=limits)
    if rejection is not None:
        return InstallResult(False, rejection.reason, held, refusal=rejection.kind)
    if profile.kind is ProfileKind.ABSOLUTE and profile.schedule.start is None:
        profile = replace(profile, schedule=replace(profile.schedule, start=now))
    bound = running[connector].local_id if profile.purpose is ProfilePurpose.TX else None
    new = InstalledProfile(connector, profile, bound)
    if same_stack_level is SameStackLevel.REFUSED_IF_OVERLAPPING:
        clash = next((p for p in held if p.profile.id != profile.id and _same_place(p, new)
                      and _both_valid_at_once(p, new, now)), None)
        if clash is not None:
            return InstallResult(False, f"profile {clash.profile.id} has the same stackLevel and purpose on "
                                        f"connector {connector} and can be valid at the same time", held,
                                 refusal=Refusal.SAME_STACK_LEVEL)
    replaces = same_stack_level is SameStackLevel.REPLACES
    removed = tuple(p for p in held if _replaced_by(p, new, replaces))
    kept = tuple(p for p in held if not _replaced_by(p, new, replaces))
    if len(kept) >= limits.max_installed:
        return InstallResult(False, f"MaxChargingProfilesInstalled ({limits.max_installed}) are installed",
                             held, refusal=Refusal.FULL)
    return InstallResult(True, "", (*kept, new), new, removed)


def _same_place(old: InstalledProfile, new: InstalledProfile) -> bool:
    return (old.connector == new.connector and old.profile.purpose is new.profile.purpose
            and old.profile.stack_level == new.profile.stack_level)


def _replaced_by(old: InstalledProfile, new: InstalledProfile, same_place: bool) -> bool:
    return old.profile.id == new.profile.id or (same_place and _same_place(old, new))


def _both_valid_at_once(old: InstalledProfile, new: InstalledProfile, now: datetime) -> bool:
    """K01.FR.06: validFrom..validTo overlap (absent: from now, forever); TxProfiles (K01.FR.39): the same
    transaction."""
    if new.profile.purpose is ProfilePurpose.TX:
        return old.transaction == new.transaction
    old_from, new_from = old.profile.valid_from or now, new.profile.valid_from or now
    old_to, new_to = old.profile.valid_to, new.profile.valid_to
    return (old_to is None or new_from < old_to) and (new_to is None or old_from < new_to)


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
