"""The delivery stage of the outbox: hands queued outbound messages to their transports."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import update

from bot.clock import Clock
from bot.config import DeliveryRate
from bot.events import Action, ActionKind, Address, ChatType
from bot.ratelimit import TokenBucket
from bot.transport import ConfirmsPending, DeliveryError, Pending, PendingMessage, PendingState, Transport
from storage import repo
from storage.db import Database
from storage.models import Message, Touch
from storage.touch_status import TouchStatus, move

log = logging.getLogger(__name__)


class Dispatcher:
    """At-least-once delivery of outbound messages, keyed by message id so transports can dedupe."""

    def __init__(self, db: Database, clock: Clock, transports: Mapping[str, Transport],
                 rates: Callable[[str], DeliveryRate], lease: timedelta = timedelta(seconds=30),
                 max_attempts: int = 8) -> None:
        self.db = db
        self.clock = clock
        self.transports = transports  # the app's registry, read live
        self.rates = rates
        self.lease = lease
        self.max_attempts = max_attempts
        self._buckets: dict[str, TokenBucket] = {}
        self.paused_until: dict[str, datetime] = {}  # a platform said "slow down"

    def _wait_before(self, channel: str) -> float:
        """Seconds to hold off this channel: platform back-off first, then our own token bucket."""
        now = self.clock.now()
        paused = self.paused_until.get(channel)
        if paused is not None and paused > now:
            return (paused - now).total_seconds()
        bucket = self._buckets.get(channel)
        if bucket is None:
            rate = self.rates(channel)
            bucket = self._buckets[channel] = TokenBucket(rate.per_second, rate.burst, now)
        return bucket.take(now)

    async def flush(self, limit: int = 200) -> int:
        """Deliver everything queued for the transports this process has; returns how many went out."""
        if not self.transports:
            return 0
        delivered = 0
        while True:
            now = self.clock.now()
            async with self.db.session() as session, session.begin():
                batch = await repo.claim_undelivered(session, list(self.transports), now, self.lease, limit)
            if not batch:
                return delivered
            for message in batch:
                delivered += await self._deliver(message)
            if len(batch) < limit:
                return delivered

    async def _deliver(self, message: Message) -> int:
        values: dict[str, object]
        wait = self._wait_before(message.channel)
        if wait > 0:  # not an attempt: put it back for later, nothing is lost
            values = {"delivery_claimed_until": self.clock.now() + timedelta(seconds=wait),
                      "delivery_attempts": message.delivery_attempts - 1}
            async with self.db.session() as session, session.begin():
                await session.execute(update(Message).where(Message.id == message.id).values(**values))
            return 0
        action = Action(ActionKind(message.action), Address(message.channel, ChatType(message.chat_type),
                                                             message.chat_id),
                        message.text, ref=str(message.id), at=message.created_at, target_id=message.target_id,
                        target_ref=message.target_ref, until=message.until, sender_id=message.sender_id)
        try:
            receipt = await self.transports[message.channel].deliver(action)
            if isinstance(receipt, Pending):  # a guide must confirm it on the platform; the touch waits for that
                values = {"platform_ref": receipt.platform_ref, "awaiting_until": receipt.expires_at,
                          "delivery_claimed_until": receipt.expires_at}
            else:
                values = {"delivered_at": self.clock.now(), "delivery_claimed_until": None}
                # an assisted channel may still deliver directly (a welcome code, an app message)
                await self._finish_touch(message, TouchStatus.SENT, "delivered")
            sent = 1
        except DeliveryError as exc:
            sent = 0
            if exc.permanent or message.delivery_attempts >= self.max_attempts:
                log.error("giving up on message %s to %s: %s", message.id, message.channel, exc)
                values = {"delivery_claimed_until": None, "delivery_error": str(exc) or type(exc).__name__}
                await self._finish_touch(message, TouchStatus.DROPPED, "platform_refused")
            else:
                backoff = exc.retry_after if exc.retry_after is not None else 2 ** message.delivery_attempts
                retry_at = self.clock.now() + timedelta(seconds=backoff)
                if exc.pause_channel:  # the platform throttles the whole channel
                    self.paused_until[message.channel] = retry_at
                log.warning("delivery of message %s failed (%s); retrying in %.0fs", message.id, exc, backoff)
                values = {"delivery_claimed_until": retry_at}
        async with self.db.session() as session, session.begin():
            await session.execute(update(Message).where(Message.id == message.id).values(**values))
        return sent

    async def _finish_touch(self, message: Message, status: TouchStatus, reason: str) -> None:
        """Settle the touch of a message that waited for a guide; other touches are already final."""
        if message.touch_id is None:
            return
        async with self.db.session() as session, session.begin():
            await move(session, Touch.id == message.touch_id, (TouchStatus.AWAITING_GUIDE,), status, reason=reason)

    async def confirm_pending(self) -> None:
        """Ask platforms whether guides sent what they were asked to; expire what they did not."""
        channels = [c for c, t in self.transports.items() if isinstance(t, ConfirmsPending)]
        if not channels:
            return
        async with self.db.session() as session:
            waiting = await repo.awaiting_confirmation(session, channels)
        for message in waiting:
            transport = self.transports[message.channel]
            assert isinstance(transport, ConfirmsPending)
            try:
                state = await transport.check_pending(PendingMessage(message.platform_ref, message.chat_id,
                                                                     message.sender_id))
            except DeliveryError as exc:
                log.warning("cannot check assisted message %s: %s", message.id, exc)
                continue
            now = self.clock.now()
            expired = message.awaiting_until is not None and now >= message.awaiting_until
            if state is PendingState.SENT:
                values: dict[str, object] = {"delivered_at": now, "delivery_claimed_until": None}
                await self._finish_touch(message, TouchStatus.SENT, "confirmed_by_guide")
            elif state is PendingState.FAILED or expired:
                failed = state is PendingState.FAILED
                values = {"delivery_error": "the platform refused it" if failed else "the guide did not send it in time",
                          "delivery_claimed_until": None}
                await self._finish_touch(message, TouchStatus.DROPPED,
                                         "platform_refused" if failed else "guide_did_not_send")
            else:
                continue
            async with self.db.session() as session, session.begin():
                await session.execute(update(Message).where(Message.id == message.id).values(**values))
