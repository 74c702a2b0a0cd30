"""What concerns the charger as a whole rather than one connector, for any front end (OCPP 1.6, 2.0.1, the
site's MQTT): which connector a card or a remote start goes to, availability of several connectors at once,
reservations (:mod:`~firmware.charger.reservations`), a master pass stopping every transaction
(:mod:`~firmware.charger.master_pass`) and a reset. No OCPP types: callers map the results to their protocol's
answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware.charger.card_routing import ConnectorView, route_card
from firmware.charger.connector import ConnectorController, reset_flag
from firmware.charger.master_pass import MasterPass
from firmware.charger.reservations import Reservations
from firmware.session import (
    AvailabilityChanged,
    AvailabilityScheduled,
    CardPresented,
    IdToken,
    RemoteStartRequested,
    RemoteStartResult,
    ResetRequested,
)
from firmware.session.status import ConnectorStatus
from firmware.storage import Database

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, connectors: dict[int, ConnectorController], db: Database) -> None:
        self.connectors = connectors
        self.db = db
        self.reservations = Reservations(connectors, db)  # attached to each connector by the agent
        self.master_pass = MasterPass(connectors)  # attached to each connector by the agent

    async def card_presented(self, card: IdToken, served: tuple[int, ...], reader: str) -> int | None:
        """A tap on a reader serving ``served`` (all connectors when empty): routed to the connector it
        belongs to (:func:`~firmware.charger.card_routing.route_card`). Returns that connector, or None.
        ``card``: :func:`~firmware.charger.card_routing.card_id_token` of the reader's event."""
        views = []
        master_pass = False  # a master pass group is configured: a tap may concern any running transaction
        for cid in served or tuple(self.connectors):
            m = self.connectors[cid].machine
            master_pass = master_pass or m.config.master_pass_group is not None
            tx, auth, res = m.transaction, m.authorization, m.reservation
            views.append(ConnectorView(cid, m.status, m.ev_connected, tx.id_token if tx else None,
                                       tx.parent_id_token if tx else None, auth.id_token if auth else None,
                                       m.cable_held_for, res.id_token if res else None,
                                       res.parent_id_token if res else None))
        target = route_card(card, views, master_pass=master_pass)
        if target is None:
            log.info("card not used: no connector can take it", extra={"reader": reader})
            return None
        await self.connectors[target].handle(CardPresented(card))
        return target

    def remote_start_connector(self, connector_id: int | None,
                               id_token: IdToken | None = None) -> ConnectorController | None:
        """The connector a remote start without a connector goes to: the one reserved for this id first, then an
        EV waiting, then an idle one."""
        if connector_id is not None:
            return self.connectors.get(connector_id)
        free = [c for c in sorted(self.connectors.values(), key=lambda c: c.id) if c.machine.transaction is None]
        mine = [c for c in free if c.machine.status is ConnectorStatus.RESERVED and id_token is not None
                and c.machine.reservation is not None and id_token.matches(c.machine.reservation.id_token)]
        waiting = [c for c in free if c.machine.status is ConnectorStatus.PREPARING]
        idle = [c for c in free if c.machine.status is ConnectorStatus.AVAILABLE]
        return (mine or waiting or idle)[0] if (mine or waiting or idle) else None

    async def remote_start(self, id_token: IdToken, connector_id: int | None) -> bool:
        ctrl = self.remote_start_connector(connector_id, id_token)
        if ctrl is None:
            return False
        effects = await ctrl.handle(RemoteStartRequested(id_token))
        result = next((e for e in effects if isinstance(e, RemoteStartResult)), None)
        return result is not None and result.accepted

    async def set_available(self, targets: list[ConnectorController], operative: bool) -> bool:
        """Availability of several connectors; True when any of them only scheduled it (a transaction runs)."""
        scheduled = False
        for ctrl in targets:
            effects = await ctrl.handle(AvailabilityChanged(operative))
            scheduled = scheduled or any(isinstance(e, AvailabilityScheduled) for e in effects)
        return scheduled

    async def reset(self, *, hard: bool, queue_empty: Callable[[], bool] | None = None) -> None:
        """Stop every transaction (reason HardReset / SoftReset), and remember that a reset was asked, so that
        after the restart open transactions end with Reboot. A soft reset gives queued messages up to 5 s to
        leave (``queue_empty`` says when they have)."""
        for ctrl in self.connectors.values():
            await ctrl.handle(ResetRequested(hard=hard))
        reset_flag(self.db, "hard" if hard else "soft")
        if not hard and queue_empty is not None:
            for _ in range(50):
                if queue_empty():
                    break
                await asyncio.sleep(0.1)
