"""The delivery stage of the outbox: hands queued outbound messages to their transports."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import update

from adapters.base import DeliveryError, Transport
from bot.clock import Clock
from bot.events import Action, ActionKind, Address, ChatType
from storage import repo
from storage.db import Database
from storage.models import Message

log = logging.getLogger(__name__)


class Dispatcher:
    """At-least-once delivery of outbound messages, keyed by message id so transports can dedupe."""

    def __init__(self, db: Database, clock: Clock, transports: Mapping[str, Transport],
                 lease: timedelta = timedelta(seconds=30), max_attempts: int = 8) -> None:
        self.db = db
        self.clock = clock
        self.transports = dict(transports)
        self.lease = lease
        self.max_attempts = max_attempts

    async def flush(self, limit: int = 200) -> int:
        """Deliver everything queued for the transports this process has; returns how many went out."""
        if not self.transports:
            return 0
        delivered = 0
        while True:
            now = self.clock.now()
            async with self.db.session() as session, session.begin():
                batch = await repo.claim_undelivered(session, list(self.transports), now, self.lease, limit,
                                                     self.db.supports_skip_locked)
            if not batch:
                return delivered
            for message in batch:
                delivered += await self._deliver(message)
            if len(batch) < limit:
                return delivered

    async def _deliver(self, message: Message) -> int:
        action = Action(ActionKind.SAY, Address(message.channel, ChatType(message.chat_type), message.chat_id),
                        message.text, ref=str(message.id), at=message.created_at)
        values: dict[str, object]
        try:
            await self.transports[message.channel].deliver(action)
            values = {"delivered_at": self.clock.now(), "delivery_claimed_until": None}
            sent = 1
        except DeliveryError as exc:
            sent = 0
            if exc.permanent or message.delivery_attempts >= self.max_attempts:
                log.error("giving up on message %s to %s: %s", message.id, message.channel, exc)
                values = {"delivery_claimed_until": None, "delivery_error": str(exc) or type(exc).__name__}
            else:
                wait = exc.retry_after if exc.retry_after is not None else 2 ** message.delivery_attempts
                log.warning("delivery of message %s failed (%s); retrying in %.0fs", message.id, exc, wait)
                values = {"delivery_claimed_until": self.clock.now() + timedelta(seconds=wait)}
        async with self.db.session() as session, session.begin():
            await session.execute(update(Message).where(Message.id == message.id).values(**values))
        return sent
