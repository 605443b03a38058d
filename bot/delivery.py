"""The delivery stage of the outbox: hands queued outbound messages to their transports.

What reaches a platform, and how often: a message is handed over until the platform accepts it or
refuses it for good. A process that dies *during* the platform call cannot know whether the platform
took the message. Where the platform drops repeats (`DedupesRepeats`: the web page by message id,
WeCom by an idempotency key or its duplicate check) the outbox simply hands it over again. Everywhere
else (Telegram's sendMessage has no idempotency key) it is never repeated: it is recorded as in doubt
and the customer's guide gets one note to check, so nothing is sent twice and nothing is lost
silently. `python -m bench kill9` measures this with real SIGKILLs.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import DeliveryRate
from bot.conversation_log import note_to_guide
from bot.events import Action, ActionKind, Address, ChatType, Event
from bot.metrics import Metrics
from bot.ratelimit import TokenBucket
from bot.transport import (
    FOREVER,
    ConfirmsPending,
    ConnectedHere,
    DedupesRepeats,
    DeliveryError,
    DeliveryInDoubt,
    Pending,
    PendingMessage,
    PendingState,
    Transport,
)
from storage import repo
from storage.db import Database
from storage.models import Contact, Message, Touch
from storage.touch_status import TouchStatus, move

log = logging.getLogger(__name__)
IN_DOUBT_NOTE = ("【可能未送达】{about}的一条消息在发送途中服务中断，平台可能已经收到，也可能没有。为免重复，"
                 "siyu 不会自动重发：请在会话中确认，需要时亲手补发。\n内容：{text}")
NOTE_EXCERPT = 200  # characters of the doubtful message quoted in the note
FIRST_CONFIRM_CHECK = timedelta(seconds=15)  # a guide asked to send something: ask the platform after this,
LAST_CONFIRM_CHECK = timedelta(minutes=15)   # then twice as long each time, up to this


def action_of(message: Message) -> Action:
    """The action a stored outbound message asks of its platform."""
    return Action(ActionKind(message.action), Address(message.channel, ChatType(message.chat_type), message.chat_id),
                  message.text, ref=str(message.id), at=message.created_at, target_id=message.target_id,
                  target_ref=message.target_ref, until=message.until, sender_id=message.sender_id,
                  from_guide=message.sender_role == "staff")


class Publisher:
    """Where delivered actions of transports with their own connections are announced to other processes,
    and the group messages those transports' members send (bot/relay.py)."""

    async def publish(self, session: AsyncSession, action: Action) -> None:
        """Announce inside `session`'s transaction (default: one process, nobody to tell)."""

    async def publish_message(self, session: AsyncSession, event: Event, stored_id: int) -> None:
        """Announce a member's group message inside the transaction that stores it as `stored_id`."""


@dataclass
class _Mark:
    """What one message handed to our own page leaves to record, and who waits for it to commit."""

    message_id: int
    values: dict[str, object]
    action: Action
    done: asyncio.Future[None]


@dataclass
class _ConfirmCheck:
    """When to next ask the platform about one assisted message, and how long the wait after that is."""

    at: datetime
    wait: timedelta


def may_repeat(started: datetime | None, window: timedelta | None, now: datetime) -> bool:
    """Whether an action whose earlier call began at `started` may be handed over again."""
    if started is None or window is FOREVER:
        return True  # never reached the platform, or the platform always drops the repeat
    return window is not None and now < started + window


