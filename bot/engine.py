"""The engine: turns Events into state changes and queued replies. It never knows a wire format.

Each event is one transaction, taken in its conversation's turn: dedupe, then the part that owns it —
contacts, a 1v1 chat, a group, or staff — decides, and whatever it queues is in the outbox when the
transaction commits. The FAQ decision (model work) is made before the transaction opens; the guard's LLM
second opinion on a held group message is asked after it commits, and acted on in a second short one.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.answers import Answers
from bot.commands import GuideCommands, StaffActor
from bot.config import Settings
from bot.contacts import ContactLifecycle
from bot.conversation_log import reply, store_inbound
from bot.delivery import Publisher
from bot.direct import DirectConversation
from bot.durations import parse_duration
from bot.enrolment import JourneyRunner
from bot.events import ChatType, Event, EventKind, Role
from bot.flood import FloodWatch
from bot.groups import GroupConversation
from bot.guard_llm import spam_judge
from bot.handoff import ConversationLink, HandOff
from bot.inbound import clean_event
from bot.library import ScriptLibrary
from bot.metrics import Metrics
from bot.moderation import SecondOpinion
from bot.plugin import StaffIdentity
from bot.staff_directory import StaffDirectory
from bot.turns import ConversationTurns, advisory_key, conversation_key
from bot.understood import Understood
from intents.normalize import without_mentions
from storage import repo
from storage.db import Database, queued_outbound, touches_scheduled_for
from storage.models import Message, Staff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What one committed event left to do: its outbound messages, and customers it gave touches to."""

    queued: list[Message]             # in the order queued; those claimed for the caller are its to deliver
    scheduled_for: frozenset[int] = frozenset()  # contacts whose touches it scheduled (a greeting, a /sop)

    @staticmethod
    def nothing() -> "Applied":
        return Applied([])


