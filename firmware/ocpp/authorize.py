"""The authorization of an id as every OCPP version does it: the local rules first, the CSMS when they say so,
and offline when it does not answer — the machine always gets an answer.

The decision is :class:`~firmware.charger.authorization.Authorizer`'s (docs/authorization.md); an adapter only
says how to ask its CSMS (``ask``: send Authorize, turn the answer into the machine's
:class:`~firmware.session.AuthorizationResult`, and what to do once the machine has it — feed the cache).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from firmware.charger.authorization import Authorizer, Verdict
from firmware.charger.connector import ConnectorController
from firmware.ocpp.rpc import CallErrorReceived, InvalidResponse
from firmware.session import AuthorizationResult, AuthSource, AuthStatus, RequestAuthorization
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

#: Sends Authorize; returns the machine's result and what to run after the machine has it.
Ask = Callable[[], Awaitable[tuple[AuthorizationResult, Callable[[], None]]]]


async def authorize(auth: Authorizer, ctrl: ConnectorController, req: RequestAuthorization, *, value: str,
                    online: bool, can_ask: bool, ask: Ask) -> None:
    """``value``: the id as the stores key it; ``online``: connected and accepted; ``can_ask``: a connection
    exists to send Authorize on. Every way this can fail still answers the machine, which otherwise keeps the
    id pending (and ignores the same card until the restart)."""
    decision = auth.decide(value, online=online, purpose=req.purpose, now=utcnow())
    if decision.verdict is Verdict.ASK_CSMS and can_ask:
        try:
            result, after = await ask()
        except (CallErrorReceived, InvalidResponse) as exc:
            log.warning("Authorize failed", extra={"connector": ctrl.id, "error": str(exc)})
            await ctrl.handle(AuthorizationResult(req.id_token, AuthStatus.UNKNOWN, source=AuthSource.ONLINE))
            return
        except Exception as exc:  # no answer, or the connection went down meanwhile: we are offline
            log.info("Authorize not answered; authorizing as offline",
                     extra={"connector": ctrl.id, "error": f"{type(exc).__name__}: {exc}"})
            decision = auth.decide(value, online=False, purpose=req.purpose, now=utcnow())
        else:
            await ctrl.handle(result)
            after()
            return
    log.info("authorized without the CSMS", extra={
        "connector": ctrl.id, "purpose": req.purpose.value, "verdict": decision.verdict.value,
        "status": decision.status.value, "source": decision.source.value if decision.source else None,
        "reason": decision.reason})
    await ctrl.handle(decision.result(req.id_token))
    auth.used(value, decision)
