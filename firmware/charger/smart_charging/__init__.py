"""Smart charging, version-agnostic (docs/smart-charging.md): charging profiles and their rules, the composite
schedule, and the worker that turns them into the ``ocpp`` limit source. No OCPP types: the 1.6 and 2.0.1 adapters
translate their messages into these and back.

* :mod:`.profiles` — the model (:class:`ChargingProfile`), its validation and persisted form;
* :mod:`.installed` — installing, replacing, clearing, ending with a transaction (pure);
* :mod:`.units` — the charger's connectors, amperes <-> watts (pure);
* :mod:`.composite` — the composite schedule and the limits now (pure);
* :mod:`.scheduler` — :class:`SmartChargingScheduler`, the I/O around them.
"""

from firmware.charger.smart_charging.composite import (
    CompositePeriod,
    CompositeSchedule,
    RuntimeLimits,
    composite_schedule,
    floor_limit,
    limits_at,
)
from firmware.charger.smart_charging.installed import (
    InstalledProfile,
    InstallResult,
    ProfileLimits,
    Refusal,
    Rejection,
    Removal,
    RunningTransaction,
    SameStackLevel,
    check,
    clear,
    drop_ended,
    install,
)
from firmware.charger.smart_charging.profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileFormatError,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)
from firmware.charger.smart_charging.scheduler import (
    LIMIT_SOURCE,
    LimitTarget,
    SmartChargingScheduler,
    running_transactions,
)
from firmware.charger.smart_charging.units import DEFAULT_NOMINAL_VOLTAGE, ChargerSetup, ConnectorSetup

__all__ = [
    "DEFAULT_NOMINAL_VOLTAGE", "LIMIT_SOURCE", "ChargerSetup", "ChargingProfile", "ChargingSchedule",
    "CompositePeriod", "CompositeSchedule", "ConnectorSetup", "InstallResult", "InstalledProfile", "LimitTarget",
    "ProfileFormatError", "ProfileKind", "ProfileLimits", "ProfilePurpose", "RateUnit", "Recurrency", "Refusal",
    "Rejection", "Removal", "RunningTransaction", "RuntimeLimits", "SameStackLevel", "SchedulePeriod",
    "SmartChargingScheduler", "check", "clear", "composite_schedule", "drop_ended", "floor_limit", "install",
    "limits_at", "running_transactions",
]
