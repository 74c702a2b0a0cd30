"""The ``[ocpp.presets]`` table checked against the configuration keys of the adapter it configures.

The configuration layer cannot do it: it knows no adapter (a layer contract, docs/architecture.md). So every
place that loads a configuration for use — ``python -m firmware`` (run, check-config, selftest, healthcheck),
the simulator — calls :func:`check_presets` right after :func:`~firmware.config.load_config`; a bad preset is a
configuration error naming the file and the key, exit 78, never a crash at start.
"""

from __future__ import annotations

from firmware.config import AgentConfig, ConfigError


def check_presets(config: AgentConfig) -> AgentConfig:
    """``config`` unchanged, or :class:`ConfigError` for the first preset its adapter would refuse."""
    if config.ocpp is None or not config.ocpp.presets:
        return config
    # Only the configured adapter's keys are imported: each adapter's import costs start-up time, and the
    # agent never needs the other one (bench_agent's import figures).
    if config.ocpp.version == "2.0.1":  # Component.Variable[instance] names of the device model
        from firmware.ocpp.v201.device_model import check_preset as check_variable_preset
        from firmware.ocpp.v201.device_model import load_description

        definitions = load_description()  # once, not per preset

        def check(key: str, value: str) -> str | None:
            return check_variable_preset(key, value, definitions)
    else:
        from firmware.ocpp.v16.configuration import check_preset

        def check(key: str, value: str) -> str | None:
            return check_preset(key, value, len(config.connectors))
    for key, value in config.ocpp.presets.items():
        problem = check(key, value)
        if problem is not None:
            raise ConfigError(config.path, f"ocpp.presets.{key}", problem, value)
    return config
