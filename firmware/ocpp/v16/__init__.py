"""The OCPP 1.6J adapter: maps the charger layer to OCPP 1.6 messages, one module per feature."""
