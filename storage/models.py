"""Tables. Everything that must survive a restart lives here."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Staff(Base):
    """A sales guide (导购) or other staff member, known on one channel."""

    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_staff_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))  # config id, same person across channels
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))


class Contact(Base):
    """A customer, as seen on one channel."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_contacts_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), default="")
    guide_key: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    interests: Mapped[list[str]] = mapped_column(JSON, default=list)
    birthday: Mapped[date | None] = mapped_column(Date)
    timezone: Mapped[str | None] = mapped_column(String(64))
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    churned: Mapped[bool] = mapped_column(Boolean, default=False)
    churned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purchased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replies: Mapped[int] = mapped_column(Integer, default=0)
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handoff_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a person has the chat until then
    handoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the hand-off began (waiting since)
    handoff_guide: Mapped[str | None] = mapped_column(String(64))  # the staff id who joined; None: waiting
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    member_id: Mapped[str | None] = mapped_column(String(128), index=True)  # the brand's own membership id
    level: Mapped[str | None] = mapped_column(String(32))  # loyalty level reached; None: the first level


class Group(Base):
    """A customer group (社群)."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_groups_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Membership(Base):
    """Who is in which group, and since when."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("group_id", "member_id", name="uq_memberships_member"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    member_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    role: Mapped[str] = mapped_column(String(16), default="customer")
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Enrolment(Base):
    """A customer's place in one journey. `generation` grows when a churned customer comes back."""

    __tablename__ = "enrolments"
    __table_args__ = (UniqueConstraint("contact_id", "journey_id", name="uq_enrolments_journey"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    journey_id: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | exited | completed
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    exited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str | None] = mapped_column(String(32))
    variants: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    listening_step: Mapped[str | None] = mapped_column(String(64))  # its on_reply waits for the next reply …
    listening_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # … until then
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a guide took the chat over then


class Touch(Base):
    """The outbox of proactive and scheduled messages: one row per step due for one customer."""

    __tablename__ = "touches"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_touches_idempotency_key"),
        Index("ix_touches_due", "status", "due_at"),
        Index("ix_touches_contact", "contact_id", "status", "due_at"),
        Index("ix_touches_enrolment", "enrolment_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolments.id", ondelete="CASCADE"))
    journey_id: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # before any deferral; for `expire`
    status: Mapped[str] = mapped_column(String(16), default="pending")  # storage.touch_status is its lifecycle
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims since the last decision (poison guard)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variant: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    triggered_by: Mapped[str | None] = mapped_column(String(64))
    occasion: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TouchLog(Base):
    """Every decision about a touch: sent, deferred, skipped, dropped, with its reason."""

    __tablename__ = "touch_log"
    __table_args__ = (Index("ix_touch_log_contact", "contact_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id", ondelete="SET NULL"))
    journey_id: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    proactive: Mapped[bool] = mapped_column(Boolean, default=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProcessedInbound(Base):
    """Inbound platform message ids already handled, so a redelivery has no second effect."""

    __tablename__ = "processed_inbound"

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(191), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    """Conversation history, both directions; outbound rows double as the delivery queue."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_messages_idempotency_key"),
        Index("ix_messages_conversation", "channel", "chat_type", "chat_id", "id"),
        Index("ix_messages_undelivered", "direction", "delivered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    chat_type: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(128))
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    sender_role: Mapped[str] = mapped_column(String(16))  # customer | staff | bot
    sender_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    # what the platform should do: say (default) | delete | mute | remove; moderation targets a member
    action: Mapped[str] = mapped_column(String(16), default="say", server_default="say")
    target_id: Mapped[str | None] = mapped_column(String(128))
    target_ref: Mapped[str | None] = mapped_column(String(191))
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    intent: Mapped[str | None] = mapped_column(String(64))
    handoff: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[str | None] = mapped_column(String(16))  # which FAQ matcher decided: fuzzy | semantic | llm | handoff
    confidence: Mapped[float | None] = mapped_column(Float)  # its score, 0–1
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivery_claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # set just before the platform call: a crash after it leaves the message "in doubt" (see bot/delivery.py)
    delivery_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivery_error: Mapped[str | None] = mapped_column(Text)  # set when delivery was given up
    platform_ref: Mapped[str | None] = mapped_column(String(191))  # e.g. an assisted send's msgid
    awaiting_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # waiting for a guide to confirm
    mentions_bot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # asked the bot


class GuardEvent(Base):
    """One decision of the group guard: which rule, which strike, what it did, and why."""

    __tablename__ = "guard_events"
    __table_args__ = (Index("ix_guard_events_member", "channel", "group_id", "member_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    group_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[str] = mapped_column(String(128))
    message_ref: Mapped[str | None] = mapped_column(String(191))
    rule: Mapped[str] = mapped_column(String(128))  # comma-separated rule codes
    strike: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # acted (deleted/punished) | held (waiting for staff, nothing public) | spam (staff confirmed) |
    # not_spam (staff overturned it: the strike no longer counts)
    status: Mapped[str] = mapped_column(String(16), default="acted", server_default="acted")
    score: Mapped[float | None] = mapped_column(Float)  # the classifier's score, when it ran
    message_row: Mapped[int | None] = mapped_column(Integer)  # messages.id of the inbound message judged
    reviewed_by: Mapped[str | None] = mapped_column(String(64))  # staff config id
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GuardSample(Base):
    """A message staff decided on: spam (a removal, "mark spam") or normal ("not spam", a restore).

    The guard compares new messages with these at once, and `siyu guard train` learns from them.
    """

    __tablename__ = "guard_samples"
    __table_args__ = (Index("ix_guard_samples_spam", "spam", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    spam: Mapped[bool] = mapped_column(Boolean)
    staff_key: Mapped[str] = mapped_column(String(64))
    guard_event_id: Mapped[int | None] = mapped_column(ForeignKey("guard_events.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboxItem(Base):
    """A platform callback stored before it is processed: answered at once, handled durably, once."""

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("channel", "dedupe_key", name="uq_inbox_dedupe"),
                      Index("ix_inbox_pending", "processed_at", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(191))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class KeyValue(Base):
    """Small durable adapter state, e.g. the 微信客服 sync cursor."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(191), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffCredential(Base):
    """A staff member's password or one of their API tokens, only ever stored hashed.

    `staff_key` is the config id (`staff[].id`), the same person on every channel. Passwords are
    argon2 hashes (slow on purpose); tokens are long random strings, so a SHA-256 digest is enough
    and lets a request find its token by digest.
    """

    __tablename__ = "staff_credentials"
    __table_args__ = (UniqueConstraint("secret_hash", name="uq_staff_credentials_secret_hash"),
                      Index("ix_staff_credentials_staff", "staff_key", "kind"))

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # password | token
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BusinessEvent(Base):
    """A business event (purchase, tag, profile, custom) from the brand's systems, kept once by its id."""

    __tablename__ = "business_events"
    __table_args__ = (UniqueConstraint("event_id", name="uq_business_events_event_id"),
                      Index("ix_business_events_contact", "contact_id", "type"))

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(191))
    type: Mapped[str] = mapped_column(String(80))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    data: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    amount: Mapped[float | None] = mapped_column(Float)  # a purchase's amount in yuan: what spend sums
    source: Mapped[str] = mapped_column(String(16))  # api | import
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PointsEntry(Base):
    """One change of a customer's points (积分) with its reason; the balance is the sum of these rows.

    `ref` makes each change happen once (an order, an invite, a day's group points, an expired lot).
    An earning row's `expires_at` is when what is left of it expires, first in first out.
    """

    __tablename__ = "points_ledger"
    __table_args__ = (UniqueConstraint("ref", name="uq_points_ledger_ref"),
                      Index("ix_points_ledger_contact", "contact_id", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    delta: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))  # purchase | invite | group | redeem | expired | adjust
    detail: Mapped[str] = mapped_column(Text, default="")
    ref: Mapped[str] = mapped_column(String(191))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChurnRecord(Base):
    """A customer lost (流失): who, whose customer, what we knew of them, and whether win-back may try."""

    __tablename__ = "churn_records"
    __table_args__ = (Index("ix_churn_records_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    guide_key: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    reachable: Mapped[bool] = mapped_column(Boolean)  # the platform still lets us message them
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Transfer(Base):
    """One customer handed from one guide to another (在职/离职继承), and what the platform made of it.

    `status`: waiting (the platform has not settled it) | accepted | refused | failed.
    """

    __tablename__ = "transfers"
    __table_args__ = (Index("ix_transfers_waiting", "status", "next_check_at"),
                      Index("ix_transfers_contact", "contact_id", "requested_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    from_guide: Mapped[str] = mapped_column(String(64))
    to_guide: Mapped[str] = mapped_column(String(64))
    departed: Mapped[bool] = mapped_column(Boolean, default=False)  # 离职继承: the old guide has left
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    checks: Mapped[int] = mapped_column(Integer, default=0)  # times the platform was asked about it
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChannelCode(Base):
    """A 渠道活码: one acquisition channel, its guides, the tags its customers get, and where it lives."""

    __tablename__ = "channel_codes"
    __table_args__ = (UniqueConstraint("name", name="uq_channel_codes_name"),
                      UniqueConstraint("state", name="uq_channel_codes_state"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(64))  # what the platform hands back with each add
    channel: Mapped[str] = mapped_column(String(32))
    guides: Mapped[list[str]] = mapped_column(JSON, default=list)  # staff config ids
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    config_id: Mapped[str | None] = mapped_column(String(128))  # WeCom's 「联系我」 config id
    link: Mapped[str] = mapped_column(Text, default="")  # the QR code's image URL or the start link
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LlmCall(Base):
    """Each time the LLM tier was asked: how long it took, what it picked, and what a guide later said."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_message_id", "message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))  # the question
    model: Mapped[str] = mapped_column(String(128))
    latency_ms: Mapped[float] = mapped_column(Float)
    picked: Mapped[str | None] = mapped_column(String(64))  # a candidate intent, or None (none fits / failed)
    confidence: Mapped[float | None] = mapped_column(Float)
    failure: Mapped[str | None] = mapped_column(String(255))  # timed out, bad JSON, … (None: it answered)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)  # the bot answered with its pick
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verdict: Mapped[str | None] = mapped_column(String(16))  # confirmed | corrected, once a guide taught
    guide_intent: Mapped[str | None] = mapped_column(String(64))  # what the guide said it was (None: no FAQ)
    judged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
