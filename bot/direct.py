"""A customer's 1v1 message: remembered, then opt-out, flood control, hand-off or an FAQ answer."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.answers import Answers
from bot.commands import is_staff_command
from bot.contacts import ContactLifecycle
from bot.conversation_log import reply, store_inbound
from bot.events import Event
from bot.flood import FloodWatch
from bot.handoff import HandOff
from intents.normalize import normalize

OPT_OUT_CONFIRMATION = "已为您退订，之后不会再主动打扰您。如需帮助，随时回复我们即可。"
STAFF_ONLY = "抱歉，这个命令仅供导购使用～有问题直接发消息问我就好。"


class DirectConversation:
    """What the bot does with a customer's message in a 1v1 chat."""

    def __init__(self, contacts: ContactLifecycle, handoff: HandOff, answers: Answers,
                 opt_out_words: tuple[str, ...], flood: FloodWatch | None = None) -> None:
        self.contacts = contacts
        self.handoff = handoff
        self.answers = answers
        self.flood = flood
        self._opt_out_words = {normalize(w) for w in opt_out_words}

    async def message(self, session: AsyncSession, event: Event) -> None:
        contact = await self.contacts.first_message(session, event)
        question = store_inbound(session, event, contact.id, "customer")
        contact.replies += 1
        contact.last_inbound_at = event.at
        if normalize(event.text) in self._opt_out_words:
            if await self.contacts.opt_out(session, contact, event.at) is not None:
                reply(session, event, OPT_OUT_CONFIRMATION, contact.id)
            return
        await self.contacts.exit(session, contact, "replied", event.at)
        if self.flood is not None and await self.flood.flooding(session, contact, event):
            return  # stored above; the guide was told when the flood began
        if is_staff_command(event.text):
            reply(session, event, STAFF_ONLY, contact.id)
            return
        if self.handoff.active(contact, event.at):
            await self.handoff.pass_on(session, contact, event.text, event.at)
            return
        # FAQ questions are short, and embedding cost grows with length (seconds for 2,000 characters,
        # while this transaction holds the database): the matchers read the beginning only
        intent, _ = await self.answers.decide(event.text)
        if intent is not None:
            reply(session, event, intent.answer, contact.id, intent=intent.id)
            return
        question.handoff = True  # kept as an unanswered question for `siyu faq gaps`
        reply(session, event, self.answers.handoff_reply, contact.id, handoff=True)
        await self.handoff.hand_over(session, contact, event.text, event.at)
