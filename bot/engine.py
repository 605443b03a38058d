"""The engine: turns Events into state changes and queued replies. It never knows a wire format.

Each event is one transaction: dedupe, then the part that owns it — contacts, a 1v1 chat, a group,
or staff — decides, and whatever it queues is delivered from the outbox afterwards.
"""
from __future__ import annotations

import asyncio
import logging
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.answers import Answers
from bot.commands import GuideCommands, StaffActor
from bot.config import Settings
from bot.contacts import ContactLifecycle
from bot.conversation_log import reply, store_inbound
from bot.direct import DirectConversation
from bot.durations import parse_duration
from bot.enrolment import JourneyRunner
from bot.events import ChatType, Event, EventKind, Role
from bot.flood import FloodWatch
from bot.groups import GroupConversation
from bot.handoff import ConversationLink, HandOff
from bot.inbound import clean_event
from bot.library import ScriptLibrary
from bot.metrics import Metrics
from storage import repo
from storage.db import Database
from storage.models import Staff

log = logging.getLogger(__name__)


class Engine:
    """Handles one Event per transaction; a redelivered message id has no second effect."""

    def __init__(self, db: Database, library: ScriptLibrary, settings: Settings, runner: JourneyRunner,
                 conversation_link: ConversationLink, metrics: Metrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.answers = Answers(library, settings, self.metrics)
        self.handoff = HandOff(settings.default_guide, parse_duration(settings.faq.handoff_timeout),
                               conversation_link, self.metrics)
        self.contacts = ContactLifecycle(library, runner, self.handoff, settings.default_guide)
        self.direct = DirectConversation(self.contacts, self.handoff, self.answers, settings.policy.opt_out_words,
                                         FloodWatch(settings.inbound.flood, self.handoff))
        self.groups = GroupConversation(self.contacts, self.answers, library, settings.faq, self.metrics)
        self.commands = GuideCommands(library, self.contacts, self.handoff, ZoneInfo(settings.policy.timezone))
        self.work_ready = asyncio.Event()  # set when there may be touches to run or messages to deliver

    async def sync_staff(self) -> None:
        """Make storage know exactly the configured staff: config.yaml is the source of truth, so someone
        removed from it is no longer staff anywhere (commands, guard exemption, logins)."""
        configured = {(m.id, channel, external_id): m.name for m in self.settings.staff
                      for channel, external_id in m.identities.items()}
        async with self.db.session() as session, session.begin():
            for row in await repo.all_staff(session):
                if (row.key, row.channel, row.external_id) not in configured:
                    await session.delete(row)
            await session.flush()
            for (key, channel, external_id), name in configured.items():
                await repo.insert_ignore(session, Staff, {"key": key, "channel": channel,
                                                          "external_id": external_id, "name": name})

    async def handle(self, event: Event) -> None:
        """Apply one event atomically, then wake the delivery loop.

        Every channel's events enter here, so this is where their text is cleaned and capped, once.
        """
        cleaned = clean_event(event, self.settings.inbound.max_chars)
        if cleaned is None:
            return
        event = cleaned
        async with self.db.session() as session, session.begin():
            if event.message_id and not await repo.mark_inbound_processed(
                    session, event.channel, event.message_id, event.at):
                log.info("dropping a redelivered %s message", event.channel)
                return
            await self._dispatch(session, event)
        if event.kind is EventKind.MESSAGE:
            self.metrics.inbound.labels(event.channel, event.chat_type.value).inc()
        self.work_ready.set()

    async def _dispatch(self, session: AsyncSession, event: Event) -> None:
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
                await self._message(session, event)

    async def _message(self, session: AsyncSession, event: Event) -> None:
        # staff are the identities config.yaml names, whatever an adapter claims: a claim alone proves nothing
        staff = await repo.staff_by_identity(session, event.channel, event.sender_id)
        if staff is not None:
            await self._staff_message(session, event, staff)
            return
        if event.sender_role is Role.STAFF:
            log.warning("a %s sender claimed to be staff but is not configured under staff:", event.channel)
        if event.sender_role is Role.BOT:
            return  # never answer bots, including ourselves
        if event.chat_type is ChatType.GROUP:
            await self.groups.message(session, event)
        else:
            await self.direct.message(session, event)

    async def _staff_message(self, session: AsyncSession, event: Event, staff: Staff) -> None:
        store_inbound(session, event, None, "staff")
        if event.chat_type is ChatType.GROUP or not event.text.strip().startswith("/"):
            return
        actor = StaffActor(staff.key, event.channel)
        reply(session, event, await self.commands.run(session, actor, event.text, event.at), None)
