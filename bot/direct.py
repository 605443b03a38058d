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
from bot.listening import Listening
from bot.understood import Understood
from intents.normalize import squeeze
from storage import repo
from storage.models import Message

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
        self._opt_out_words = {squeeze(w) for w in opt_out_words}  # 「退\u200b订」「退 订」「ＴＤ」 count too
        self.listening = Listening(contacts.library, contacts.runner)  # journeys that branch on replies

    async def message(self, session: AsyncSession, event: Event, understood: Understood) -> None:
        contact = await self.contacts.first_message(session, event)
        question = store_inbound(session, event, contact.id, "customer")
        decision = understood.decision  # made before this transaction opened
        # written with the INSERT rather than as an UPDATE after it; cleared where it does not apply
        question.tier, question.confidence = decision.tier, decision.confidence
        previous_inbound = contact.last_inbound_at
        contact.replies += 1
        contact.last_inbound_at = event.at
        if squeeze(event.text) in self._opt_out_words:
            _not_decided(question)
            if await self.contacts.opt_out(session, contact, event.at) is not None:
                reply(session, event, OPT_OUT_CONFIRMATION, contact.id)
            return
        enrolments = await repo.live_enrolments(session, contact.id)  # one read for exits and listening steps
        await self.contacts.exit(session, contact, "replied", event.at, enrolments)
        if self.flood is not None and await self.flood.flooding(session, contact, event, previous_inbound):
            _not_decided(question)
            return  # stored above; the guide was told when the flood began
        if is_staff_command(event.text):
            _not_decided(question)
            reply(session, event, STAFF_ONLY, contact.id)
            return
        state = self.handoff.state(contact, event.at)
        if state == "human":  # a guide is talking to the customer: the bot stays out of it
            _not_decided(question)
            await self.handoff.pass_on(session, contact, event.text, event.at)
            return
        intent = understood.intent
        await self.answers.record_llm(session, question, decision, event.at)
        heard = await self.listening.heard(session, contact, event.text, intent.id if intent else None, event.at,
                                           enrolments)
        if heard.hand_off:  # a listening step wants a person to answer this reply
            intent = None
        elif heard.took_reply and intent is None:
            return  # the journey answers it (a branch step, or its end): nobody needs to be asked
        if intent is None and decision.quiet:  # 「好的」「👍」 or nothing at all: no question, nobody to call
            if decision.kind == "ack" and self.answers.ack_reply:
                reply(session, event, self.answers.ack_reply, contact.id, tier=decision.tier,
                      confidence=decision.confidence)
            return
        if intent is not None:  # sure enough, also while a hand-off waits for the guide
            # some intents answer with the customer's own facts (「查积分」: their points), see loyalty.yaml
            answer = await self.contacts.own_answer(session, contact, intent.id, event.at) or intent.answer
            reply(session, event, answer, contact.id, intent=intent.id, tier=decision.tier,
                  confidence=decision.confidence)
            return
        question.handoff = True  # kept as an unanswered question for `siyu faq gaps`
        if state == "handoff":  # the customer was told once already; the guide gets this one too
            await self.handoff.pass_on(session, contact, event.text, event.at)
            return
        reply(session, event, self.answers.handoff_reply, contact.id, handoff=True, tier=decision.tier,
              confidence=decision.confidence)
        await self.handoff.hand_over(session, contact, event.text, event.at)


def _not_decided(question: Message) -> None:
    """The FAQ decision did not handle this message (an opt-out, a flood, a command, a guide's chat)."""
    question.tier = question.confidence = None