class Engine:
    """Handles one Event per transaction; a redelivered message id has no second effect."""

    def __init__(self, db: Database, library: ScriptLibrary, settings: Settings, runner: JourneyRunner,
                 conversation_link: ConversationLink, metrics: Metrics | None = None,
                 publisher: Publisher | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.answers = Answers(library, settings, self.metrics)
        self.handoff = HandOff(settings.default_guide, parse_duration(settings.faq.handoff_timeout),
                               conversation_link, self.metrics)
        self.contacts = ContactLifecycle(library, runner, self.handoff, settings.default_guide)
        self.direct = DirectConversation(self.contacts, self.handoff, self.answers, settings.policy.opt_out_words,
                                         FloodWatch(settings.inbound.flood, self.handoff))
        llm = settings.llm
        self.groups = GroupConversation(self.contacts, self.answers, library, settings.faq, self.metrics,
                                        spam_judge(llm.base_url, llm.model, llm.api_key_env, llm.timeout_seconds),
                                        publisher)
        self.commands = GuideCommands(library, self.contacts, self.handoff, ZoneInfo(settings.policy.timezone))
        self.staff = StaffDirectory(settings.staff)
        self.work_ready = asyncio.Event()  # set when there may be touches to run or messages to deliver
        self.turns = ConversationTurns()

    async def sync_staff(self) -> None:
        """Make storage know exactly the configured staff: config.yaml is the source of truth, so someone
        removed from it is no longer staff anywhere (commands, guard exemption, logins)."""
        configured = {(s.key, channel, s.platform_id): s.name for (channel, _), s in self.staff.identities()}
        async with self.db.session() as session, session.begin():
            for row in await repo.all_staff(session):
                if (row.key, row.channel, row.external_id) not in configured:
                    await session.delete(row)
            await session.flush()
            for (key, channel, external_id), name in configured.items():
                await repo.insert_ignore(session, Staff, {"key": key, "channel": channel,
                                                          "external_id": external_id, "name": name})

    async def handle(self, event: Event) -> None:
        """Apply one event in its conversation's turn; the serve loop delivers what it queued."""
        async with self.turns.turn(conversation_key(event)):
            await self.apply(event)

    async def apply(self, event: Event, deliver_here: Collection[str] = (),
                    claimed_until: datetime | None = None) -> Applied:
        """Apply one event atomically; the caller holds the conversation's turn.

        Every channel's events enter here, so this is where their text is cleaned and capped, once.
        Outbound messages on `deliver_here` channels are claimed until `claimed_until` in the same
        transaction, for the caller to deliver right after the commit without another round trip; should
        it die first, the claim runs out and the outbox delivers them.
        """
        cleaned = clean_event(event, self.settings.inbound.max_chars)
        if cleaned is None:
            return Applied.nothing()
        event = cleaned
        understood = await self._understand(event)
        async with self.db.session() as session, session.begin():
            if self.db.dialect == "postgresql":  # one event per conversation at a time, across processes
                await session.execute(select(func.pg_advisory_xact_lock(advisory_key(conversation_key(event)))))
            if event.message_id and not await repo.mark_inbound_processed(
                    session, event.channel, event.message_id, event.at):
                log.info("dropping a redelivered %s message", event.channel)
                return Applied.nothing()
            opinion = await self._dispatch(session, event, understood)
            queued, unclaimed = self._claim(session, deliver_here, claimed_until)
            scheduled = touches_scheduled_for(session)
            unclaimed = unclaimed or bool(scheduled)
        if event.kind is EventKind.MESSAGE:
            self.metrics.inbound.labels(event.channel, event.chat_type.value).inc()
        if opinion is not None:  # the held message is committed and the database free while the model thinks
            later, unclaimed_later = await self._second_opinion(event, opinion, deliver_here, claimed_until)
            queued, unclaimed = queued + later, unclaimed or unclaimed_later
        if unclaimed:
            self.work_ready.set()
        return Applied(queued, scheduled)

    @staticmethod
    def _claim(session: AsyncSession, deliver_here: Collection[str],
               claimed_until: datetime | None) -> tuple[list[Message], bool]:
        """The session's queued outbound messages, those on `deliver_here` claimed for the caller; and whether
        any was left for the outbox."""
        queued = queued_outbound(session)
        unclaimed = False
        for message in queued:
            if claimed_until is not None and message.channel in deliver_here:
                message.delivery_claimed_until, message.delivery_attempts = claimed_until, 1
            else:
                unclaimed = True
        return queued, unclaimed

    async def _second_opinion(self, event: Event, opinion: SecondOpinion, deliver_here: Collection[str],
                              claimed_until: datetime | None) -> tuple[list[Message], bool]:
        """Ask the LLM about a held message with no transaction open, then act on the answer in a short one
        (spam: deleted and punished; ordinary: released; no answer: it stays held for staff)."""
        spam = await self.groups.moderator.ask(opinion)
        if spam is None:
            return [], False
        try:
            async with self.db.session() as session, session.begin():
                if self.db.dialect == "postgresql":  # strikes are counted in the conversation's turn, as above
                    await session.execute(select(func.pg_advisory_xact_lock(advisory_key(conversation_key(event)))))
                await self.groups.settle(session, opinion, spam)
                return self._claim(session, deliver_here, claimed_until)
        except Exception as exc:  # noqa: BLE001 — the event itself is committed; its replies must still go out
            log.error("guard: could not apply the LLM's answer (%s); the message stays held for staff",
                      type(exc).__name__)
            return [], False

    async def _understand(self, event: Event) -> Understood | None:
        """The FAQ decision for a customer's message, made before the transaction (None: not a question)."""
        if event.kind is not EventKind.MESSAGE or event.sender_role is Role.BOT:
            return None
        question = without_mentions(event.text) if event.mentions_bot else event.text
        return Understood(*await self.answers.decide(question))

    async def _dispatch(self, session: AsyncSession, event: Event,
                        understood: Understood | None) -> SecondOpinion | None:
        """Hand the event to the part that owns it; a held group message for the LLM to judge comes back."""
        match event.kind:
            case EventKind.CONTACT_ADDED:
                await self.contacts.added(session, event)
            case EventKind.CONTACT_REMOVED:
                await self.contacts.removed(session, event)
            case EventKind.JOINED_GROUP | EventKind.LEFT_GROUP:
                await self.groups.membership(session, event)
            case EventKind.TAG_ADDED if event.tag:
                contact, _ = await self.contacts.upsert(session, event)
                await self.contacts.add_tag(session, contact, event.tag, event.at)
            case EventKind.PURCHASED:
                contact, _ = await self.contacts.upsert(session, event)
                await self.contacts.purchased(session, contact, event.at)
            case EventKind.MESSAGE:
                return await self._message(session, event, understood)
        return None

    async def _message(self, session: AsyncSession, event: Event,
                       understood: Understood | None) -> SecondOpinion | None:
        # staff are the identities config.yaml names, whatever an adapter claims: a claim alone proves nothing
        staff = self.staff.lookup(event.channel, event.sender_id)
        if staff is not None:
            await self._staff_message(session, event, staff)
            return None
        if event.sender_role is Role.STAFF:
            log.warning("a %s sender claimed to be staff but is not configured under staff:", event.channel)
        if event.sender_role is Role.BOT:
            return None  # never answer bots, including ourselves
        assert understood is not None  # made for every message not from a bot
        if event.chat_type is ChatType.GROUP:
            return await self.groups.message(session, event, understood)
        await self.direct.message(session, event, understood)
        return None

    async def _staff_message(self, session: AsyncSession, event: Event, staff: StaffIdentity) -> None:
        store_inbound(session, event, None, "staff")
        if event.chat_type is ChatType.GROUP or not event.text.strip().startswith("/"):
            return
        actor = StaffActor(staff.key, event.channel)
        reply(session, event, await self.commands.run(session, actor, event.text, event.at), None)
