"""Customer groups: who is in them, the guard on every message, and answers when asked or very sure."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.answers import Answers
from bot.config import FaqSettings
from bot.contacts import ContactLifecycle
from bot.conversation_log import reply, store_inbound
from bot.delivery import Publisher
from bot.events import Event, EventKind
from bot.guard_feedback import learn_from_removal
from bot.library import ScriptLibrary
from bot.metrics import Metrics
from bot.guard_llm import SpamJudge
from bot.moderation import GroupModerator, SecondOpinion
from bot.understood import Understood
from storage import repo


class GroupConversation:
    """What the bot does with group traffic: membership, moderation, and restrained answers."""

    def __init__(self, contacts: ContactLifecycle, answers: Answers, library: ScriptLibrary,
                 faq: FaqSettings, metrics: Metrics | None = None, judge: SpamJudge | None = None,
                 publisher: Publisher | None = None) -> None:
        self.contacts = contacts
        self.answers = answers
        self.library = library
        self.faq = faq
        self.moderator = GroupModerator(metrics, judge)
        self.publisher = publisher or Publisher()  # where siyu is the group's platform (web chat), it shows it

    async def membership(self, session: AsyncSession, event: Event) -> None:
        assert event.chat_id is not None
        group = await repo.group_by_identity(session, event.channel, event.chat_id, event.at)
        joined = event.kind is EventKind.JOINED_GROUP
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        changed = await repo.set_membership(session, group, event.sender_id, contact.id if contact else None,
                                            "customer", event.at, present=joined)
        if joined and changed and contact is not None:
            await self.contacts.enrol_on(session, contact, "joined_group", event.at)
        if not joined and event.removed_by:
            await self._removed_by_staff(session, event)

    async def _removed_by_staff(self, session: AsyncSession, event: Event) -> None:
        """A person with the rights to (the group's owner or an admin) took the member out: what they said
        last becomes spam samples for the guard, as a staff decision."""
        assert event.chat_id is not None and event.removed_by is not None
        rules = self.library.guard
        if event.sender_id in rules.exempt or await repo.staff_by_identity(session, event.channel, event.sender_id):
            return  # a colleague or an exempt account leaving says nothing about what spam looks like
        staff = await repo.staff_by_identity(session, event.channel, event.removed_by)
        who = staff.key if staff is not None else f"{event.channel}:{event.removed_by}"[:64]
        await learn_from_removal(session, event.channel, event.chat_id, event.sender_id, who, event.at,
                                 rules.classifier.similar_min_length, rules.evasions)

    async def message(self, session: AsyncSession, event: Event, understood: Understood) -> SecondOpinion | None:
        """Store, guard and maybe answer one group message. A held message the LLM should judge comes back,
        for the caller to ask once this transaction has committed (`second_opinion`)."""
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
        # members connected to other processes see it when this commits, before what the guard does about it
        await self.publisher.publish_message(session, event, question.id)
        review = await self.moderator.review(session, self.library.guard, event, group, name, question)
        if review.punished:
            return None
        if contact is not None and event.message_id:  # a meaningful message earns points (capped per day)
            await self.contacts.group_interaction(session, contact, event.text,
                                                  f"group:{event.channel}:{event.message_id}", event.at)
        quiet = timedelta(seconds=self.faq.staff_quiet_seconds)
        if await repo.staff_spoke_since(session, event.channel, event.chat_id, event.at - quiet):
            return review.second_opinion  # a person is handling the group right now
        intent, decision = understood.intent, understood.decision  # decided before the transaction
        await self.answers.record_llm(session, question, decision, event.at)
        if intent is not None and (event.mentions_bot or (  # small talk and declines only when asked
                intent.in_groups and intent.kind == "faq" and decision.confidence >= self.faq.group_answer)):
            reply(session, event, intent.answer, contact_id, intent=intent.id)
        elif event.mentions_bot and not decision.quiet:  # 「@bot 好的」 asks nothing of anyone
            question.handoff = True
            reply(session, event, self.answers.handoff_reply, contact_id, handoff=True)
        return review.second_opinion

    async def settle(self, session: AsyncSession, opinion: SecondOpinion, spam: bool | None) -> None:
        """Act on the LLM's answer, in a transaction of its own."""
        await self.moderator.settle(session, self.library.guard, opinion, spam)
