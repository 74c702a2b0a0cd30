"""The OCPP 2.0.1 adapter (its RPC dialect so far; the features follow on the shape of ``firmware/ocpp/v16``)."""
