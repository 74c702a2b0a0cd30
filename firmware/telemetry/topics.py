"""The topic layout under ``<base>/<charge point id>`` (documented in docs/mqtt.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    base: str
    charge_point_id: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.charge_point_id}"

    @property
    def availability(self) -> str:
        """Retained ``online``; the broker publishes the last will ``offline`` when the agent vanishes."""
        return f"{self.root}/availability"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def reply(self) -> str:
        """Answers to commands: accepted, or rejected with a reason."""
        return f"{self.root}/reply"

    @property
    def event(self) -> str:
        """Agent-level events (fail-safe engaged / released)."""
        return f"{self.root}/event"

    @property
    def command_prefix(self) -> str:
        return f"{self.root}/cmd/"

    @property
    def command_filter(self) -> str:
        return f"{self.root}/cmd/#"

    def connector(self, connector: int) -> str:
        return f"{self.root}/connector/{connector}"

    def status(self, connector: int) -> str:
        return f"{self.connector(connector)}/status"

    def meter(self, connector: int) -> str:
        return f"{self.connector(connector)}/meter"

    def session(self, connector: int) -> str:
        return f"{self.connector(connector)}/session"

    def limit(self, connector: int) -> str:
        return f"{self.connector(connector)}/limit"

    def charger_limit_command(self) -> str:
        return f"{self.command_prefix}limit"

    def connector_limit_command(self, connector: int) -> str:
        return f"{self.command_prefix}connector/{connector}/limit"

    def charger_availability_command(self) -> str:
        return f"{self.command_prefix}available"

    def connector_availability_command(self, connector: int) -> str:
        return f"{self.command_prefix}connector/{connector}/available"
