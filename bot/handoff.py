"""Hand-off: when a person has a customer's conversation, and the notes that tell the guide."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation_log import note_to_guide
from bot.metrics import Metrics
from storage.models import Contact

log = logging.getLogger(__name__)
ConversationLink = Callable[[str, str], str]  # channel, chat id → where a guide opens the conversation


class HandOff:
    """Takes a chat from the bot to the customer's guide and back; the bot stays quiet meanwhile."""

    def __init__(self, default_guide: str | None, timeout: timedelta, conversation_link: ConversationLink,
                 metrics: Metrics | None = None) -> None:
        self.default_guide = default_guide
        self.timeout = timeout
        self.conversation_link = conversation_link
        self.metrics = metrics or Metrics()

    @staticmethod
    def active(contact: Contact, now: datetime) -> bool:
        return contact.handoff_until is not None and contact.handoff_until > now

    def take_over(self, contact: Contact, now: datetime) -> datetime:
        """A person has this chat until the returned time (or a release)."""
        contact.handoff_until = now + self.timeout
        return contact.handoff_until

    @staticmethod
    def release(contact: Contact) -> None:
        contact.handoff_until = None

    async def hand_over(self, session: AsyncSession, contact: Contact, question: str, now: datetime) -> None:
        """The bot cannot answer: a person takes the chat, and the guide gets the question and a link."""
        self.take_over(contact, now)
        self.metrics.handoffs.labels(contact.channel).inc()
        link = self.conversation_link(contact.channel, contact.external_id)
        await self.notify_guide(session, contact, f"【转人工】{contact.name}（#{contact.id}，{contact.channel}）问："
                                                  f"{question}\n会话：{link}\n处理完请发 /release {contact.id}", now)

    async def pass_on(self, session: AsyncSession, contact: Contact, text: str, now: datetime) -> None:
        """A message in a chat a person has: the guide gets it, the bot says nothing."""
        await self.notify_guide(session, contact, f"【转人工·续】{contact.name}：{text}", now)

    async def notify_guide(self, session: AsyncSession, contact: Contact, text: str, now: datetime) -> None:
        """Send a note to the customer's guide, on the customer's channel when the guide is there."""
        if not await note_to_guide(session, contact.guide_key or self.default_guide, contact.channel, contact.id,
                                   text, now):
            log.warning("no guide to notify for contact %s", contact.id)
