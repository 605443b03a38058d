"""Business events from the brand's own systems: purchases, tags, profile changes and custom events.

The shape integrations rely on (`POST /api/events`, `siyu events import FILE.jsonl`):

    {"event_id": "evt-1", "type": "purchase", "customer": {"channel": "webchat", "id": "王女士"},
     "at": "2026-11-23T10:00:00+08:00", "data": {"order_id": "A1", "amount": 199.0}}

`customer` may instead be `{"member_id": "..."}`; `at` is optional (default: now). Each event is
applied once: its `event_id` is stored in the same transaction as its effects, so a replay changes
nothing. A bad event is refused with one sentence naming the field.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.contacts import ContactLifecycle
from bot.loyalty import NotEnoughPoints
from storage import repo
from storage.db import Database
from storage.models import BusinessEvent, Contact

CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TYPES = "purchase, tag, untag, profile, redeem or custom:<name>"


class EventRejected(ValueError):
    """A business event that cannot be applied; the message is one sentence naming the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field or message.split(" ", 1)[0]


class Outcome(StrEnum):
    ACCEPTED = "accepted"   # new: applied now (HTTP 202)
    REPLAYED = "replayed"   # seen before: nothing changed (HTTP 200)


# --- the shape ---

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerRef(_Strict):
    """Who the event is about: a channel id, or the brand's own member id."""

    channel: str | None = Field(None, min_length=1, max_length=32)
    id: str | None = Field(None, min_length=1, max_length=128)
    member_id: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_way(self) -> "CustomerRef":
        if self.member_id is None and (self.channel is None or self.id is None):
            raise ValueError("needs {\"channel\": …, \"id\": …} or {\"member_id\": …}")
        return self


class PurchaseData(_Strict):
    order_id: str = Field(min_length=1, max_length=128)
    amount: float = Field(ge=0)
    items: list[Any] = []

    @field_validator("amount")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or value > 10_000_000:
            raise ValueError("must be an amount in yuan, e.g. 199.0")
        return value


class TagData(_Strict):
    tag: str = Field(min_length=1, max_length=64)


class ProfileData(_Strict):
    birthday: date | None = None
    interests: list[str] | None = None
    level: str | None = Field(None, min_length=1, max_length=32)
    member_id: str | None = Field(None, min_length=1, max_length=128)
    name: str | None = Field(None, min_length=1, max_length=128)


class RedeemData(_Strict):
    points: int = Field(gt=0)
    note: str = ""


class EventIn(_Strict):
    """One business event as integrations send it."""

    event_id: str = Field(min_length=1, max_length=191)
    type: str
    customer: CustomerRef
    at: AwareDatetime | None = None
    data: dict[str, Any] = {}

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value in ("purchase", "tag", "untag", "profile", "redeem"):
            return value
        if value.startswith("custom:") and CUSTOM_NAME.match(value.removeprefix("custom:")):
            return value
        raise ValueError(f"unknown type {value!r} — use {TYPES} (a name in lower-case letters, digits and _)")


DATA_MODELS: dict[str, type[_Strict]] = {"purchase": PurchaseData, "tag": TagData, "untag": TagData,
                                         "profile": ProfileData, "redeem": RedeemData}
HINTS = {
    "event_id": "give every event a unique id, e.g. \"evt-1\"",
    "customer": "e.g. {\"channel\": \"webchat\", \"id\": \"王女士\"} or {\"member_id\": \"M001\"}",
    "at": "an ISO time with its offset, e.g. \"2026-11-23T10:00:00+08:00\"",
    "data.order_id": "the order's id in your system, e.g. \"A1\"",
    "data.amount": "the order's amount in yuan, e.g. 199.0",
    "data.tag": "the tag's name, e.g. \"vip\"",
    "data.birthday": "a date like \"1995-05-20\"",
    "data.points": "how many points to redeem, e.g. 100",
}


@dataclass(frozen=True)
class ParsedEvent:
    """A valid event: its envelope and its type's data."""

    envelope: EventIn
    data: BaseModel | None  # None for custom events, whose data is the integration's own

    @property
    def type(self) -> str:
        return self.envelope.type


def _sentence(error: Mapping[str, Any], prefix: tuple[Any, ...] = ()) -> str:
    loc = [str(p) for p in (*prefix, *error["loc"]) if not str(p).startswith("function-")]
    field = ".".join(loc) or "the event"
    kind = error["type"]
    if kind == "missing":
        what = "is missing"
    elif kind == "extra_forbidden":
        what = "is not a known field"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        what = message[:1].lower() + message[1:]
        if kind not in ("value_error",):
            what = f"{what}, got {json.dumps(error.get('input'), ensure_ascii=False, default=str)[:40]}"
    hint = HINTS.get(field) or HINTS.get(field.split(".")[0])
    return f"{field} {what}" + (f" — {hint}" if hint else "")


def parse_event(raw: Any) -> ParsedEvent:
    """Validate one event; EventRejected names the first field that is wrong."""
    if not isinstance(raw, Mapping):
        raise EventRejected("the event must be a JSON object like {\"event_id\": …, \"type\": …, \"customer\": …}")
    try:
        envelope = EventIn.model_validate(raw)
    except ValidationError as exc:
        raise EventRejected(_sentence(exc.errors()[0])) from None
    model = DATA_MODELS.get(envelope.type)
    if model is None:
        return ParsedEvent(envelope, None)
    try:
        return ParsedEvent(envelope, model.model_validate(envelope.data))
    except ValidationError as exc:
        raise EventRejected(_sentence(exc.errors()[0], ("data",))) from None


