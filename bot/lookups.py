"""What the operator asks of a running siyu's database: trigger, why, guard log, FAQ stats and gaps."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.commands import StaffActor, format_decisions
from bot.guard_members import display_names
from bot.reports import gap_lines, guard_log_lines, question_mix_lines
from intents.insights import cluster_gaps, question_mix, with_closest_intents
from storage import repo

if TYPE_CHECKING:
    from bot.app import App


class UnknownCustomer(LookupError):
    """Nothing matches the customer reference the operator typed."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no customer {ref!r} — use the customer's id, platform id or name")


async def trigger(app: App, target: str, customer: str, by: str) -> str:
    """Send a journey (restart) or one step now, as `by`; the answer the guide would see in chat.

    Raises UnknownCustomer, or CommandError for an unknown journey or step.
    """
    async with app.db.session() as session, session.begin():
        contact = await repo.find_contact(session, customer)
        if contact is None:
            raise UnknownCustomer(customer)
        return await app.engine.commands.sop(session, StaffActor(by, contact.channel),
                                             [target, str(contact.id)], app.clock.now())


async def why(app: App, customer: str, limit: int) -> str:
    """The customer's recent touch decisions, newest first. Raises UnknownCustomer."""
    async with app.db.session() as session:
        contact = await repo.find_contact(session, customer)
        if contact is None:
            raise UnknownCustomer(customer)
        return format_decisions(contact, await repo.recent_decisions(session, contact.id, limit),
                                ZoneInfo(app.settings.policy.timezone))


async def guard_log(app: App, limit: int) -> list[str]:
    """The guard's latest actions, newest first, in local time."""
    async with app.db.session() as session:
        events = await repo.guard_events(session, limit)
        names = await display_names(session, {(e.channel, e.member_id) for e in events})
    return guard_log_lines(events, names, ZoneInfo(app.settings.policy.timezone))


async def faq_gaps(app: App, days: int) -> list[str]:
    """Unanswered (handed-off) questions of the last `days` days, clustered."""
    since = app.clock.now() - timedelta(days=days)
    async with app.db.session() as session:
        questions = await repo.unanswered_questions(session, since)
    understanding = app.engine.answers.understanding  # which intent each cluster is nearest to
    top = understanding.semantic.top if understanding.semantic else understanding.fuzzy.top
    return gap_lines(await asyncio.to_thread(with_closest_intents, cluster_gaps(questions), top), days)


async def faq_stats(app: App, days: int, by: str) -> list[str]:
    """The question mix per day or week (in the policy timezone) over the last `days` days."""
    since = app.clock.now() - timedelta(days=days)
    async with app.db.session() as session:
        replies = await repo.answered_since(session, since)
    return question_mix_lines(question_mix(replies, ZoneInfo(app.settings.policy.timezone), by), days)
