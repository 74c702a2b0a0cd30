"""OCPP: the transport (link), OCPP-J framing (rpc), in-order delivery of the outbox, and one adapter per version."""
