"""Per-customer flood control in 1v1 chats.

Counted from stored messages, not an in-memory counter, so several processes sharing a database agree.
A flood is noticed once: the guide gets one note, every message is still stored, and the bot neither
answers nor hands off for that customer until the flood stops.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import FloodSettings
from bot.durations import parse_duration, spoken_duration
from bot.events import Event
from bot.handoff import HandOff
from storage import repo
from storage.models import Contact

FLOOD_NOTE = "【刷屏提醒】"


def _flood_key(contact: Contact) -> str:
    return f"flood:{contact.id}"  # when this customer's last flooding message came in


class FloodWatch:
    """Decides whether a customer's message is part of a flood, and tells the guide when one starts."""

    def __init__(self, settings: FloodSettings, handoff: HandOff) -> None:
        self.limit = settings.messages
        self.window = parse_duration(settings.window)
        self.handoff = handoff

    async def flooding(self, session: AsyncSession, contact: Contact, event: Event,
                       previous_inbound: datetime | None) -> bool:
        """True while the customer sends more than the limit within the window (this message included,
        so it must already be stored). The first flooding message after a calm window tells the guide.

        `previous_inbound`: when the customer's message before this one came in (None: this is the first)."""
        since = event.at - self.window
        if self.limit >= 1 and (previous_inbound is None or previous_inbound <= since):
            return False  # nothing else within the window: most messages need no count
        latest = await repo.recent_inbound_times(session, event.channel, event.sender_id, self.limit + 1)
        if sum(1 for at in latest if at > since) <= self.limit:
            return False
        key = _flood_key(contact)
        last = await repo.get_value(session, key)
        if last is None or datetime.fromisoformat(last) <= since:  # a new flood, not the one going on
            await self.handoff.notify_guide(session, contact, self._note(contact), event.at)
        await repo.set_value(session, key, event.at.isoformat(), event.at)
        return True

    def _note(self, contact: Contact) -> str:
        link = self.handoff.conversation_link(contact.channel, contact.external_id, contact.id)
        return (f"{FLOOD_NOTE}{contact.name}（#{contact.id}，{contact.channel}）{spoken_duration(self.window)}内发来超过 "
                f"{self.limit} 条消息。机器人先不回复、不转人工，等对方停下再继续；消息都已保存，请查看会话：{link}")

