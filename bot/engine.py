"""The engine: turns Events into state changes and queued replies. It never knows a wire format."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.commands import STAFF_COMMANDS, GuideCommands, StaffActor
from bot.config import Settings
from bot.durations import parse_duration
from bot.enrolment import JourneyRunner
from bot.events import ChatType, Event, EventKind, Role
from bot.library import ScriptLibrary
from bot.moderation import GroupModerator
from intents.cascade import Thresholds, Understanding
from intents.catalog import Catalog
from intents.llm import LlmClassifier
from intents.normalize import normalize
from storage import repo
from storage.db import Database
from storage.models import Contact, Message, Staff

log = logging.getLogger(__name__)

OPT_OUT_CONFIRMATION = "已为您退订，之后不会再主动打扰您。如需帮助，随时回复我们即可。"
STAFF_ONLY = "抱歉，这个命令仅供导购使用～有问题直接发消息问我就好。"


def is_staff_command(text: str) -> bool:
    word = text.strip().split(maxsplit=1)[0].lstrip("/").split("@")[0].lower() if text.strip() else ""
    return text.strip().startswith("/") and word in STAFF_COMMANDS


def build_understanding(catalog: Catalog, settings: Settings) -> Understanding:
    """The FAQ cascade as configured; the LLM tier only when a base_url is set."""
    faq, llm_settings = settings.faq, settings.llm
    llm = None
    if llm_settings.base_url:
        llm = LlmClassifier(catalog, llm_settings.base_url, llm_settings.model,
                            os.environ.get(llm_settings.api_key_env, ""), llm_settings.timeout_seconds)
    thresholds = Thresholds(faq.fuzzy_answer, faq.semantic_answer, faq.llm_floor, faq.llm_accept)
    return Understanding(catalog, thresholds, faq.semantic, llm)


class Engine:
    """Handles one Event per transaction: dedupe, remember, decide, queue replies."""

    def __init__(self, db: Database, library: ScriptLibrary, settings: Settings, runner: JourneyRunner,
                 conversation_link: Callable[[str, str], str]) -> None:
        self.db = db
        self.conversation_link = conversation_link  # where a guide opens a conversation (the app knows)
        self.handoff_timeout = parse_duration(settings.faq.handoff_timeout)
        self.library = library
        self.settings = settings
        self.runner = runner
        self.commands = GuideCommands(library, runner, self.exit_journeys, self.handoff_timeout)
        self.moderator = GroupModerator()
        self.work_ready = asyncio.Event()  # set when there may be touches to run or messages to deliver
        self._opt_out_words = {normalize(w) for w in settings.policy.opt_out_words}
        self._understanding: Understanding | None = None
        self._understanding_version = -1

    @property
    def understanding(self) -> Understanding:
        """The current matchers. After an FAQ edit the previous ones keep answering until
        refresh_understanding() has rebuilt them off the event loop."""
        if self._understanding is None:
            self._understanding = build_understanding(self.library.catalog, self.settings)
            self._understanding_version = self.library.version
        return self._understanding

    async def refresh_understanding(self) -> None:
        """Rebuild the matchers after the FAQ changed; embedding a catalog is CPU work, so in a thread."""
        if self._understanding is None or self._understanding_version != self.library.version:
            version = self.library.version
            self._understanding = await asyncio.to_thread(build_understanding, self.library.catalog, self.settings)
            self._understanding_version = version

    async def sync_staff(self) -> None:
        """Make configured staff known in storage under each of their channel identities."""
        async with self.db.session() as session, session.begin():
            for member in self.settings.staff:
                for channel, external_id in member.identities.items():
                    await repo.insert_ignore(session, Staff, {"key": member.id, "channel": channel,
                                                              "external_id": external_id, "name": member.name})

    async def handle(self, event: Event) -> None:
        """Apply one event atomically; a redelivered message id has no second effect."""
        async with self.db.session() as session, session.begin():
            if event.message_id and not await repo.mark_inbound_processed(
                    session, event.channel, event.message_id, event.at):
                log.info("dropping redelivered %s message %s", event.channel, event.message_id)
                return
            await self._dispatch(session, event)
        self.work_ready.set()

    async def _dispatch(self, session: AsyncSession, event: Event) -> None:
        match event.kind:
            case EventKind.CONTACT_ADDED:
                await self._contact_added(session, event)
            case EventKind.CONTACT_REMOVED:
                await self._contact_removed(session, event)
            case EventKind.MESSAGE:
                await self._message(session, event)
            case EventKind.JOINED_GROUP | EventKind.LEFT_GROUP:
                await self._membership(session, event)
            case EventKind.TAG_ADDED:
                contact = await self._contact(session, event)
                if event.tag and event.tag not in (contact.tags or []):
                    contact.tags = sorted({*(contact.tags or []), event.tag})
                    await self._enrol_on(session, contact, "tag_added", event.at, tag=event.tag)
            case EventKind.PURCHASED:
                contact = await self._contact(session, event)
                contact.purchased_at = event.at
                await self.exit_journeys(session, contact, "purchased", event.at)

    # --- contacts -------------------------------------------------------------------------

    async def _contact(self, session: AsyncSession, event: Event) -> Contact:
        contact, _ = await self._upsert_contact(session, event)
        return contact

    async def _upsert_contact(self, session: AsyncSession, event: Event) -> tuple[Contact, bool]:
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        profile = event.profile
        if contact is None:
            contact = Contact(channel=event.channel, external_id=event.sender_id,
                              name=profile.name or event.sender_id, guide_key=self.settings.default_guide,
                              source=profile.source, tags=list(profile.tags), interests=list(profile.interests),
                              profile={}, birthday=profile.birthday, timezone=profile.timezone,
                              opted_out=False, churned=False, replies=0, added_at=event.at)
            if profile.guide_id:
                staff = await repo.staff_by_identity(session, event.channel, profile.guide_id)
                contact.guide_key = staff.key if staff else contact.guide_key
            session.add(contact)
            await session.flush()
            return contact, True
        if profile.name:
            contact.name = profile.name
        if profile.birthday:
            contact.birthday = profile.birthday
        if profile.tags:
            contact.tags = sorted({*(contact.tags or []), *profile.tags})
        if profile.interests:
            contact.interests = sorted({*(contact.interests or []), *profile.interests})
        return contact, False

    async def _contact_added(self, session: AsyncSession, event: Event) -> None:
        contact, created = await self._upsert_contact(session, event)
        if event.profile.source:
            contact.source = event.profile.source
        if not created and contact.churned:
            contact.churned, contact.churned_at, contact.added_at = False, None, event.at
        await self._enrol_on(session, contact, "contact_added", event.at)

    async def _contact_removed(self, session: AsyncSession, event: Event) -> None:
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        if contact is None or contact.churned:
            return
        contact.churned, contact.churned_at = True, event.at
        ended = await self.exit_journeys(session, contact, "churned", event.at)
        await self._notify_guide(session, contact, f"【流失提醒】客户 {contact.name}（#{contact.id}）删除了好友或离开；"
                                                   f"已结束旅程：{', '.join(ended) or '无'}", event.at)

    async def _enrol_on(self, session: AsyncSession, contact: Contact, trigger: str, now: datetime,
                        tag: str | None = None) -> None:
        if contact.opted_out or contact.churned:
            return
        for journey in self.library.journeys.values():
            if journey.trigger.kind == trigger and journey.trigger.tag == tag:
                await self.runner.enrol(session, contact, journey, now)

    async def exit_journeys(self, session: AsyncSession, contact: Contact, reason: str, now: datetime) -> list[str]:
        return await self.runner.exit(session, contact, reason, now, self.library.journeys)

    # --- messages -------------------------------------------------------------------------

    async def _message(self, session: AsyncSession, event: Event) -> None:
        staff = await repo.staff_by_identity(session, event.channel, event.sender_id)
        if staff is not None or event.sender_role is Role.STAFF:
            await self._staff_message(session, event, staff)
        elif event.sender_role is Role.BOT:
            return  # never answer bots, including ourselves
        elif event.chat_type is ChatType.GROUP:
            await self._group_message(session, event)
        else:
            await self._direct_message(session, event)

    def _store_inbound(self, session: AsyncSession, event: Event, contact_id: int | None,
                       role: str) -> Message:
        return repo.add_message(session, channel=event.channel, chat_type=event.chat_type.value,
                         chat_id=event.chat_id if event.chat_type is ChatType.GROUP else event.sender_id,
                         direction="in", sender_role=role, sender_id=event.sender_id, contact_id=contact_id,
                         text=event.text, created_at=event.at, delivered_at=event.at)

    def _reply(self, session: AsyncSession, event: Event, text: str, contact_id: int | None, n: int = 0,
               intent: str | None = None, handoff: bool = False) -> None:
        chat_id = event.chat_id if event.chat_type is ChatType.GROUP else event.sender_id
        key = f"reply:{event.channel}:{event.message_id}:{n}" if event.message_id else None
        repo.add_message(session, channel=event.channel, chat_type=event.chat_type.value, chat_id=chat_id or "",
                         direction="out", sender_role="bot", sender_id="bot", contact_id=contact_id, text=text,
                         idempotency_key=key, intent=intent, handoff=handoff, created_at=event.at)

    async def _direct_message(self, session: AsyncSession, event: Event) -> None:
        contact, created = await self._upsert_contact(session, event)
        if created:
            await self._enrol_on(session, contact, "contact_added", event.at)  # a first message implies an add
        question = self._store_inbound(session, event, contact.id, "customer")
        contact.replies += 1
        contact.last_inbound_at = event.at
        if normalize(event.text) in self._opt_out_words:
            if not contact.opted_out:
                contact.opted_out, contact.opted_out_at = True, event.at
                await self.exit_journeys(session, contact, "opted_out", event.at)
                self._reply(session, event, OPT_OUT_CONFIRMATION, contact.id)
            return
        await self.exit_journeys(session, contact, "replied", event.at)
        if is_staff_command(event.text):
            self._reply(session, event, STAFF_ONLY, contact.id)
            return
        if contact.handoff_until is not None and contact.handoff_until > event.at:
            # a person has this conversation: pass the message on, the bot says nothing
            await self._notify_guide(session, contact, f"【转人工·续】{contact.name}：{event.text}", event.at)
            return
        await self._answer(session, event, contact, question)

    async def _answer(self, session: AsyncSession, event: Event, contact: Contact, question: Message) -> None:
        decision = await self.understanding.decide(event.text)
        if decision.intent is not None:
            intent = self.library.catalog.get(decision.intent)
            if intent is not None:
                self._reply(session, event, intent.answer, contact.id, intent=intent.id)
                return
        question.handoff = True  # kept as an unanswered question for `siyu faq gaps`
        contact.handoff_until = event.at + self.handoff_timeout
        self._reply(session, event, self.library.catalog.handoff_reply, contact.id, handoff=True)
        link = self.conversation_link(contact.channel, contact.external_id)
        await self._notify_guide(session, contact, f"【转人工】{contact.name}（#{contact.id}，{contact.channel}）问："
                                                   f"{event.text}\n会话：{link}\n处理完请发 /release {contact.id}",
                                 event.at)

    async def _group_message(self, session: AsyncSession, event: Event) -> None:
        assert event.chat_id is not None
        group = await repo.group_by_identity(session, event.channel, event.chat_id, event.at)
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        contact_id = contact.id if contact else None
        await repo.set_membership(session, group, event.sender_id, contact_id, "customer", event.at, present=True)
        name = contact.name if contact else event.profile.name or event.sender_id
        punished = await self.moderator.review(session, self.library.guard, event, group, name)
        question = self._store_inbound(session, event, contact_id, "customer")
        if punished:
            return
        quiet = timedelta(seconds=self.settings.faq.staff_quiet_seconds)
        if await repo.staff_spoke_since(session, event.channel, event.chat_id, event.at - quiet):
            return  # a person is handling the group right now
        decision = await self.understanding.decide(event.text)
        intent = self.library.catalog.get(decision.intent) if decision.intent else None
        if intent is not None and (event.mentions_bot or (
                intent.in_groups and decision.confidence >= self.settings.faq.group_answer)):
            self._reply(session, event, intent.answer, contact_id, intent=intent.id)
        elif event.mentions_bot:
            question.handoff = True
            self._reply(session, event, self.library.catalog.handoff_reply, contact_id, handoff=True)

    async def _staff_message(self, session: AsyncSession, event: Event, staff: Staff | None) -> None:
        self._store_inbound(session, event, None, "staff")
        if event.chat_type is ChatType.GROUP or not event.text.strip().startswith("/"):
            return
        actor = StaffActor(staff.key if staff else event.sender_id, event.channel)
        answer = await self.commands.run(session, actor, event.text, event.at)
        self._reply(session, event, answer, None)

    async def _membership(self, session: AsyncSession, event: Event) -> None:
        assert event.chat_id is not None
        group = await repo.group_by_identity(session, event.channel, event.chat_id, event.at)
        joined = event.kind is EventKind.JOINED_GROUP
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        changed = await repo.set_membership(session, group, event.sender_id, contact.id if contact else None,
                                            "customer", event.at, present=joined)
        if joined and changed and contact is not None:
            await self._enrol_on(session, contact, "joined_group", event.at)

    async def _notify_guide(self, session: AsyncSession, contact: Contact, text: str, now: datetime) -> None:
        """Send a note to the customer's guide, on the customer's channel when the guide is there."""
        key = contact.guide_key or self.settings.default_guide
        identities = list(await repo.staff_identities(session, key)) if key else []
        if not identities:
            log.warning("no guide to notify for contact %s: %s", contact.id, text)
            return
        target = next((s for s in identities if s.channel == contact.channel), identities[0])
        repo.add_message(session, channel=target.channel, chat_type=ChatType.DIRECT.value,
                         chat_id=target.external_id, direction="out", sender_role="bot", sender_id="bot",
                         contact_id=contact.id, text=text, created_at=now)
