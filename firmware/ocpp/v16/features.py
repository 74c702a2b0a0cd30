"""The 1.6 adapter's features, and the configuration keys each declares (``KEYS``; :mod:`core` per connector
count). :class:`~firmware.ocpp.v16.configuration.ConfigurationKeys` serves exactly these, plus its own."""

from __future__ import annotations

from firmware.ocpp.v16 import (
    authorization,
    certificates,
    core,
    local_auth_list,
    meter_values,
    remote_control,
    reservation,
    security,
    session_settings,
    smart_charging,
    status_report,
    transactions,
)
from firmware.ocpp.v16.keys import KeyDefinition


def key_definitions(number_of_connectors: int) -> list[KeyDefinition]:
    return [*core.keys(number_of_connectors), *authorization.KEYS, *certificates.KEYS, *local_auth_list.KEYS,
            *meter_values.KEYS, *remote_control.KEYS, *reservation.KEYS, *security.KEYS, *session_settings.KEYS,
            *smart_charging.KEYS, *status_report.KEYS, *transactions.KEYS]
