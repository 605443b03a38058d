"""A customer's life with the brand: added, enrolled in journeys, tagged, purchased, opted out, churned.

The engine's event handlers and the guides' commands both change customers only through here.
"""
from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from bot.enrolment import JourneyRunner
from bot.events import Event
from bot.handoff import HandOff
from bot.library import ScriptLibrary
from storage import repo
from storage.models import Contact

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
        if not created and contact.churned:
            contact.churned, contact.churned_at, contact.added_at = False, None, event.at
        await self.enrol_on(session, contact, "contact_added", event.at)
        return contact

    async def first_message(self, session: AsyncSession, event: Event) -> Contact:
        """A customer who writes first has added us, as far as the journeys are concerned."""
        contact, created = await self.upsert(session, event)
        if created:
            await self.enrol_on(session, contact, "contact_added", event.at)
        return contact

    async def removed(self, session: AsyncSession, event: Event) -> None:
        """The customer deleted their guide, left or blocked us: journeys end and the guide is told once."""
        contact = await repo.contact_by_identity(session, event.channel, event.sender_id)
        if contact is None or contact.churned:
            return
        contact.churned, contact.churned_at = True, event.at
        ended = await self.exit(session, contact, "churned", event.at)
        await self.handoff.notify_guide(session, contact, f"【流失提醒】客户 {contact.name}（#{contact.id}）删除了好友或离开；"
                                                          f"已结束旅程：{', '.join(ended) or '无'}", event.at)

    async def enrol_on(self, session: AsyncSession, contact: Contact, trigger: str, now: datetime,
                       tag: str | None = None) -> None:
        if contact.opted_out or contact.churned:
            return
        for journey in self.library.journeys.values():
            if journey.trigger.kind == trigger and journey.trigger.tag == tag:
                await self.runner.enrol(session, contact, journey, now)

    async def exit(self, session: AsyncSession, contact: Contact, reason: str, now: datetime) -> list[str]:
        """End the journeys that exit on `reason`; returns their ids."""
        return await self.runner.exit(session, contact, reason, now, self.library.journeys)

    async def opt_out(self, session: AsyncSession, contact: Contact, now: datetime) -> list[str] | None:
        """Unsubscribe: every journey ends. None when the customer had already opted out."""
        if contact.opted_out:
            return None
        contact.opted_out, contact.opted_out_at = True, now
        return await self.exit(session, contact, "opted_out", now)

    async def purchased(self, session: AsyncSession, contact: Contact, now: datetime) -> list[str]:
        contact.purchased_at = now
        return await self.exit(session, contact, "purchased", now)

    async def add_tag(self, session: AsyncSession, contact: Contact, tag: str, now: datetime) -> bool:
        """Tag the customer and start the journeys triggered by that tag; False when it was already there."""
        if tag in (contact.tags or []):
            return False
        contact.tags = sorted({*(contact.tags or []), tag})
        await self.enrol_on(session, contact, "tag_added", now, tag=tag)
        return True