# --- applying ---

class BusinessEvents:
    """Applies business events to customers through the same lifecycle the chat channels use."""

    def __init__(self, db: Database, contacts: ContactLifecycle, clock: Clock,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.contacts = contacts
        self.clock = clock
        self.wake = wake  # the scheduler: what an event enrolled may be due now

    async def receive(self, raw: Any, source: str = "api") -> Outcome:
        """Validate and apply one event in one transaction; a replayed `event_id` has no effect.

        EventRejected (nothing stored) for a bad event or a customer we do not know."""
        event = parse_event(raw)
        now = self.clock.now()
        at = event.envelope.at or now
        async with self.db.session() as session, session.begin():
            contact = await self._customer(session, event.envelope)
            amount = event.data.amount if isinstance(event.data, PurchaseData) else None
            fresh = await repo.insert_ignore(session, BusinessEvent, {
                "event_id": event.envelope.event_id, "type": event.type, "contact_id": contact.id,
                "data": event.envelope.data, "amount": amount, "source": source, "at": at, "received_at": now})
            if not fresh:
                return Outcome.REPLAYED
            await self._apply(session, contact, event, at, now)
        self.wake()
        return Outcome.ACCEPTED

    async def _customer(self, session: AsyncSession, envelope: EventIn) -> Contact:
        ref = envelope.customer
        if ref.member_id is not None:
            contact = await self.contacts.by_member_id(session, ref.member_id)
            if contact is None:
                raise EventRejected(f"customer.member_id {ref.member_id!r} is not a known member — send a profile "
                                    "event with data.member_id for a chat customer first, or use channel and id")
            return contact
        assert ref.channel is not None and ref.id is not None
        contact = await repo.contact_by_identity(session, ref.channel, ref.id)
        if contact is None:
            raise EventRejected(f"customer {{channel: {ref.channel}, id: …}} is not a customer we know — "
                                "customers become known when they add a guide or write to us")
        return contact

    async def _apply(self, session: AsyncSession, contact: Contact, event: ParsedEvent, at: datetime,
                     now: datetime) -> None:
        """Journeys start and end `now` (an imported order from last month must not date a journey back);
        the points ledger keeps the event's own time `at`."""
        data = event.data
        if isinstance(data, PurchaseData):
            await self.contacts.purchased(session, contact, now)
            program = self.contacts.library.loyalty
            if program is not None:
                await self.contacts.earn(session, contact, program.purchase_points(data.amount), "purchase",
                                         f"订单 {data.order_id} 消费 {data.amount:g} 元", f"order:{data.order_id}",
                                         now, at)
            await self.contacts.check_level(session, contact, now)  # spend alone may reach a level
        elif isinstance(data, TagData) and event.type == "tag":
            await self.contacts.add_tag(session, contact, data.tag, now)
        elif isinstance(data, TagData):
            await self.contacts.remove_tag(session, contact, data.tag)
        elif isinstance(data, ProfileData):
            await self._profile(session, contact, data, now)
        elif isinstance(data, RedeemData):
            try:
                await self.contacts.points.redeem(session, contact, data.points,
                                                  f"redeem:{event.envelope.event_id}", now)
            except NotEnoughPoints as exc:
                raise EventRejected(f"data.points {data.points} is more than the customer's balance — {exc}") from None
        else:
            await self.contacts.enrol_on(session, contact, "custom", now, argument=event.type.removeprefix("custom:"))

    async def _profile(self, session: AsyncSession, contact: Contact, data: ProfileData, at: datetime) -> None:
        if data.birthday is not None:
            contact.birthday = data.birthday
        if data.interests is not None:
            contact.interests = sorted({i.strip() for i in data.interests if i.strip()})
        if data.name is not None:
            contact.name = data.name
        if data.member_id is not None:
            contact.member_id = data.member_id
        if data.level is not None:
            program = self.contacts.library.loyalty
            if program is not None and data.level not in [lv.name for lv in program.levels]:
                names = ", ".join(lv.name for lv in program.levels)
                raise EventRejected(f"data.level {data.level!r} is not a level of loyalty.yaml — use one of {names}")
            await self.contacts.set_level(session, contact, data.level, at)


@dataclass(frozen=True)
class ImportReport:
    """What `siyu events import` did: counts, and one `FILE:LINE: what — fix` per refused line."""

    accepted: int
    replayed: int
    problems: list[str]


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line


async def import_events(events: BusinessEvents, path: Path, display: str | None = None) -> ImportReport:
    """Replay a JSONL export, one event per line, with the same idempotency as the API."""
    shown = display or str(path)
    accepted = replayed = 0
    problems: list[str] = []
    for number, line in read_lines(path):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{shown}:{number}: not JSON ({exc.msg} at column {exc.colno}) — "
                            "write one JSON object per line")
            continue
        try:
            outcome = await events.receive(raw, source="import")
        except EventRejected as exc:
            problems.append(f"{shown}:{number}: {exc}")
            continue
        if outcome is Outcome.ACCEPTED:
            accepted += 1
        else:
            replayed += 1
    return ImportReport(accepted, replayed, problems)
