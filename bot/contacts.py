"""A customer's life with the brand: added, enrolled in journeys, tagged, purchased, opted out, churned.

The engine's event handlers and the guides' commands both change customers only through here.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channel_codes import apply_channel_code
from bot.channel_rules import reachable_after_removal
from bot.clock import Clock
from bot.conversation_log import note_to_guide
from bot.enrolment import JourneyRunner
from bot.events import Event
from bot.facts import customer_zone
from bot.handoff import HandOff
from bot.library import ScriptLibrary
from bot.loyalty import PointsBook, balance_answer
from storage import repo
from storage.db import Database
from storage.models import BusinessEvent, ChurnRecord, Contact, Enrolment

INVITED_BY = "invite:"  # a source like `invite:<member id or contact id>`: a friend's invitation brought them

log = logging.getLogger(__name__)


def known_timezone(name: str | None) -> str | None:
    """A platform's timezone for the customer, if it is one we can compute with (else the brand's is used)."""
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("ignoring an unknown timezone from a platform")
        return None
    return name


class ContactLifecycle:
    """Creates and updates contacts, and enrols or exits them as their state changes."""

    def __init__(self, library: ScriptLibrary, runner: JourneyRunner, handoff: HandOff,
                 default_guide: str | None) -> None:
        self.library = library
        self.runner = runner
        self.handoff = handoff
        self.default_guide = default_guide

    async def upsert(self, session: AsyncSession, event: Event) -> tuple[Contact, bool]:
        """The contact behind an event, created on first sight; the event's profile fills in what it knows."""
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        profile = event.profile
        if contact is None:
            contact = Contact(channel=event.channel, external_id=event.sender_id,
                              name=profile.name or event.sender_id, guide_key=self.default_guide,
                              source=profile.source, tags=list(profile.tags), interests=list(profile.interests),
                              birthday=profile.birthday, timezone=known_timezone(profile.timezone),
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

    async def added(self, session: AsyncSession, event: Event) -> Contact:
        """The customer added their guide (or came back after leaving): the add-friend journeys start."""
        contact, created = await self.upsert(session, event)
        if event.profile.source:
            contact.source = event.profile.source
            # a 渠道活码's state: its name becomes the source, its tags are applied (bot/channel_codes.py)
            await apply_channel_code(session, contact, event.at, self.add_tag,
                                     spread=created and event.profile.guide_id is None)
        if not created and contact.churned:
            contact.churned, contact.churned_at, contact.added_at = False, None, event.at
            await self._end_win_back(session, contact, event.at)
        await self.enrol_on(session, contact, "contact_added", event.at)
        if created and contact.source and contact.source.startswith(INVITED_BY):
            await self._invited(session, contact, contact.source.removeprefix(INVITED_BY), event.at)
        return contact

    async def _invited(self, session: AsyncSession, friend: Contact, inviter_ref: str, now: datetime) -> None:
        """The friend who invited this new customer earns the invite points, once per friend."""
        inviter = await self.by_member_id(session, inviter_ref) or (
            await session.get(Contact, int(inviter_ref)) if inviter_ref.isdigit() else None)
        program = self.library.loyalty
        if inviter is None or inviter.id == friend.id or program is None:
            return
        await self.earn(session, inviter, program.invite_joined, "invite", f"邀请好友 {friend.name} 加入",
                        f"invite:{friend.id}", now)

    async def first_message(self, session: AsyncSession, event: Event) -> Contact:
        """A customer who writes first has added us, as far as the journeys are concerned."""
        contact, created = await self.upsert(session, event)
        if created:
            await self.enrol_on(session, contact, "contact_added", event.at)
        return contact

    async def removed(self, session: AsyncSession, event: Event) -> None:
        """The customer deleted their guide, left or blocked us (or was deleted): journeys end, a churn record
        is kept for managers, and the guide gets one 流失提醒 with the customer's history.

        Win-back journeys (`trigger: churned`) start only where the platform still permits contact."""
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        if contact is None or contact.churned:
            return
        contact.churned, contact.churned_at = True, event.at
        ended = await self.exit(session, contact, "churned", event.at)
        reachable = reachable_after_removal(contact.channel)
        summary = await self.history_summary(session, contact, event.at)
        session.add(ChurnRecord(contact_id=contact.id, channel=contact.channel, guide_key=contact.guide_key,
                                summary=summary, reachable=reachable, at=event.at))
        win_back = [j for j in self.library.journeys.values() if j.trigger.kind == "churned"]
        if win_back and reachable:
            for journey in win_back:
                await self.runner.enrol(session, contact, journey, event.at)
        after = ("" if not win_back else f"\n挽回旅程：{'、'.join(j.title for j in win_back)} 已开始。" if reachable
                 else "\n平台已不允许再联系该客户，挽回旅程不会发送。")
        text = (f"【流失提醒】客户 {contact.name}（#{contact.id}）删除了好友或离开。\n{summary}\n"
                f"已结束旅程：{', '.join(ended) or '无'}{after}")
        if not await note_to_guide(session, contact.guide_key or self.default_guide, contact.channel, contact.id,
                                   text, event.at):
            log.warning("no guide to tell about churned contact %s", contact.id)

    async def _end_win_back(self, session: AsyncSession, contact: Contact, now: datetime) -> None:
        """A customer who came back needs no more win-back messages."""
        for enrolment in await repo.active_enrolments(session, contact.id):
            journey = self.library.journeys.get(enrolment.journey_id)
            if journey is not None and journey.trigger.kind == "churned":
                enrolment.status, enrolment.exited_at, enrolment.exit_reason = "exited", now, "returned"
                await repo.cancel_touches(session, contact.id, now, "returned", enrolment.id)

    async def history_summary(self, session: AsyncSession, contact: Contact, now: datetime) -> str:
        """What a guide needs to know about a customer in three lines: who, how engaged, what they bought."""
        zone = customer_zone(contact, self.runner.default_timezone)
        added = contact.added_at.astimezone(zone)
        parts = [f"来源：{contact.source or '未知'}；添加于 {added:%Y-%m-%d}（{(now - contact.added_at).days} 天）"]
        last = (f"，最后一次发言 {contact.last_inbound_at.astimezone(zone):%m-%d %H:%M}"
                if contact.last_inbound_at else "")
        parts.append(f"互动：发言 {contact.replies} 次{last}；标签：{'、'.join(contact.tags or []) or '无'}")
        count, spend = (await session.execute(select(func.count(), func.coalesce(func.sum(BusinessEvent.amount), 0.0))
                                              .where(BusinessEvent.contact_id == contact.id,
                                                     BusinessEvent.type == "purchase"))).one()
        bought = f"消费 {count} 笔共 {float(spend):g} 元" if count else "未消费"
        standing = await self.points.standing(session, contact, now)
        if standing is not None:
            bought += f"；积分 {standing.balance}，等级 {standing.level.name}"
        parts.append(bought)
        return "\n".join(parts)

    async def enrol_on(self, session: AsyncSession, contact: Contact, trigger: str, now: datetime,
                       argument: str | None = None) -> None:
        """Enrol the customer in every journey with this trigger (and argument: the tag, level or event name)."""
        if contact.opted_out or contact.churned:
            return
        for journey in self.library.journeys.values():
            if journey.trigger.kind == trigger and journey.trigger.argument == argument:
                await self.runner.enrol(session, contact, journey, now)

    async def exit(self, session: AsyncSession, contact: Contact, reason: str, now: datetime,
                   loaded: Sequence[Enrolment] | None = None) -> list[str]:
        """End the journeys that exit on `reason`; returns their ids (`loaded`: as in JourneyRunner.exit)."""
        return await self.runner.exit(session, contact, reason, now, self.library.journeys, loaded)

    async def opt_out(self, session: AsyncSession, contact: Contact, now: datetime) -> list[str] | None:
        """Unsubscribe: every journey ends. None when the customer had already opted out."""
        if contact.opted_out:
            return None
        contact.opted_out, contact.opted_out_at = True, now
        return await self.exit(session, contact, "opted_out", now)

    async def purchased(self, session: AsyncSession, contact: Contact, now: datetime) -> list[str]:
        """A purchase: journeys that exit on `purchased` end, and those triggered by it start."""
        contact.purchased_at = now
        ended = await self.exit(session, contact, "purchased", now)
        await self.enrol_on(session, contact, "purchased", now)
        return ended

    # --- points and levels (bot/loyalty.py keeps the ledger) ---

    @property
    def points(self) -> PointsBook:
        return PointsBook(self.library.loyalty)

    async def earn(self, session: AsyncSession, contact: Contact, points: int, reason: str, detail: str, ref: str,
                   now: datetime, at: datetime | None = None) -> bool:
        """Book points for a reason (once per `ref`), then promote the customer if they reached a level.

        `at` is when the cause happened (an imported order's time: its points expire from then)."""
        if not await self.points.add(session, contact, points, reason, detail, ref, at or now):
            return False
        await self.check_level(session, contact, now)
        return True

    async def check_level(self, session: AsyncSession, contact: Contact, now: datetime) -> None:
        reached = await self.points.level_due(session, contact, now)
        if reached is not None:
            await self.set_level(session, contact, reached.name, now)

    async def set_level(self, session: AsyncSession, contact: Contact, level: str, now: datetime) -> bool:
        """Record a level; moving up starts the `level_up:<level>` journeys. False when nothing changed."""
        program = self.library.loyalty
        current = contact.level or (program.levels[0].name if program else None)
        if level == current:
            return False
        up = program is None or program.levels.index(program.level(level)) > program.levels.index(
            program.level(current))
        contact.level = level
        if up:
            await self.enrol_on(session, contact, "level_up", now, argument=level)
        return True

    async def own_answer(self, session: AsyncSession, contact: Contact, intent_id: str, now: datetime) -> str | None:
        """The answer to an FAQ intent that is about the customer themselves, or None for the FAQ's own answer.

        loyalty.yaml's `balance_intent` (「查积分」) answers with their balance, level, expiring points
        and the next level's threshold."""
        program = self.library.loyalty
        if program is None or intent_id != program.balance_intent:
            return None
        standing = await self.points.standing(session, contact, now)
        assert standing is not None
        return balance_answer(standing, program, customer_zone(contact, self.runner.default_timezone))

    async def group_interaction(self, session: AsyncSession, contact: Contact, text: str, ref: str,
                                now: datetime) -> bool:
        """A meaningful group message earns points, up to the daily cap (so chatter cannot farm them)."""
        program = self.library.loyalty
        if program is None or len(text.strip()) < program.group_min_chars or program.group_interaction <= 0:
            return False
        zone = customer_zone(contact, self.runner.default_timezone)
        today = await self.points.group_points_today(session, contact.id, now, zone)
        points = min(program.group_interaction, program.group_daily_cap - today)
        if points <= 0:
            return False
        return await self.earn(session, contact, points, "group", "群互动", ref, now)

    async def by_member_id(self, session: AsyncSession, member_id: str) -> Contact | None:
        """The customer with the brand's member id (the one still with us first, then the newest)."""
        return await session.scalar(select(Contact).where(Contact.member_id == member_id)
                                    .order_by(Contact.churned, Contact.id.desc()).limit(1))

    # --- the dormant segment ---

    async def sweep_dormant(self, session: AsyncSession, now: datetime, silent_for: timedelta) -> list[int]:
        """Enrol customers silent for `silent_for` in the `trigger: dormant` journeys; the contact ids enrolled.

        Each customer enters each dormant journey once (its enrolment row remembers), within the touch
        policy like any journey."""
        journeys = [j for j in self.library.journeys.values() if j.trigger.kind == "dormant"]
        if not journeys:
            return []
        since = now - silent_for
        enrolled: list[int] = []
        for journey in journeys:
            already = select(Enrolment.contact_id).where(Enrolment.journey_id == journey.id)
            quiet = (await session.scalars(select(Contact).where(
                Contact.churned.is_(False), Contact.opted_out.is_(False), Contact.id.not_in(already),
                or_(Contact.last_inbound_at < since, (Contact.last_inbound_at.is_(None)) & (Contact.added_at < since)))
                .order_by(Contact.id).limit(500))).all()
            for contact in quiet:
                if await self.runner.enrol(session, contact, journey, now) is not None:
                    enrolled.append(contact.id)
        return enrolled

    async def add_tag(self, session: AsyncSession, contact: Contact, tag: str, now: datetime) -> bool:
        """Tag the customer and start the journeys triggered by that tag; False when it was already there."""
        if tag in (contact.tags or []):
            return False
        contact.tags = sorted({*(contact.tags or []), tag})
        await self.enrol_on(session, contact, "tag_added", now, argument=tag)
        return True

    async def remove_tag(self, session: AsyncSession, contact: Contact, tag: str) -> bool:
        """Take a tag off; False when the customer did not have it. Journeys it started go on."""
        if tag not in (contact.tags or []):
            return False
        contact.tags = [t for t in contact.tags if t != tag]
        return True


class DormantSweep:
    """Runs `sweep_dormant` at most once per `every` from the serve loop (each run is one transaction)."""

    def __init__(self, db: Database, contacts: ContactLifecycle, clock: Clock, silent_for: timedelta,
                 every: timedelta = timedelta(hours=1)) -> None:
        self.db = db
        self.contacts = contacts
        self.clock = clock
        self.silent_for = silent_for
        self.every = every
        self._last: datetime | None = None

    async def run(self) -> list[int]:
        now = self.clock.now()
        if self._last is not None and now - self._last < self.every:
            return []
        self._last = now
        if not any(j.trigger.kind == "dormant" for j in self.contacts.library.journeys.values()):
            return []
        async with self.db.session() as session, session.begin():
            return await self.contacts.sweep_dormant(session, now, self.silent_for)
