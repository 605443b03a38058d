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
from bot.groups import GroupConversation
from bot.handoff import ConversationLink, HandOff
from bot.library import ScriptLibrary
from storage import repo
from storage.db import Database
from storage.models import Staff

log = logging.getLogger(__name__)


class Engine:
    """Handles one Event per transaction; a redelivered message id has no second effect."""

    def __init__(self, db: Database, library: ScriptLibrary, settings: Settings, runner: JourneyRunner,
                 conversation_link: ConversationLink) -> None:
        self.db = db
        self.settings = settings
        self.answers = Answers(library, settings)
        self.handoff = HandOff(settings.default_guide, parse_duration(settings.faq.handoff_timeout),
                               conversation_link)
        self.contacts = ContactLifecycle(library, runner, self.handoff, settings.default_guide)
        self.direct = DirectConversation(self.contacts, self.handoff, self.answers, settings.policy.opt_out_words)
        self.groups = GroupConversation(self.contacts, self.answers, library, settings.faq)
        self.commands = GuideCommands(library, self.contacts, self.handoff, ZoneInfo(settings.policy.timezone))
        self.work_ready = asyncio.Event()  # set when there may be touches to run or messages to deliver

    async def sync_staff(self) -> None:
        """Make configured staff known in storage under each of their channel identities."""
        async with self.db.session() as session, session.begin():
            for member in self.settings.staff:
                for channel, external_id in member.identities.items():
                    await repo.insert_ignore(session, Staff, {"key": member.id, "channel": channel,
                                                              "external_id": external_id, "name": member.name})

    async def handle(self, event: Event) -> None:
        """Apply one event atomically, then wake the delivery loop."""
        async with self.db.session() as session, session.begin():
            if event.message_id and not await repo.mark_inbound_processed(
                    session, event.channel, event.message_id, event.at):
                log.info("dropping a redelivered %s message", event.channel)
                return
            await self._dispatch(session, event)
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
        staff = await repo.staff_by_identity(session, event.channel, event.sender_id)
        if staff is not None or event.sender_role is Role.STAFF:
            await self._staff_message(session, event, staff)
        elif event.sender_role is Role.BOT:
            return  # never answer bots, including ourselves
        elif event.chat_type is ChatType.GROUP:
            await self.groups.message(session, event)
        else:
            await self.direct.message(session, event)

    async def _staff_message(self, session: AsyncSession, event: Event, staff: Staff | None) -> None:
        store_inbound(session, event, None, "staff")
        if event.chat_type is ChatType.GROUP or not event.text.strip().startswith("/"):
            return
        actor = StaffActor(staff.key if staff else event.sender_id, event.channel)
        reply(session, event, await self.commands.run(session, actor, event.text, event.at), None)
