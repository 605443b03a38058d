"""Putting customers into journeys and taking them out; scheduling each step as a durable touch."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.facts import customer_zone
from bot.journey import Journey, Step
from storage import repo
from storage.models import Contact, Enrolment, Touch
from storage.touch_status import ACTIVE


def _birthday_in(year: int, birthday: date) -> date:
    try:
        return date(year, birthday.month, birthday.day)
    except ValueError:  # born on 29 February: celebrate on the 28th in common years
        return date(year, 2, 28)


def next_occasion(step: Step, contact: Contact, now: datetime, default_tz: str,
                  after: date | None = None) -> tuple[datetime, str] | None:
    """When an occasion step is next due for this customer, and the occasion's name (pure).

    `after` is the occasion date just handled, so a yearly step moves on to the next one.
    """
    zone = customer_zone(contact, default_tz)
    start = now.astimezone(zone).date()
    if after is not None:
        start = max(start, after + timedelta(days=1))
    assert step.time_of_day is not None
    options: list[tuple[date, str]] = []
    if step.on == "birthday":
        if contact.birthday is None:
            return None
        options = [(_birthday_in(year, contact.birthday), "生日") for year in (start.year, start.year + 1)]
    else:
        for festival in step.dates:
            first = festival.next_on_or_after(start)
            if first is not None:
                options.append((first, festival.name))
                second = festival.next_on_or_after(first + timedelta(days=1))
                if second is not None:
                    options.append((second, festival.name))
    for day, name in sorted(options):
        moment = datetime.combine(day, step.time_of_day, tzinfo=zone)
        if day >= start and moment >= now:
            return moment.astimezone(timezone.utc), name
    return None


class JourneyRunner:
    """Enrols, re-enrols and exits customers; knows nothing about sending."""

    def __init__(self, default_timezone: str) -> None:
        self.default_timezone = default_timezone

    async def enrol(self, session: AsyncSession, contact: Contact, journey: Journey, now: datetime,
                    restart: bool = False) -> Enrolment | None:
        """Enrol once per journey; a churned-and-returned customer (or `restart`) starts a new generation."""
        enrolment = await repo.enrolment_for(session, contact.id, journey.id)
        if enrolment is not None:
            if enrolment.status == "active" and not restart:
                return None
            if enrolment.status != "active" and not restart and enrolment.exit_reason != "churned":
                return None
            await repo.cancel_touches(session, contact.id, now, "restarted", enrolment.id)
            enrolment.generation += 1
            enrolment.status, enrolment.enrolled_at = "active", now
            enrolment.exited_at = enrolment.exit_reason = None
            enrolment.variants = {}
        else:
            enrolment = Enrolment(contact_id=contact.id, journey_id=journey.id, generation=1, status="active",
                                  enrolled_at=now, variants={})
            session.add(enrolment)
            await session.flush()
        enrolment.listening_step = enrolment.listening_until = enrolment.paused_at = None
        branch_only = journey.branch_steps
        for step in journey.steps:
            if step.id not in branch_only:  # those wait for the reply that leads to them
                await self.schedule_step(session, contact, enrolment, step, now)
        return enrolment

    async def schedule_step(self, session: AsyncSession, contact: Contact, enrolment: Enrolment, step: Step,
                            now: datetime, after: date | None = None) -> None:
        base = f"{enrolment.journey_id}:{step.id}:{contact.id}:g{enrolment.generation}"
        occasion = None
        if step.at is not None:
            due, key = enrolment.enrolled_at + step.at, base
        else:
            found = next_occasion(step, contact, now, self.default_timezone, after)
            if found is None:
                return
            due, occasion = found
            key = f"{base}:{due.date().isoformat()}"
        await repo.schedule_touch(session, contact_id=contact.id, enrolment_id=enrolment.id,
                                  journey_id=enrolment.journey_id, step_id=step.id, idempotency_key=key,
                                  due_at=due, occasion=occasion, created_at=now)

    async def exit(self, session: AsyncSession, contact: Contact, reason: str, now: datetime,
                   journeys: dict[str, Journey], loaded: Sequence[Enrolment] | None = None) -> list[str]:
        """End every active enrolment whose journey exits on `reason`; returns the journey ids ended.

        `loaded`: the customer's enrolments already read in this transaction (those not active are skipped)."""
        ended = []
        enrolments = await repo.active_enrolments(session, contact.id) if loaded is None else loaded
        for enrolment in (e for e in enrolments if e.status == "active"):
            journey = journeys.get(enrolment.journey_id)
            if journey is not None and not journey.exits_on(reason):
                continue
            if reason == "replied" and enrolment.listening_until is not None and enrolment.listening_until > now:
                continue  # a step listening for this reply decides (bot/listening.py)
            await self.exit_one(session, enrolment, reason, now)
            ended.append(enrolment.journey_id)
        return ended

    async def exit_one(self, session: AsyncSession, enrolment: Enrolment, reason: str, now: datetime) -> None:
        enrolment.status, enrolment.exited_at, enrolment.exit_reason = "exited", now, reason
        enrolment.listening_step = enrolment.listening_until = None
        await repo.cancel_touches(session, enrolment.contact_id, now, reason, enrolment.id)

    # --- journeys that listen ---

    @staticmethod
    def listen(enrolment: Enrolment | None, step: Step, now: datetime) -> None:
        """A step with `on_reply` was sent: the customer's next reply within its window is its to branch on."""
        if enrolment is not None and step.on_reply is not None:
            enrolment.listening_step, enrolment.listening_until = step.id, now + step.on_reply.within

    async def schedule_branch(self, session: AsyncSession, contact: Contact, enrolment: Enrolment, step: Step,
                              after: str, now: datetime) -> None:
        """A branch step, due its `at` after the reply that chose it; once per listening step and generation."""
        key = f"{enrolment.journey_id}:{step.id}:{contact.id}:g{enrolment.generation}:after:{after}"
        await repo.schedule_touch(session, contact_id=contact.id, enrolment_id=enrolment.id,
                                  journey_id=enrolment.journey_id, step_id=step.id, idempotency_key=key,
                                  due_at=now + (step.at or timedelta(0)), created_at=now)

    # --- a guide's take-over pauses journeys ---

    @staticmethod
    async def held_until(session: AsyncSession, contact: Contact, enrolment: Enrolment | None, touch: Touch,
                         now: datetime) -> datetime | None:
        """Until when a due touch waits because a guide has the chat (None: it may go now).

        A take-over that timed out without a release resumes here, at its end."""
        if enrolment is None or enrolment.paused_at is None or touch.triggered_by is not None:
            return None
        if contact.handoff_until is not None and contact.handoff_until > now:
            return contact.handoff_until
        moved = await resume_journeys(session, contact, contact.handoff_until or now, now)
        due = moved.get(touch.id)
        return due if due is not None and due > now else None


