"""`Event` and `Action`: the only language spoken between adapters and the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class EventKind(StrEnum):
    MESSAGE = "message"
    CONTACT_ADDED = "contact_added"
    CONTACT_REMOVED = "contact_removed"
    JOINED_GROUP = "joined_group"
    LEFT_GROUP = "left_group"
    TAG_ADDED = "tag_added"
    PURCHASED = "purchased"


class ChatType(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


class Role(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    BOT = "bot"


@dataclass(frozen=True)
class Address:
    """Where a message goes on one channel: a 1v1 chat with a person or a group."""

    channel: str
    chat_type: ChatType
    chat_id: str


@dataclass(frozen=True)
class Profile:
    """What an adapter knows about the person behind an event (all optional)."""

    name: str | None = None
    source: str | None = None
    birthday: date | None = None
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    interests: tuple[str, ...] = ()
    guide_id: str | None = None  # the staff member's platform id, when the platform says whose customer it is


@dataclass(frozen=True)
class Event:
    """Something that happened on a platform, translated by an adapter.

    `sender_id` is the platform's id of the person; `chat_id` is the group for group events.
    `message_id` is the platform's id, used to drop redeliveries.
    """

    kind: EventKind
    channel: str
    sender_id: str
    at: datetime
    chat_type: ChatType = ChatType.DIRECT
    chat_id: str | None = None
    text: str = ""
    message_id: str | None = None
    sender_role: Role = Role.CUSTOMER
    mentions_bot: bool = False
    profile: Profile = field(default_factory=Profile)
    tag: str | None = None
    content_type: str = "text"  # text | image | qr_code | mini_program | business_card | link …
    removed_by: str | None = None  # LEFT_GROUP: the platform id of the person who took the member out


class ActionKind(StrEnum):
    SAY = "say"
    DELETE = "delete"  # remove the member's message `target_ref`
    MUTE = "mute"      # stop `target_id` from posting until `until`
    UNMUTE = "unmute"  # let `target_id` post again (staff overturned the strike that muted them)
    REMOVE = "remove"  # take `target_id` out of the group
    TAG = "tag"        # write tag `text` onto customer `target_id` on the platform


@dataclass(frozen=True)
class Action:
    """Something the engine wants a platform to do. `ref` identifies it for idempotent delivery."""

    kind: ActionKind
    address: Address
    text: str
    ref: str
    at: datetime
    target_id: str | None = None
    target_ref: str | None = None
    until: datetime | None = None
    sender_id: str | None = None  # the guide a platform should send as (WeCom assisted sending)
    from_guide: bool = False  # a guide's own words (a console reply): the customer sees the guide, not the bot
