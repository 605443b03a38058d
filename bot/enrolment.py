"""Putting customers into journeys and taking them out; scheduling each step as a durable touch."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession

from bot.facts import customer_zone
from bot.journey import Journey, Step
from storage import repo
from storage.models import Contact, Enrolment


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
        for step in journey.steps:
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
                   journeys: dict[str, Journey]) -> list[str]:
        """End every active enrolment whose journey exits on `reason`; returns the journey ids ended."""
        ended = []
        for enrolment in await repo.active_enrolments(session, contact.id):
            journey = journeys.get(enrolment.journey_id)
            if journey is not None and not journey.exits_on(reason):
                continue
            enrolment.status, enrolment.exited_at, enrolment.exit_reason = "exited", now, reason
            await repo.cancel_touches(session, contact.id, now, reason, enrolment.id)
            ended.append(enrolment.journey_id)
        return ended
