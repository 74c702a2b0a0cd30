"""The version-agnostic charger: connectors, card routing, authorization, limits, metering — no OCPP types."""
