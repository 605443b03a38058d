"""What scripts may know about a customer, computed from storage in one place."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from storage.models import Contact


def customer_zone(contact: Contact, default: str) -> ZoneInfo:
    return ZoneInfo(contact.timezone or default)


def customer_view(contact: Contact, now: datetime) -> dict[str, Any]:
    """The `customer` seen by templates and `when:` conditions (see bot.journey.CUSTOMER_FIELDS)."""
    return {
        "id": contact.id,
        "name": contact.name or "亲",
        "tags": list(contact.tags or []),
        "interests": list(contact.interests or []),
        "source": contact.source,
        "birthday": contact.birthday,
        "timezone": contact.timezone,
        "replies": contact.replies,
        "days_since_added": (now - contact.added_at).days,
        "purchased": contact.purchased_at is not None,
        "channel": contact.channel,
    }
