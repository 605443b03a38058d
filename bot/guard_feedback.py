"""Staff decisions on the guard's work: what it did, what waits for review, and "spam" / "not spam".

A decision becomes a guard sample at once (the guard compares every new message with the samples, so it
counts from the next message on, in every process), and `siyu guard train` learns from all of them.
"Not spam" also takes the strike back: it no longer counts, what it still had waiting in the outbox is
called off, and a mute it caused is lifted. The console and `siyu guard` call these inside their own
transaction; each raises LookupError for an id it does not know.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.events import ActionKind
from bot.guard import REASONS
from bot.guard_members import display_names
from bot.guard_model import Sample
from bot.guard_similar import guard_view
from bot.moderation import COUNTED, queue_action, undo_strike
from storage.models import GuardEvent, GuardSample, Message


@dataclass(frozen=True)
class GuardEventView:
    """One guard decision as staff see it."""

    id: int
    at: datetime
    group: str
    member: str            # display name when the member is a known contact, else their platform id
    text: str              # the start of the message (staff may read it; it never goes to a log)
    rule: str              # comma-separated rule codes
    score: float | None    # the classifier's score, when it ran
    action: str            # warn | mute | remove | hold | delete
    status: str            # acted | held | spam | not_spam
    message_id: int | None  # messages.id of the judged message, for mark_spam


async def _view(session: AsyncSession, event: GuardEvent) -> GuardEventView:
    return (await _views(session, [event]))[0]


async def _views(session: AsyncSession, events: Sequence[GuardEvent]) -> list[GuardEventView]:
    names = await display_names(session, {(e.channel, e.member_id) for e in events})
    return [GuardEventView(e.id, e.at, e.group_id, names[(e.channel, e.member_id)], e.excerpt, e.rule, e.score,
                           e.action, e.status, e.message_row) for e in events]


async def guard_events(session: AsyncSession, since: datetime | None = None, until: datetime | None = None,
                       limit: int = 100) -> list[GuardEventView]:
    """What the guard did (acted, held, and what staff decided), newest first."""
    query = select(GuardEvent).order_by(GuardEvent.at.desc(), GuardEvent.id.desc()).limit(limit)
    if since is not None:
        query = query.where(GuardEvent.at >= since)
    if until is not None:
        query = query.where(GuardEvent.at < until)
    return await _views(session, (await session.scalars(query)).all())


async def review_queue(session: AsyncSession, limit: int = 200) -> list[GuardEventView]:
    """Messages held for staff (no public action was taken), oldest first."""
    rows = await session.scalars(select(GuardEvent).where(GuardEvent.status == "held")
                                 .order_by(GuardEvent.at, GuardEvent.id).limit(limit))
    return await _views(session, rows.all())


async def _event(session: AsyncSession, event_id: int) -> GuardEvent:
    event = await session.get(GuardEvent, event_id)
    if event is None:
        raise LookupError(f"no guard event #{event_id}")
    return event


async def _text_of(session: AsyncSession, event: GuardEvent) -> str:
    if event.message_row is not None:
        message = await session.get(Message, event.message_row)
        if message is not None:
            return message.text
    return event.excerpt


async def mark_not_spam(session: AsyncSession, event_id: int, staff_key: str, now: datetime) -> GuardEventView:
    """Staff say the message was fine: a normal sample, and the strike is undone (it no longer counts, a
    warning or removal not yet sent is called off, a mute it caused is lifted)."""
    event = await _event(session, event_id)
    if event.status != "not_spam":
        was_strike = event.status in COUNTED
        event.status, event.reviewed_by, event.reviewed_at = "not_spam", staff_key, now
        session.add(GuardSample(text=await _text_of(session, event), spam=False, staff_key=staff_key,
                                guard_event_id=event.id, created_at=now))
        if was_strike:
            await undo_strike(session, event, now)
    await session.flush()
    return await _view(session, event)


async def mark_spam(session: AsyncSession, message_id: int, staff_key: str, now: datetime) -> GuardEventView:
    """Staff say a group message is spam: it is deleted (once), counts as a strike, and becomes a spam sample.
    A message the guard held is settled the same way."""
    message = await session.get(Message, message_id)
    if message is None or message.direction != "in" or message.chat_type != "group":
        raise LookupError(f"no group message #{message_id}")
    event = await session.scalar(select(GuardEvent).where(GuardEvent.message_row == message.id)
                                 .order_by(GuardEvent.id.desc()).limit(1))
    if event is None:
        event = GuardEvent(channel=message.channel, group_id=message.chat_id, member_id=message.sender_id,
                           message_ref=message.platform_ref, rule="staff", strike=1, action="delete",
                           reason=REASONS["staff"], excerpt=message.text[:200], message_row=message.id, at=now)
        session.add(event)
    if event.status != "spam":
        newly_removed = event.status is None or event.action == "hold"  # the guard had not deleted it
        if newly_removed:
            event.action = "delete"
        event.status, event.reviewed_by, event.reviewed_at = "spam", staff_key, now
        await session.flush()  # the event's id, for the sample
        session.add(GuardSample(text=message.text, spam=True, staff_key=staff_key, guard_event_id=event.id,
                                created_at=now))
        if newly_removed and message.platform_ref:
            queue_action(session, message.channel, message.chat_id, message.sender_id, message.platform_ref,
                         ActionKind.DELETE, now)
        await session.flush()
    return await _view(session, event)


REMOVAL_LOOKBACK = timedelta(hours=24)  # how far back a removed member's messages are taken as the reason
REMOVAL_SAMPLES = 3  # at most this many of them, newest first


async def learn_from_removal(session: AsyncSession, channel: str, group_id: str, member_id: str, staff_key: str,
                             now: datetime, min_length: int = 4,
                             evasions: Sequence[tuple[str, str]] = ()) -> list[GuardEventView]:
    """Staff took a member out of a group on the platform: their latest messages there (at most
    REMOVAL_SAMPLES from the last REMOVAL_LOOKBACK) become spam samples, each with a guard event that staff
    can overturn in the console. Nothing is deleted; a removal the guard made itself teaches nothing.
    """
    since = now - REMOVAL_LOOKBACK
    ours = await session.scalar(select(GuardEvent.id).where(
        GuardEvent.channel == channel, GuardEvent.group_id == group_id, GuardEvent.member_id == member_id,
        GuardEvent.action == "remove", GuardEvent.status == "acted", GuardEvent.at > since).limit(1))
    if ours is not None:
        return []  # the guard's own decision: learning from it would only repeat its mistakes
    messages = (await session.scalars(select(Message).where(
        Message.direction == "in", Message.chat_type == "group", Message.channel == channel,
        Message.chat_id == group_id, Message.sender_id == member_id, Message.created_at > since)
        .order_by(Message.id.desc()).limit(REMOVAL_SAMPLES * 4))).all()
    # too short to compare (「好的」) says nothing about why they were removed
    messages = [m for m in messages if len(guard_view(m.text, evasions)) >= max(min_length, 1)][:REMOVAL_SAMPLES]
    learned = []
    for message in messages:
        event = await session.scalar(select(GuardEvent).where(GuardEvent.message_row == message.id)
                                     .order_by(GuardEvent.id.desc()).limit(1))
        if event is not None and event.status in ("spam", "not_spam"):
            continue  # staff have decided on it already (or the platform told us of this removal before)
        if event is None:
            event = GuardEvent(channel=channel, group_id=group_id, member_id=member_id,
                               message_ref=message.platform_ref, rule="staff_removal", strike=1, action="remove",
                               reason=REASONS["staff_removal"], excerpt=message.text[:200], message_row=message.id,
                               at=now)
            session.add(event)
        event.status, event.reviewed_by, event.reviewed_at = "spam", staff_key, now
        await session.flush()  # the event's id, for the sample
        session.add(GuardSample(text=message.text, spam=True, staff_key=staff_key, guard_event_id=event.id,
                                created_at=now))
        learned.append(event)
    await session.flush()
    return await _views(session, learned)


async def staff_samples(session: AsyncSession) -> list[Sample]:
    """Every decision staff have made, for `siyu guard train`."""
    rows = await session.execute(select(GuardSample.text, GuardSample.spam).order_by(GuardSample.id))
    return [Sample(text, bool(spam)) for text, spam in rows.all()]
