"""OCPP 1.6J adapter: maps the version-agnostic charger model to OCPP 1.6 messages."""
