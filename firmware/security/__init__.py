"""Version-agnostic security: TLS for the CSMS link (profiles 2 and 3), the AuthorizationKey's Basic-auth rule,
and the rolling security log. Imports no OCPP adapter, no charger, no telemetry (docs/security.md)."""
