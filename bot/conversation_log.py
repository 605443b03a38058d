"""Writing a conversation: what came in, and the replies queued in the outbox for delivery."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.events import ChatType, Event
from storage import repo
from storage.models import Message


def chat_of(event: Event) -> str:
    """The conversation an event belongs to: the group, or the person in a 1v1 chat."""
    return (event.chat_id or "") if event.chat_type is ChatType.GROUP else event.sender_id


def store_inbound(session: AsyncSession, event: Event, contact_id: int | None, role: str) -> Message:
    return repo.add_message(session, channel=event.channel, chat_type=event.chat_type.value, chat_id=chat_of(event),
                            direction="in", sender_role=role, sender_id=event.sender_id, contact_id=contact_id,
                            text=event.text, created_at=event.at, delivered_at=event.at)


def reply(session: AsyncSession, event: Event, text: str, contact_id: int | None, n: int = 0,
          intent: str | None = None, handoff: bool = False, tier: str | None = None,
          confidence: float | None = None) -> None:
    """Queue the bot's answer to `event`; keyed on the inbound message so a replay queues nothing new."""
    key = f"reply:{event.channel}:{event.message_id}:{n}" if event.message_id else None
    repo.add_message(session, channel=event.channel, chat_type=event.chat_type.value, chat_id=chat_of(event),
                     direction="out", sender_role="bot", sender_id="bot", contact_id=contact_id, text=text,
                     idempotency_key=key, intent=intent, handoff=handoff, tier=tier, confidence=confidence,
                     created_at=event.at)


def note_to(session: AsyncSession, channel: str, chat_id: str, contact_id: int | None, text: str,
            now: datetime) -> None:
    """Queue a message from the bot to a person in a 1v1 chat (a guide's note)."""
    repo.add_message(session, channel=channel, chat_type=ChatType.DIRECT.value, chat_id=chat_id, direction="out",
                     sender_role="bot", sender_id="bot", contact_id=contact_id, text=text, created_at=now)


async def note_to_guide(session: AsyncSession, guide_key: str | None, channel: str, contact_id: int | None,
                        text: str, now: datetime) -> bool:
    """Queue a note to a guide, on `channel` when the guide is there; False when there is no guide to tell."""
    identities = list(await repo.staff_identities(session, guide_key)) if guide_key else []
    if not identities:
        return False
    target = next((s for s in identities if s.channel == channel), identities[0])
    note_to(session, target.channel, target.external_id, contact_id, text, now)
    return True