class Dispatcher:
    """Delivers outbound messages at most once to each platform, repeating only what the platform dedupes.

    `lease` must outlast the slowest platform call: a worker that finds a claim of another worker
    expired while its call was still running treats that message as in doubt (never as unsent).
    """

    def __init__(self, db: Database, clock: Clock, transports: Mapping[str, Transport],
                 rates: Callable[[str], DeliveryRate], lease: timedelta = timedelta(seconds=30),
                 max_attempts: int = 8, metrics: Metrics | None = None, default_guide: str | None = None,
                 publisher: Publisher | None = None) -> None:
        self.db = db
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.transports = transports  # the app's registry, read live
        self.rates = rates
        self.lease = lease
        self.max_attempts = max_attempts
        self.default_guide = default_guide  # told about a doubtful message of a customer without a guide
        self._buckets: dict[str, TokenBucket] = {}
        self.paused_until: dict[str, datetime] = {}  # a platform said "slow down"
        self.publisher = publisher or Publisher()
        self._confirm_checks: dict[int, _ConfirmCheck] = {}  # message id → next question to the platform
        self._marks: list[_Mark] = []  # local deliveries waiting for the writer, recorded together
        self._marking: asyncio.Task[None] | None = None

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

    async def deliver_now(self, messages: Sequence[Message]) -> int:
        """Deliver messages the caller claimed in the transaction that queued them (a live reply);
        returns how many went out. Whatever fails here stays in the outbox for the serve loop."""
        delivered = 0
        for message in messages:
            if message.channel in self.transports:
                delivered += await self._deliver(message)
        return delivered

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

    @staticmethod
    async def _hand_over(transport: Transport, action: Action) -> Pending | None:
        """The platform call; an adapter's own bug becomes a failure of this message, never of the batch."""
        try:
            return await transport.deliver(action)
        except DeliveryError:
            raise
        except Exception as exc:  # the call may have reached the platform before the adapter failed
            log.error("the %s adapter failed on message %s (%s)", action.address.channel, action.ref,
                      type(exc).__name__)
            raise DeliveryInDoubt(f"{type(exc).__name__} in the {action.address.channel} adapter") from None

    async def _deliver(self, message: Message) -> int:
        values: dict[str, object]
        transport = self.transports[message.channel]
        action = action_of(message)
        local = isinstance(transport, ConnectedHere)  # our own page: no platform quota, other processes told
        window = transport.repeat_window(action) if isinstance(transport, DedupesRepeats) else None
        if not may_repeat(message.delivery_started_at, window, self.clock.now()):
            # the last attempt died during the platform call (or is in it still, past its lease)
            await self._give_up_in_doubt(message, "the worker stopped during the platform call")
            return 0
        wait = 0.0 if local else self._wait_before(message.channel)
        if wait > 0:  # not an attempt: put it back for later, nothing is lost
            values = {"delivery_claimed_until": self.clock.now() + timedelta(seconds=wait),
                      "delivery_attempts": message.delivery_attempts - 1}
            async with self.db.session() as session, session.begin():
                await session.execute(update(Message).where(Message.id == message.id).values(**values))
            return 0
        started = message.delivery_started_at
        if window is not FOREVER:
            # One small committed UPDATE per message, only where the platform would take a repeat: it
            # is what tells "may have reached the platform" from "never tried" after a crash, and it
            # renews the claim for the call.
            now = self.clock.now()
            started = started or now
            async with self.db.session() as session, session.begin():
                ours = await repo.mark_delivery_started(session, message, now, now + self.lease)
            if not ours:  # our claim ran out during a long batch and another worker has the message
                return 0
        try:
            receipt = await self._hand_over(transport, action)
            if isinstance(receipt, Pending):  # a guide must confirm it on the platform; the touch waits for that
                values = {"platform_ref": receipt.platform_ref, "awaiting_until": receipt.expires_at,
                          "delivery_claimed_until": receipt.expires_at}
            else:
                values = {"delivered_at": self.clock.now(), "delivery_claimed_until": None}
                self.metrics.observe_delivery(message.channel, message.created_at, self.clock.now())
                if isinstance(transport, ConfirmsPending):  # elsewhere the touch is final already
                    # an assisted channel may still deliver directly (a welcome code, an app message)
                    await self._finish_touch(message, TouchStatus.SENT, "delivered")
            sent = 1
            if local:
                await self._record_local(message.id, values, action)
                return sent
        except DeliveryError as exc:
            if isinstance(exc, DeliveryInDoubt) and not may_repeat(started, window, self.clock.now()):
                await self._give_up_in_doubt(message, str(exc) or type(exc).__name__)
                return 0
            sent = 0
            if exc.permanent or message.delivery_attempts >= self.max_attempts:
                log.error("giving up on message %s to %s: %s", message.id, message.channel, exc)
                self.metrics.delivery_failures.labels(message.channel, "gave_up").inc()
                values = {"delivery_claimed_until": None, "delivery_error": str(exc) or type(exc).__name__}
                await self._finish_touch(message, TouchStatus.DROPPED, "platform_refused")
            else:
                backoff = exc.retry_after if exc.retry_after is not None else 2 ** message.delivery_attempts
                retry_at = self.clock.now() + timedelta(seconds=backoff)
                if exc.pause_channel:  # the platform throttles the whole channel
                    self.paused_until[message.channel] = retry_at
                log.warning("delivery of message %s failed (%s); retrying in %.0fs", message.id, exc, backoff)
                self.metrics.delivery_failures.labels(message.channel, "retry").inc()
                values = {"delivery_claimed_until": retry_at}
                if not isinstance(exc, DeliveryInDoubt):
                    values["delivery_started_at"] = None  # the platform said no: the next call is a first one
        async with self.db.session() as session, session.begin():
            await session.execute(update(Message).where(Message.id == message.id).values(**values))
        return sent

    async def _record_local(self, message_id: int, values: dict[str, object], action: Action) -> None:
        """Record a delivery to our own page (and announce it); returns once committed.

        Group commit: the deliveries that come in while one such transaction waits for the writer go
        in the next one together, so a burst of live replies costs one write transaction, not one each.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks.append(_Mark(message_id, values, action, done))
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._write_marks())
        await done

    async def _write_marks(self) -> None:
        while self._marks:
            batch: list[_Mark] = []
            try:
                async with self.db.session() as session, session.begin():
                    batch, self._marks = self._marks, []  # everyone who came while we waited for the writer
                    for mark in batch:
                        await session.execute(update(Message).where(Message.id == mark.message_id)
                                              .values(**mark.values))
                        await self.publisher.publish(session, mark.action)
            except BaseException as exc:
                failed, batch = batch or self._marks, []
                if failed is self._marks:
                    self._marks = []
                for mark in failed:
                    if not mark.done.done():
                        mark.done.set_exception(exc) if isinstance(exc, Exception) else mark.done.cancel()
                if not isinstance(exc, Exception):
                    raise
            for mark in batch:
                if not mark.done.done():
                    mark.done.set_result(None)

    async def _give_up_in_doubt(self, message: Message, why: str) -> None:
        """Record a message that may or may not have arrived, never send it again, and tell the guide."""
        async with self.db.session() as session, session.begin():
            if not await repo.record_in_doubt(session, message.id, why):
                return  # delivered or settled meanwhile by the worker whose lease ran out
            if message.touch_id is not None:  # an assisted send nobody can confirm any more
                await move(session, Touch.id == message.touch_id, (TouchStatus.AWAITING_GUIDE,), TouchStatus.DROPPED,
                           reason="delivery_in_doubt")
            told = await self._tell_guide(session, message)
        self.metrics.delivery_failures.labels(message.channel, "in_doubt").inc()
        log.warning("message %s to %s is in doubt (%s): not sent again; %s", message.id, message.channel, why,
                    "the guide is told" if told else "no guide to tell")

    async def _tell_guide(self, session: AsyncSession, message: Message) -> bool:
        """Queue one note about a doubtful message to the customer's guide, on the customer's channel
        when the guide is there."""
        contact = await session.get(Contact, message.contact_id) if message.contact_id is not None else None
        key = (contact.guide_key if contact is not None else None) or self.default_guide
        channel = contact.channel if contact is not None else message.channel
        if contact is None:
            about = f"发往 {message.channel} 会话 {message.chat_id} "
        elif (message.channel, message.chat_id) == (contact.channel, contact.external_id):
            about = f"发给 {contact.name}（#{contact.id}，{contact.channel}）"
        else:
            about = f"关于 {contact.name}（#{contact.id}）发给 {message.chat_id} "
        text = message.text if len(message.text) <= NOTE_EXCERPT else message.text[:NOTE_EXCERPT] + "…"
        return await note_to_guide(session, key, channel, message.contact_id,
                                   IN_DOUBT_NOTE.format(about=about, text=text), self.clock.now())

    async def _finish_touch(self, message: Message, status: TouchStatus, reason: str) -> None:
        """Settle the touch of a message that waited for a guide; other touches are already final."""
        if message.touch_id is None:
            return
        async with self.db.session() as session, session.begin():
            await move(session, Touch.id == message.touch_id, (TouchStatus.AWAITING_GUIDE,), status, reason=reason)

    async def confirm_pending(self) -> None:
        """Ask platforms whether guides sent what they were asked to; expire what they did not.

        Each waiting message has its own back-off (15 s, then twice as long each time, up to 15 min), so a
        day of waiting costs about a hundred questions to the platform, not one a second."""
        channels = [c for c, t in self.transports.items() if isinstance(t, ConfirmsPending)]
        if not channels:
            return
        async with self.db.session() as session:
            waiting = await repo.awaiting_confirmation(session, channels)
        still = {message.id for message in waiting}
        for gone in [key for key in self._confirm_checks if key not in still]:
            del self._confirm_checks[gone]  # settled, here or by another process
        for message in waiting:
            now = self.clock.now()
            expired = message.awaiting_until is not None and now >= message.awaiting_until
            check = self._confirm_checks.get(message.id)
            if check is not None and now < check.at and not expired:
                continue
            wait = FIRST_CONFIRM_CHECK if check is None else min(check.wait * 2, LAST_CONFIRM_CHECK)
            self._confirm_checks[message.id] = _ConfirmCheck(now + wait, wait)
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
            self._confirm_checks.pop(message.id, None)
            async with self.db.session() as session, session.begin():
                await session.execute(update(Message).where(Message.id == message.id).values(**values))
