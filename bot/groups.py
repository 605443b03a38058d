"""Customer groups: who is in them, the guard on every message, and answers when asked or very sure."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.answers import Answers
from bot.config import FaqSettings
from bot.contacts import ContactLifecycle
from bot.conversation_log import reply, store_inbound
from bot.events import Event, EventKind
from bot.library import ScriptLibrary
from bot.metrics import Metrics
from bot.guard_llm import SpamJudge
from bot.moderation import GroupModerator
from bot.understood import Understood
from storage import repo


class GroupConversation:
    """What the bot does with group traffic: membership, moderation, and restrained answers."""

    def __init__(self, contacts: ContactLifecycle, answers: Answers, library: ScriptLibrary,
                 faq: FaqSettings, metrics: Metrics | None = None, judge: SpamJudge | None = None) -> None:
        self.contacts = contacts
        self.answers = answers
        self.library = library
        self.faq = faq
        self.moderator = GroupModerator(metrics, judge)

    async def membership(self, session: AsyncSession, event: Event) -> None:
        assert event.chat_id is not None
        group = await repo.group_by_identity(session, event.channel, event.chat_id, event.at)
        joined = event.kind is EventKind.JOINED_GROUP
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        changed = await repo.set_membership(session, group, event.sender_id, contact.id if contact else None,
                                            "customer", event.at, present=joined)
        if joined and changed and contact is not None:
            await self.contacts.enrol_on(session, contact, "joined_group", event.at)

    async def message(self, session: AsyncSession, event: Event, understood: Understood) -> None:
        assert event.chat_id is not None
        group = await repo.group_by_identity(session, event.channel, event.chat_id, event.at)
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        contact_id = contact.id if contact else None
        await repo.set_membership(session, group, event.sender_id, contact_id, "customer", event.at, present=True)
        name = contact.name if contact else event.profile.name or event.sender_id
        # stored first, so moderation notices follow the message they are about in the chat's history
        question = store_inbound(session, event, contact_id, "customer")
        question.mentions_bot = event.mentions_bot  # the flood rule never counts questions to the bot
        question.platform_ref = event.message_id  # what a delete targets: history leaves deleted messages out
        await session.flush()
        punished = await self.moderator.review(session, self.library.guard, event, group, name, question)
        if punished:
            return
        if contact is not None and event.message_id:  # a meaningful message earns points (capped per day)
            await self.contacts.group_interaction(session, contact, event.text,
                                                  f"group:{event.channel}:{event.message_id}", event.at)
        quiet = timedelta(seconds=self.faq.staff_quiet_seconds)
        if await repo.staff_spoke_since(session, event.channel, event.chat_id, event.at - quiet):
            return  # a person is handling the group right now
        intent, decision = understood.intent, understood.decision  # decided before the transaction
        await self.answers.record_llm(session, question, decision, event.at)
        if intent is not None and (event.mentions_bot or (  # small talk and declines only when asked
                intent.in_groups and intent.kind == "faq" and decision.confidence >= self.faq.group_answer)):
            reply(session, event, intent.answer, contact_id, intent=intent.id)
        elif event.mentions_bot and not decision.quiet:  # 「@bot 好的」 asks nothing of anyone
            question.handoff = True
            reply(session, event, self.answers.handoff_reply, contact_id, handoff=True)
