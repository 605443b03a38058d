"""Queries. Each takes the caller's session, so the caller decides what one transaction covers."""
from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, Self

from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Contact,
    Enrolment,
    Group,
    GuardEvent,
    InboxItem,
    KeyValue,
    Membership,
    Message,
    ProcessedInbound,
    Staff,
    StaffCredential,
    Touch,
    TouchLog,
)
from storage.touch_status import (
    ACTIVE,
    TouchStatus,
    claim_values,
    due_pending,
    due_to_claim,
    expired_claims,
    move,
)
from storage.types import UTCDateTime


async def insert_ignore(session: AsyncSession, model: type[Any], values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when a row was inserted (a unique key decides)."""
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = await session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


async def mark_inbound_processed(session: AsyncSession, channel: str, message_id: str, now: datetime) -> bool:
    """Remember an inbound platform message; False when it was already handled (a redelivery)."""
    return await insert_ignore(session, ProcessedInbound, {"channel": channel, "message_id": message_id, "at": now})


async def contact_by_identity(session: AsyncSession, channel: str, external_id: str) -> Contact | None:
    return await session.scalar(select(Contact).where(Contact.channel == channel, Contact.external_id == external_id))


async def find_contact(session: AsyncSession, ref: str, channel: str | None = None) -> Contact | None:
    """A customer by numeric id, or by platform id (on `channel` first), or by exact name."""
    if ref.isdigit():
        found = await session.get(Contact, int(ref))
        if found:
            return found
    query = select(Contact).where(Contact.external_id == ref).order_by(Contact.id)
    if channel:
        found = await session.scalar(query.where(Contact.channel == channel))
        if found:
            return found
    return await session.scalar(query) or await session.scalar(
        select(Contact).where(Contact.name == ref).order_by(Contact.id))


async def staff_by_identity(session: AsyncSession, channel: str, external_id: str) -> Staff | None:
    return await session.scalar(select(Staff).where(Staff.channel == channel, Staff.external_id == external_id))


async def all_staff(session: AsyncSession) -> Sequence[Staff]:
    return (await session.scalars(select(Staff).order_by(Staff.id))).all()


async def staff_identities(session: AsyncSession, key: str) -> Sequence[Staff]:
    return (await session.scalars(select(Staff).where(Staff.key == key).order_by(Staff.id))).all()


async def group_by_identity(session: AsyncSession, channel: str, external_id: str, now: datetime,
                            name: str = "") -> Group:
    await insert_ignore(session, Group, {"channel": channel, "external_id": external_id, "name": name or external_id,
                                         "created_at": now})
    group = await session.scalar(select(Group).where(Group.channel == channel, Group.external_id == external_id))
    assert group is not None
    return group


async def set_membership(session: AsyncSession, group: Group, member_id: str, contact_id: int | None,
                         role: str, now: datetime, present: bool) -> bool:
    """Record a join or leave; True when membership actually changed."""
    row = await session.scalar(select(Membership).where(Membership.group_id == group.id,
                                                        Membership.member_id == member_id))
    if present:
        if row is None:
            session.add(Membership(group_id=group.id, member_id=member_id, contact_id=contact_id, role=role,
                                   joined_at=now))
            return True
        if row.left_at is not None:
            row.left_at, row.joined_at = None, now
            return True
        return False
    if row is not None and row.left_at is None:
        row.left_at = now
        return True
    return False


async def enrolment_for(session: AsyncSession, contact_id: int, journey_id: str) -> Enrolment | None:
    return await session.scalar(select(Enrolment).where(Enrolment.contact_id == contact_id,
                                                        Enrolment.journey_id == journey_id))


async def active_enrolments(session: AsyncSession, contact_id: int) -> Sequence[Enrolment]:
    return (await session.scalars(select(Enrolment).where(Enrolment.contact_id == contact_id,
                                                          Enrolment.status == "active"))).all()


async def live_enrolments(session: AsyncSession, contact_id: int) -> Sequence[Enrolment]:
    """A customer's active journeys and those completed (a completed one may still listen for a reply)."""
    return (await session.scalars(select(Enrolment).where(Enrolment.contact_id == contact_id,
                                                          Enrolment.status.in_(("active", "completed"))))).all()


async def schedule_touch(session: AsyncSession, **values: Any) -> bool:
    """Put a touch in the outbox; the idempotency key makes a second scheduling a no-op."""
    values["status"] = TouchStatus.PENDING
    values.setdefault("attempts", 0)
    values.setdefault("first_due_at", values.get("due_at"))
    return await insert_ignore(session, Touch, values)


async def cancel_touches(session: AsyncSession, contact_id: int, now: datetime, reason: str,
                         enrolment_id: int | None = None) -> list[int]:
    """End every not-yet-sent touch of a customer (or of one enrolment); returns the ids cancelled."""
    where = Touch.contact_id == contact_id
    if enrolment_id is not None:
        where = and_(where, Touch.enrolment_id == enrolment_id)
    return await move(session, where, ACTIVE, TouchStatus.CANCELLED, reason=reason, finished_at=now)


def _skip_locked(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


def _claim_statement(model: Any, ready: Any, order: Sequence[Any], limit: Any, values: dict[str, Any],
                     skip_locked: bool) -> Any:
    """UPDATE the first `limit` ready rows with `values`, RETURNING their ids."""
    candidates = select(model.id).where(ready).order_by(*order).limit(limit)
    if skip_locked:
        # picked once, in a materialized CTE: as a subquery PostgreSQL may run it again for each row it
        # updates, and where the order has ties (touches due at the same second) or other workers lock rows
        # meanwhile, each run picks other rows, claiming far more than `limit`
        picked = candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        chosen = model.id.in_(select(picked.c.id))
    else:
        chosen = model.id.in_(candidates.scalar_subquery())
    return (update(model).where(chosen, ready).values(**values)
            .returning(model.id).execution_options(synchronize_session=False))


async def _claim(session: AsyncSession, model: Any, ready: Any, order: Sequence[Any], limit: int,
                 values: dict[str, Any]) -> list[int]:
    """Mark up to `limit` ready rows as ours and return their ids.

    One UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING: PostgreSQL workers skip
    each other's rows, and on SQLite a single statement takes the write lock at once, so two
    processes never deadlock upgrading a read lock.
    """
    result = await session.execute(_claim_statement(model, ready, order, limit, values, _skip_locked(session)))
    return sorted(result.scalars().all())


async def claim_due_touches(session: AsyncSession, worker: str, now: datetime, lease: timedelta,
                            limit: int, contact_ids: Collection[int] | None = None) -> list[int]:
    """Claim up to `limit` due touches for this worker (only these customers', when given); expired claims
    of dead workers are taken over."""
    values = claim_values(worker, now, lease)
    if not _skip_locked(session):
        ready = due_to_claim(now)
        if contact_ids is not None:
            ready = and_(ready, Touch.contact_id.in_(list(contact_ids)))
        return await _claim(session, Touch, ready, (Touch.due_at, Touch.id), limit, values)
    # PostgreSQL, where a backlog can be a million touches: two claims that each walk ix_touches_due in order
    # and stop at `limit`. One OR of both, or a tie-break on id, would read and sort every due touch each time.
    claimed: list[int] = []
    for ready in (expired_claims(now), due_pending(now)):
        if contact_ids is not None:
            ready = and_(ready, Touch.contact_id.in_(list(contact_ids)))
        claimed += await _claim(session, Touch, ready, (Touch.due_at,), limit - len(claimed), values)
        if len(claimed) >= limit:
            break
    return sorted(claimed)


async def next_due_at(session: AsyncSession) -> datetime | None:
    return await session.scalar(select(func.min(Touch.due_at)).where(Touch.status == TouchStatus.PENDING))


def log_decision(session: AsyncSession, touch: Touch, decision: str, reason: str, detail: str,
                 now: datetime, proactive: bool = True) -> None:
    session.add(TouchLog(contact_id=touch.contact_id, touch_id=touch.id, journey_id=touch.journey_id,
                         step_id=touch.step_id, decision=decision, reason=reason, detail=detail,
                         proactive=proactive, at=now))


async def recent_decisions(session: AsyncSession, contact_id: int, limit: int = 20) -> Sequence[TouchLog]:
    return (await session.scalars(select(TouchLog).where(TouchLog.contact_id == contact_id)
                                  .order_by(TouchLog.at.desc(), TouchLog.id.desc()).limit(limit))).all()


async def proactive_sends_since(session: AsyncSession, contact_id: int, since: datetime) -> list[datetime]:
    """When proactive touches were sent to this customer since `since` (what the caps count)."""
    return list((await session.scalars(select(TouchLog.at).where(
        TouchLog.contact_id == contact_id, TouchLog.decision == "sent", TouchLog.proactive.is_(True),
        TouchLog.at >= since))).all())


async def competing_touches(session: AsyncSession, contact_id: int, except_id: int,
                            now: datetime) -> list[tuple[str, str | None]]:
    """(journey_id, triggered_by) of the customer's other touches due now."""
    rows = await session.execute(select(Touch.journey_id, Touch.triggered_by).where(
        Touch.contact_id == contact_id, Touch.id != except_id, Touch.status.in_(ACTIVE),
        Touch.due_at <= now))
    return [(j, t) for j, t in rows.all()]


async def enrolment_touches(session: AsyncSession, enrolment_id: int) -> Sequence[Touch]:
    return (await session.scalars(select(Touch).where(Touch.enrolment_id == enrolment_id))).all()


async def has_other_active_touches(session: AsyncSession, enrolment_id: int, except_id: int) -> bool:
    found = await session.scalar(select(Touch.id).where(Touch.enrolment_id == enrolment_id, Touch.id != except_id,
                                                        Touch.status.in_(ACTIVE)).limit(1))
    return found is not None


def add_message(session: AsyncSession, **values: Any) -> Message:
    message = Message(**values)
    session.add(message)
    return message


async def claim_undelivered(session: AsyncSession, channels: Sequence[str], now: datetime, lease: timedelta,
                            limit: int) -> list[Message]:
    """Outbound messages not yet handed to their platform, claimed for a short lease.

    A message a guide must still confirm (`awaiting_until`) is the platform's now: only
    `awaiting_confirmation` follows it, so it is never handed over a second time. A claimed message
    with `delivery_started_at` set was being handed over when its worker stopped: the dispatcher
    decides whether it may be repeated (bot/delivery.py).
    """
    claim = _undelivered_claim(_skip_locked(session), tuple(channels))
    result = await session.execute(claim, {"claim_now": now, "claim_end": now + lease, "claim_limit": limit})
    ids = sorted(result.scalars().all())
    if not ids:
        return []
    return list((await session.scalars(_MESSAGES_BY_ID, {"ids": ids})).all())


# Built once: the serve loop claims every pass, and building this statement (and its cache key) costs
# more than SQLite takes to run it. The same statement as `_claim` builds, with the values bound.
_MESSAGES_BY_ID = select(Message).where(Message.id.in_(bindparam("ids", expanding=True))).order_by(Message.id)
_UNDELIVERED_CLAIMS: dict[tuple[bool, tuple[str, ...]], Any] = {}


def _undelivered_claim(skip_locked: bool, channels: tuple[str, ...]) -> Any:
    key = (skip_locked, channels)
    if key not in _UNDELIVERED_CLAIMS:
        now = bindparam("claim_now", type_=UTCDateTime())
        ready = and_(Message.direction == "out", Message.delivered_at.is_(None), Message.delivery_error.is_(None),
                     Message.awaiting_until.is_(None), Message.channel.in_(channels),
                     or_(Message.delivery_claimed_until.is_(None), Message.delivery_claimed_until < now))
        limit = bindparam("claim_limit", type_=Integer())
        values = {"delivery_claimed_until": bindparam("claim_end", type_=UTCDateTime()),
                  "delivery_attempts": Message.delivery_attempts + 1}
        _UNDELIVERED_CLAIMS[key] = _claim_statement(Message, ready, (Message.id,), limit, values, skip_locked)
    return _UNDELIVERED_CLAIMS[key]


async def conversation(session: AsyncSession, channel: str, chat_type: str, chat_id: str,
                       limit: int = 50) -> list[Message]:
    rows = (await session.scalars(select(Message).where(Message.channel == channel, Message.chat_type == chat_type,
                                                        Message.chat_id == chat_id)
                                  .order_by(Message.id.desc()).limit(limit))).all()
    return list(reversed(rows))


async def recent_group_messages(session: AsyncSession, channel: str, since: datetime,
                                limit: int = 500) -> Sequence[Message]:
    """Inbound group messages on a channel since `since`, newest first (for flood and repeat rules)."""
    return (await session.scalars(select(Message).where(
        Message.channel == channel, Message.chat_type == "group", Message.direction == "in",
        Message.created_at > since).order_by(Message.id.desc()).limit(limit))).all()


async def strikes_since(session: AsyncSession, channel: str, group_id: str, member_id: str,
                        since: datetime) -> int:
    return int(await session.scalar(select(func.count()).select_from(GuardEvent).where(
        GuardEvent.channel == channel, GuardEvent.group_id == group_id, GuardEvent.member_id == member_id,
        GuardEvent.at > since)) or 0)


async def membership_of(session: AsyncSession, group: Group, member_id: str) -> Membership | None:
    return await session.scalar(select(Membership).where(Membership.group_id == group.id,
                                                         Membership.member_id == member_id))


async def guard_events(session: AsyncSession, limit: int = 50) -> Sequence[GuardEvent]:
    return (await session.scalars(select(GuardEvent).order_by(GuardEvent.at.desc(), GuardEvent.id.desc())
                                  .limit(limit))).all()


async def staff_spoke_since(session: AsyncSession, channel: str, group_id: str, since: datetime) -> bool:
    found = await session.scalar(select(Message.id).where(
        Message.channel == channel, Message.chat_type == "group", Message.chat_id == group_id,
        Message.sender_role == "staff", Message.created_at > since).limit(1))
    return found is not None


async def answered_since(session: AsyncSession, since: datetime) -> Sequence[tuple[datetime, str | None, bool]]:
    """(when, intent, handed off) of every reply to a customer's question since `since`."""
    rows = await session.execute(select(Message.created_at, Message.intent, Message.handoff).where(
        Message.direction == "out", Message.created_at >= since,
        or_(Message.intent.isnot(None), Message.handoff.is_(True))).order_by(Message.created_at))
    return [(at, intent, bool(handoff)) for at, intent, handoff in rows.all()]


async def unanswered_questions(session: AsyncSession, since: datetime, limit: int = 5000) -> Sequence[str]:
    return (await session.scalars(select(Message.text).where(
        Message.direction == "in", Message.handoff.is_(True), Message.created_at >= since)
        .order_by(Message.id.desc()).limit(limit))).all()


async def remember_inbound(session: AsyncSession, channel: str, dedupe_key: str, payload: str,
                           now: datetime) -> bool:
    """Store a callback for processing; False when the same one is already stored (a retry)."""
    return await insert_ignore(session, InboxItem, {"channel": channel, "dedupe_key": dedupe_key,
                                                    "payload": payload, "received_at": now, "attempts": 0})


async def unprocessed_inbox(session: AsyncSession, channels: Sequence[str], limit: int = 100) -> Sequence[InboxItem]:
    query = select(InboxItem).where(InboxItem.processed_at.is_(None), InboxItem.channel.in_(channels),
                                    InboxItem.attempts < 5).order_by(InboxItem.id).limit(limit)
    if _skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    return (await session.scalars(query)).all()


async def get_value(session: AsyncSession, key: str) -> str | None:
    row = await session.get(KeyValue, key)
    return row.value if row else None


async def set_value(session: AsyncSession, key: str, value: str, now: datetime) -> None:
    row = await session.get(KeyValue, key)
    if row is None:
        session.add(KeyValue(key=key, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now


async def awaiting_confirmation(session: AsyncSession, channels: Sequence[str]) -> Sequence[Message]:
    return (await session.scalars(select(Message).where(
        Message.direction == "out", Message.delivered_at.is_(None), Message.delivery_error.is_(None),
        Message.awaiting_until.isnot(None), Message.channel.in_(channels)).order_by(Message.id))).all()


async def delivery_window(session: AsyncSession, channel: str, chat_id: str) -> tuple[datetime | None, int]:
    """(the customer's last message, how many of ours were delivered since) on one channel."""
    last_in = await session.scalar(select(func.max(Message.created_at)).where(
        Message.channel == channel, Message.chat_id == chat_id, Message.direction == "in"))
    if last_in is None:
        return None, 0
    sent = await session.scalar(select(func.count()).select_from(Message).where(
        Message.channel == channel, Message.chat_id == chat_id, Message.direction == "out",
        Message.delivered_at.isnot(None), Message.delivered_at >= last_in))
    return last_in, int(sent or 0)


async def assisted_send_times(session: AsyncSession, channel: str, customer: str, since: datetime) -> list[datetime]:
    """When assisted (guide-confirmed) messages to one customer were handed to the platform since `since`."""
    return list((await session.scalars(select(Message.created_at).where(
        Message.channel == channel, Message.chat_id == customer, Message.platform_ref.isnot(None),
        Message.created_at >= since))).all())


async def current_members(session: AsyncSession, channel: str, group_id: str) -> set[str]:
    rows = await session.scalars(select(Membership.member_id).join(Group, Group.id == Membership.group_id).where(
        Group.channel == channel, Group.external_id == group_id, Membership.left_at.is_(None)))
    return set(rows.all())


async def recent_inbound_times(session: AsyncSession, channel: str, chat_id: str, limit: int) -> list[datetime]:
    """When one person's latest `limit` messages in a 1v1 chat came in, newest first (for flood control).

    Bounded by `limit`, so a customer with a long history costs no more than one who just arrived.
    """
    return list((await session.scalars(select(Message.created_at).where(
        Message.channel == channel, Message.chat_type == "direct", Message.chat_id == chat_id,
        Message.direction == "in").order_by(Message.id.desc()).limit(limit))).all())


# --- staff credentials (bot/staff_accounts.py decides; these only read and write) ---

async def staff_password_hash(session: AsyncSession, staff_key: str) -> str | None:
    """The staff member's current password hash (the newest, should two writers have raced)."""
    return await session.scalar(select(StaffCredential.secret_hash).where(
        StaffCredential.staff_key == staff_key, StaffCredential.kind == "password")
        .order_by(StaffCredential.id.desc()).limit(1))


async def replace_staff_password(session: AsyncSession, staff_key: str, secret_hash: str, now: datetime) -> None:
    await session.execute(delete(StaffCredential).where(StaffCredential.staff_key == staff_key,
                                                        StaffCredential.kind == "password"))
    session.add(StaffCredential(staff_key=staff_key, kind="password", secret_hash=secret_hash, created_at=now))


async def add_staff_token(session: AsyncSession, staff_key: str, digest: str, now: datetime) -> None:
    session.add(StaffCredential(staff_key=staff_key, kind="token", secret_hash=digest, created_at=now))


async def delete_staff_tokens(session: AsyncSession, staff_key: str) -> int:
    """Remove every API token of one staff member; how many there were."""
    result = await session.execute(delete(StaffCredential).where(StaffCredential.staff_key == staff_key,
                                                                 StaffCredential.kind == "token"))
    return int(result.rowcount or 0)


async def staff_key_by_token(session: AsyncSession, digest: str) -> str | None:
    return await session.scalar(select(StaffCredential.staff_key).where(
        StaffCredential.kind == "token", StaffCredential.secret_hash == digest))


# --- kv beyond get/set: a value kept once (signing secrets), counted keys (login failures) ---

async def insert_value_if_absent(session: AsyncSession, key: str, value: str, now: datetime) -> str:
    """Store `value` under `key` unless a value is already there; the value stored either way."""
    await insert_ignore(session, KeyValue, {"key": key, "value": value, "updated_at": now})
    stored = await session.scalar(select(KeyValue.value).where(KeyValue.key == key))
    return stored if stored is not None else value


async def count_values(session: AsyncSession, prefix: str, since: datetime) -> int:
    """How many keys start with `prefix` and were written since `since` (e.g. recent login failures)."""
    return int(await session.scalar(select(func.count()).select_from(KeyValue).where(
        KeyValue.key.startswith(prefix, autoescape=True), KeyValue.updated_at >= since)) or 0)


async def delete_values(session: AsyncSession, prefix: str, before: datetime | None = None) -> None:
    """Remove the keys starting with `prefix` (only those written before `before`, when given)."""
    query = delete(KeyValue).where(KeyValue.key.startswith(prefix, autoescape=True))
    if before is not None:
        query = query.where(KeyValue.updated_at < before)
    await session.execute(query)


# --- delivery in doubt (bot/delivery.py decides; these only read and write) ---

IN_DOUBT = "in doubt"  # how `delivery_error` starts for a message that may or may not have arrived


async def mark_delivery_started(session: AsyncSession, message: Message, now: datetime, lease_until: datetime) -> bool:
    """Note that a message is about to be handed to its platform, and hold it until `lease_until`.

    False when this worker no longer holds the claim: each claim counts an attempt, so another
    claim since ours (ours expired while the batch was long) shows as a different count. A repeat
    keeps the first start time, so a platform's duplicate window counts from the first call.
    """
    result = await session.execute(update(Message).where(
        Message.id == message.id, Message.delivery_attempts == message.delivery_attempts,
        Message.delivered_at.is_(None), Message.delivery_error.is_(None)).values(
        delivery_started_at=func.coalesce(Message.delivery_started_at, literal(now, UTCDateTime())),
        delivery_claimed_until=lease_until))
    return bool(result.rowcount)


async def record_in_doubt(session: AsyncSession, message_id: int, detail: str) -> bool:
    """Give a message up as in doubt; False when it was delivered or settled meanwhile (another worker)."""
    result = await session.execute(update(Message).where(
        Message.id == message_id, Message.delivered_at.is_(None), Message.delivery_error.is_(None)).values(
        delivery_error=f"{IN_DOUBT}: {detail}", delivery_claimed_until=None))
    return bool(result.rowcount)


async def messages_in_doubt(session: AsyncSession, channel: str | None = None) -> Sequence[Message]:
    """Outbound messages that may or may not have reached their platform, oldest first."""
    query = select(Message).where(Message.direction == "out", Message.delivered_at.is_(None),
                                  Message.delivery_error.startswith(IN_DOUBT))
    if channel is not None:
        query = query.where(Message.channel == channel)
    return (await session.scalars(query.order_by(Message.id))).all()


# --- the customer lifecycle (bot/contacts.py decides; these only read) ---

async def churn_records(session: AsyncSession, limit: int = 50, guide_key: str | None = None) -> Sequence[Any]:
    """Customers lost, newest first (what managers review), optionally only one guide's."""
    from storage.models import ChurnRecord

    query = select(ChurnRecord).order_by(ChurnRecord.at.desc(), ChurnRecord.id.desc()).limit(limit)
    if guide_key is not None:
        query = query.where(ChurnRecord.guide_key == guide_key)
    return (await session.scalars(query)).all()


# --- the scheduler's batch: what the policy needs for many touches at once, in a few set-based queries ---

@dataclass(eq=False)
class TouchRow:
    """What the batch reads of a claimed touch: plain values, no ORM object (a batch loads hundreds)."""

    id: int
    contact_id: int
    enrolment_id: int | None
    journey_id: str
    step_id: str
    idempotency_key: str
    due_at: datetime
    first_due_at: datetime | None
    status: str
    attempts: int
    claimed_by: str | None
    triggered_by: str | None
    occasion: str | None


class Changes:
    """A loaded row that remembers what was set on it since, for `update_rows` to write in one statement."""

    @classmethod
    def loaded(cls, values: Sequence[Any]) -> Self:
        """The row as read (in its fields' order); filled past `__setattr__`, since loading is not a change."""
        row = cls.__new__(cls)
        row.__dict__.update(zip(_field_names(cls), values), changed={})
        return row

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        self.__dict__["changed"][name] = value

    def changes(self) -> dict[str, Any]:
        """{id, name: new value} of what was set, in name order; empty when nothing was."""
        changed: dict[str, Any] = self.__dict__["changed"]
        return {"id": self.__dict__["id"], **{name: changed[name] for name in sorted(changed)}} if changed else {}


@dataclass(eq=False, init=False)  # made by `loaded`
class ContactRow(Changes):
    """The customer's columns the policy, the conditions and the texts read (bot/facts.py `customer_view`)."""

    id: int
    channel: str
    external_id: str
    name: str
    guide_key: str | None
    source: str | None
    tags: list[str]
    interests: list[str]
    birthday: date | None
    timezone: str | None
    opted_out: bool
    churned: bool
    purchased_at: datetime | None
    replies: int
    last_inbound_at: datetime | None
    added_at: datetime
    level: str | None


@dataclass(eq=False, init=False)  # made by `loaded`
class EnrolmentRow(Changes):
    """The enrolment's columns the batch reads and sets."""

    id: int
    status: str
    enrolled_at: datetime
    exited_at: datetime | None
    exit_reason: str | None
    variants: dict[str, str]
    listening_step: str | None
    listening_until: datetime | None
    paused_at: datetime | None


@cache
def _field_names(row: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row))


def _from_json(text: str | None) -> Any:
    """A JSON column read as text: most customers' lists are empty, and a new empty one is cheaper than a parse."""
    if text is None:
        return None
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


_TOUCHES, _CONTACTS, _ENROLMENTS = Touch.__table__, Contact.__table__, Enrolment.__table__
_BATCH_READ = [table.c[name] for table, row in ((_TOUCHES, TouchRow), (_CONTACTS, ContactRow),
                                                  (_ENROLMENTS, EnrolmentRow)) for name in _field_names(row)]
_BATCH_JSON = [n for n, column in enumerate(_BATCH_READ) if isinstance(column.type, JSON)]
_BATCH_COLUMNS = [cast(column, Text) if n in _BATCH_JSON else column for n, column in enumerate(_BATCH_READ)]
_CONTACT_START = len(_field_names(TouchRow))
_ENROLMENT_START = _CONTACT_START + len(_field_names(ContactRow))


async def claimed_touches(session: AsyncSession,
                          ids: Collection[int]) -> list[tuple[TouchRow, ContactRow, EnrolmentRow | None]]:
    """(touch, customer, enrolment or None) of these touches, by id, as plain rows: one object per customer
    and enrolment, as the ORM's identity map would give. On PostgreSQL the touches stay locked until the
    transaction ends, so no other worker can take a claim over between our check and our writes."""
    # Core, not ORM entities: no identity map, no instance state, no ORM result machinery for hundreds of rows
    query = (select(*_BATCH_COLUMNS).join_from(_TOUCHES, _CONTACTS, _CONTACTS.c.id == _TOUCHES.c.contact_id)
             .outerjoin(_ENROLMENTS, _ENROLMENTS.c.id == _TOUCHES.c.enrolment_id)
             .where(ids_in(session, _TOUCHES.c.id, ids)).order_by(_TOUCHES.c.id))
    if _skip_locked(session):
        query = query.with_for_update(of=_TOUCHES)
    contacts: dict[int, ContactRow] = {}
    enrolments: dict[int, EnrolmentRow] = {}
    found: list[tuple[TouchRow, ContactRow, EnrolmentRow | None]] = []
    for row in (await session.execute(query)).all():
        values = list(row)
        for n in _BATCH_JSON:
            values[n] = _from_json(values[n])
        touch = TouchRow(*values[:_CONTACT_START])
        contact = contacts.get(touch.contact_id) or contacts.setdefault(
            touch.contact_id, ContactRow.loaded(values[_CONTACT_START:_ENROLMENT_START]))
        enrolment = None
        if touch.enrolment_id is not None and values[_ENROLMENT_START] is not None:
            enrolment = enrolments.get(touch.enrolment_id) or enrolments.setdefault(
                touch.enrolment_id, EnrolmentRow.loaded(values[_ENROLMENT_START:]))
        found.append((touch, contact, enrolment))
    return found


async def proactive_sends_by_contact(session: AsyncSession, contact_ids: Collection[int],
                                     since: datetime) -> dict[int, list[datetime]]:
    """`proactive_sends_since` for many customers in one query."""
    found: dict[int, list[datetime]] = {}
    rows = await session.execute(select(TouchLog.contact_id, TouchLog.at).where(
        ids_in(session, TouchLog.contact_id, contact_ids), TouchLog.decision == "sent", TouchLog.proactive.is_(True),
        TouchLog.at >= since))
    for contact_id, at in rows.all():
        found.setdefault(contact_id, []).append(at)
    return found


async def due_touches_by_contact(session: AsyncSession, contact_ids: Collection[int],
                                 now: datetime) -> dict[int, list[tuple[int, str, str | None]]]:
    """(touch id, journey_id, triggered_by) of each customer's touches due now and not yet decided; the
    caller leaves out the touch it is deciding (`competing_touches` for many customers)."""
    found: dict[int, list[tuple[int, str, str | None]]] = {}
    rows = await session.execute(select(Touch.contact_id, Touch.id, Touch.journey_id, Touch.triggered_by).where(
        ids_in(session, Touch.contact_id, contact_ids), Touch.status.in_(ACTIVE), Touch.due_at <= now))
    for contact_id, touch_id, journey_id, triggered_by in rows.all():
        found.setdefault(contact_id, []).append((touch_id, journey_id, triggered_by))
    return found


async def touches_by_enrolment(session: AsyncSession, contact_ids: Collection[int],
                               enrolment_ids: Collection[int]) -> dict[int, list[Any]]:
    """(id, step_id, status, finished_at) of every touch of these enrolments (of these customers), oldest first."""
    found: dict[int, list[Any]] = {}
    if not enrolment_ids:
        return found
    # by customer first: touches have no index on enrolment_id, and an enrolment's touches are its customer's
    rows = await session.execute(select(Touch.enrolment_id, Touch.id, Touch.step_id, Touch.status, Touch.finished_at)
                                 .where(ids_in(session, Touch.contact_id, contact_ids),
                                        ids_in(session, Touch.enrolment_id, enrolment_ids)).order_by(Touch.id))
    for enrolment_id, *rest in rows.all():
        found.setdefault(enrolment_id, []).append(tuple(rest))
    return found


_INTEGERS = postgresql.ARRAY(Integer)  # built once, not for every batch query


def ids_in(session: AsyncSession, column: Any, ids: Collection[int]) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL one array parameter (`= ANY`), not one parameter per id."""
    if _skip_locked(session):
        return column == any_(literal(list(ids), _INTEGERS))
    return column.in_(list(ids))


async def add_rows(session: AsyncSession, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Many new rows of one table, no ORM objects (nothing to track, nothing to refresh): PostgreSQL's COPY
    inside the session's transaction, else one executemany. Every row has the same keys."""
    if not rows:
        return
    table = model.__table__
    if not _skip_locked(session):
        await session.execute(table.insert(), rows)
        return
    # COPY knows only the database's defaults: fill in the model's own (e.g. delivery_attempts = 0)
    defaults = {c.name: c.default.arg for c in table.columns
                if c.name not in rows[0] and c.default is not None and c.default.is_scalar}
    columns = [*rows[0], *defaults]
    records = [(*row.values(), *defaults.values()) for row in rows]
    raw = await (await session.connection()).get_raw_connection()
    await raw.driver_connection.copy_records_to_table(table.name, records=records, columns=columns)


async def update_rows(session: AsyncSession, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Set new values on many rows by id (each row: `id` and the same other keys) in one statement on
    PostgreSQL (UPDATE … FROM unnest(arrays)), else one executemany."""
    if not rows:
        return
    table = model.__table__
    names = [name for name in rows[0] if name != "id"]
    if not _skip_locked(session):
        await session.execute(update(table).where(table.c.id == bindparam("_id"))
                              .values({name: bindparam(name) for name in names}),
                              [{"_id": row["id"], **{name: row[name] for name in names}} for row in rows])
        return
    dialect = session.bind.dialect
    params: dict[str, Any] = {"ids": [row["id"] for row in rows]}
    arrays, sets = ["CAST(:ids AS integer[])"], []
    for n, name in enumerate(names):
        column = table.c[name]
        if isinstance(column.type, JSON):  # sent as text, read as json
            params[f"v{n}"] = [None if row[name] is None else json.dumps(row[name]) for row in rows]
            arrays.append(f"CAST(:v{n} AS text[])")
            sets.append(f"{name} = CAST(v.v{n} AS json)")
        else:
            params[f"v{n}"] = [row[name] for row in rows]
            arrays.append(f"CAST(:v{n} AS {column.type.compile(dialect=dialect)}[])")
            sets.append(f"{name} = v.v{n}")
    columns = ", ".join(["id", *(f"v{n}" for n in range(len(names)))])
    await session.execute(text(f"UPDATE {table.name} SET {', '.join(sets)} FROM unnest({', '.join(arrays)})"
                               f" AS v({columns}) WHERE {table.name}.id = v.id"), params)