async def pause_journeys(session: AsyncSession, contact: Contact, now: datetime, fresh: bool = True) -> None:
    """A guide took the chat over: the customer's journeys wait (their touches are held, not lost).

    `fresh`: a new take-over, not the same guide writing again within one."""
    for enrolment in await repo.active_enrolments(session, contact.id):
        if fresh or enrolment.paused_at is None:
            enrolment.paused_at = now


async def resume_journeys(session: AsyncSession, contact: Contact, ended: datetime,
                          now: datetime) -> dict[int, datetime]:
    """The take-over ended at `ended`: later steps move on by the time paused. Returns touch id → new due time.

    A touch held by the pause (reason `paused`) moves from when it was due, the others from when they are
    due now (earlier pauses included). `expire` still counts from the first plan: a step paused past its
    expire is dropped as stale by the policy, never sent late."""
    moved: dict[int, datetime] = {}
    for enrolment in await repo.active_enrolments(session, contact.id):
        if enrolment.paused_at is None:
            continue
        paused, enrolment.paused_at = enrolment.paused_at, None
        shift = max(ended - paused, timedelta(0))
        enrolment.enrolled_at = enrolment.enrolled_at + shift  # replied_since() and new steps count from here
        touches = (await session.scalars(select(Touch).where(
            Touch.enrolment_id == enrolment.id, Touch.status.in_(ACTIVE), Touch.triggered_by.is_(None)))).all()
        for touch in touches:  # (a claimed one is the scheduler's, deferring to the time returned)
            held = touch.reason == "paused"
            base = max(touch.first_due_at or touch.due_at, paused) if held else touch.due_at
            due = max(now, base + shift)
            await session.execute(update(Touch).where(Touch.id == touch.id, Touch.status.in_(ACTIVE))
                                  .values(due_at=due, reason="resumed" if held else touch.reason)
                                  .execution_options(synchronize_session=False))
            moved[touch.id] = due
    return moved
