"""Hand-off: when a person has a customer's conversation, and the notes that tell the guide.

A conversation is in one of three states:

- `bot`: the bot answers;
- `handoff`: the bot could not answer and a guide has been asked; meanwhile the bot still answers
  the questions it is sure of and passes the rest on;
- `human`: a guide has joined (replied, or taken the chat over); the bot stays quiet.

Both hand-off states end on release or after `faq.handoff_timeout` without a guide's word.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation_log import note_to, note_to_guide
from bot.enrolment import pause_journeys, resume_journeys
from bot.metrics import Metrics
from storage import repo
from storage.models import Contact

log = logging.getLogger(__name__)
ConversationLink = Callable[[str, str, int], str]  # channel, chat id, contact id → where a guide opens the chat
ConversationState = Literal["bot", "handoff", "human"]
GUIDE_JOINED = "导购{name}已加入对话，接下来由{name}为您服务～"
GUIDE_LEFT = "导购{name}已离开对话，有问题可以继续问我哦～"


class HandOff:
    """Takes a chat from the bot to the customer's guide and back."""

    def __init__(self, default_guide: str | None, timeout: timedelta, conversation_link: ConversationLink,
                 metrics: Metrics | None = None) -> None:
        self.default_guide = default_guide
        self.timeout = timeout
        self.conversation_link = conversation_link
        self.metrics = metrics or Metrics()

    @staticmethod
    def active(contact: Contact, now: datetime) -> bool:
        """A person has (or is being asked to take) this chat."""
        return contact.handoff_until is not None and contact.handoff_until > now

    @classmethod
    def state(cls, contact: Contact, now: datetime) -> ConversationState:
        if not cls.active(contact, now):
            return "bot"
        return "handoff" if contact.handoff_guide is None else "human"

    @classmethod
    def waiting(cls, contact: Contact, now: datetime) -> bool:
        """Handed off, and no guide has joined yet: the bot may still answer what it is sure of."""
        return cls.state(contact, now) == "handoff"

    async def join(self, session: AsyncSession, contact: Contact, guide_key: str, now: datetime) -> datetime:
        """A guide takes the chat (a reply or a takeover): the bot is quiet until the returned time or a
        release, and the customer is told the first time a person joins."""
        joined_before = self.state(contact, now) == "human"
        contact.handoff_until = now + self.timeout
        contact.handoff_at = contact.handoff_at or now
        contact.handoff_guide = guide_key
        await pause_journeys(session, contact, now, fresh=not joined_before)  # resumed on release
        if not joined_before:
            note_to(session, contact.channel, contact.external_id, contact.id,
                    GUIDE_JOINED.format(name=await guide_name(session, guide_key)), now)
        return contact.handoff_until

    async def release(self, session: AsyncSession, contact: Contact, now: datetime) -> None:
        """The bot answers again; a customer a guide was talking to is told the guide has left."""
        if self.state(contact, now) == "human" and contact.handoff_guide:
            note_to(session, contact.channel, contact.external_id, contact.id,
                    GUIDE_LEFT.format(name=await guide_name(session, contact.handoff_guide)), now)
        await resume_journeys(session, contact, min(now, contact.handoff_until or now), now)
        contact.handoff_until = contact.handoff_at = contact.handoff_guide = None

    async def hand_over(self, session: AsyncSession, contact: Contact, question: str, now: datetime) -> None:
        """The bot cannot answer: the guide gets the question and a link; the chat waits for them."""
        contact.handoff_until = now + self.timeout
        contact.handoff_at, contact.handoff_guide = now, None
        self.metrics.handoffs.labels(contact.channel).inc()
        link = self.conversation_link(contact.channel, contact.external_id, contact.id)
        await self.notify_guide(session, contact, f"【转人工】{contact.name}（#{contact.id}，{contact.channel}）问："
                                                  f"{question}\n会话：{link}\n处理完请发 /release {contact.id}", now)

    async def pass_on(self, session: AsyncSession, contact: Contact, text: str, now: datetime) -> None:
        """A message the bot leaves to the person who has the chat: the guide gets it."""
        await self.notify_guide(session, contact, f"【转人工·续】{contact.name}：{text}", now)

    async def notify_guide(self, session: AsyncSession, contact: Contact, text: str, now: datetime) -> None:
        """Send a note to the customer's guide, on the customer's channel when the guide is there."""
        if not await note_to_guide(session, contact.guide_key or self.default_guide, contact.channel, contact.id,
                                   text, now):
            log.warning("no guide to notify for contact %s", contact.id)


async def guide_name(session: AsyncSession, guide_key: str) -> str:
    """The guide's display name as config.yaml gives it (their id when storage does not know them)."""
    identities = await repo.staff_identities(session, guide_key)
    return identities[0].name if identities else guide_key
