"""What scripts may know about a customer, computed from storage in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # checking scripts needs the field names, not the database
    from storage.models import Contact


@dataclass(frozen=True)
class CustomerView:
    """The `customer` of templates and `when:` conditions: its field names are all scripts may read."""

    id: int
    name: str
    tags: list[str]
    interests: list[str]
    source: str | None
    birthday: date | None
    timezone: str | None
    replies: int
    days_since_added: int
    purchased: bool
    channel: str
    points: int  # the points balance (bot/loyalty.py: derived from the ledger)
    level: str   # the loyalty level's name ("" without a loyalty.yaml)
    days_silent: int  # days since the customer last wrote (or was added): the dormant segment


CUSTOMER_FIELDS = frozenset(f.name for f in fields(CustomerView))

# who `siyu check` renders every text for, so a typo'd variable fails there, not at 3 a.m.
SAMPLE_CUSTOMER: dict[str, Any] = asdict(CustomerView(
    id=1, name="林小姐", tags=["high_value"], interests=["skincare"], source="门店扫码",
    birthday=date(1995, 5, 20), timezone="Asia/Shanghai", replies=1, days_since_added=3,
    purchased=False, channel="webchat", points=120, level="银卡", days_silent=2,
))


def customer_zone(contact: Contact, default: str) -> ZoneInfo:
    return ZoneInfo(contact.timezone or default)


def customer_view(contact: Contact, now: datetime, points: int = 0, level: str = "") -> dict[str, Any]:
    """The `customer` seen by templates and `when:` conditions, as plain values.

    `points` and `level` come from the ledger (bot/loyalty.py `PointsBook.facts`), which needs a query."""
    # a shallow copy is enough (its lists are fresh); `asdict` deep-copied every field, per touch sent
    return dict(vars(CustomerView(
        id=contact.id,
        name=contact.name or "亲",
        tags=list(contact.tags or []),
        interests=list(contact.interests or []),
        source=contact.source,
        birthday=contact.birthday,
        timezone=contact.timezone,
        replies=contact.replies,
        days_since_added=(now - contact.added_at).days,
        purchased=contact.purchased_at is not None,
        channel=contact.channel,
        points=points,
        level=level or contact.level or "",
        days_silent=(now - (contact.last_inbound_at or contact.added_at)).days,
    )))
