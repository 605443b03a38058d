"""The operator's dashboard: journey funnels with A/B tests, touch decisions, FAQ insights, the guard, churn.

Every figure is counted from what storage already keeps (touches, the touch log, messages, guard
events, contacts) over brand-local days; `rows()` of each answer is what its CSV export holds.
"""
from __future__ import annotations

import bisect
import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import select

from bot.app import App
from bot.commands import reason_text
from bot.guard import RULE_NAMES
from console.auth import Refused
from console.models import (
    AbTest,
    Churn,
    ChurnedCustomer,
    Counts,
    DecisionCount,
    Decisions,
    FaqInsights,
    Funnel,
    FunnelStep,
    GuardRuleCount,
    GuardSummary,
    QuestionGap,
    QuestionShare,
)
from intents.insights import cluster_gaps, question_mix
from storage.models import Contact, Enrolment, GuardEvent, Message, Touch, TouchLog

REPLY_WINDOW = timedelta(hours=48)  # a reply to a step counts when it comes within this
DEFAULT_DAYS = 30
MAX_DAYS = 366
BAD_DATE = "日期格式不对：请用 YYYY-MM-DD，例如 from=2026-03-01&to=2026-03-31"
BAD_RANGE = "日期范围不对：from 要早于 to，且最长 366 天"
NO_JOURNEY = "没有旅程 '{journey}'；可用：{known}"


class DateRange(BaseModel):
    """Brand-local days, both ends included."""

    first: date
    last: date

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) as aware datetimes."""
        return (datetime.combine(self.first, time.min, tzinfo=zone),
                datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=zone))


def parse_range(raw_from: str | None, raw_to: str | None, today: date) -> DateRange:
    try:
        last = date.fromisoformat(raw_to) if raw_to else today
        first = date.fromisoformat(raw_from) if raw_from else last - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise Refused(400, BAD_DATE) from None
    if first > last or (last - first).days >= MAX_DAYS:
        raise Refused(400, BAD_RANGE)
    return DateRange(first=first, last=last)


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """z and the two-sided p of H0: both proportions are equal (pooled standard error)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def _counts(enrolled: int, sent: int, replied: int, purchased: int) -> Counts:
    return Counts(enrolled=enrolled, sent=sent, replied=replied, purchased=purchased,
                  reply_rate=round(replied / sent, 4) if sent else 0.0,
                  purchase_rate=round(purchased / sent, 4) if sent else 0.0)


class Dashboard:
    """Counts for the operator, over a date range."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.zone = ZoneInfo(app.settings.policy.timezone)

    def today(self) -> date:
        return self.app.clock.now().astimezone(self.zone).date()

    async def funnel(self, journey_id: str, span: DateRange) -> Funnel:
        """Per step, for customers enrolled in the range: enrolled → sent → replied (48 h) → purchased."""
        journey = self.app.library.journeys.get(journey_id)
        if journey is None:
            known = ", ".join(sorted(self.app.library.journeys)) or "无"
            raise Refused(404, NO_JOURNEY.format(journey=journey_id, known=known))
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            cohort = select(Enrolment.id).where(Enrolment.journey_id == journey_id, Enrolment.enrolled_at >= start,
                                                Enrolment.enrolled_at < end)
            touches = (await session.execute(select(
                Touch.enrolment_id, Touch.contact_id, Touch.step_id, Touch.status, Touch.variant, Touch.finished_at)
                .where(Touch.enrolment_id.in_(cohort)))).all()
            contact_ids = {t.contact_id for t in touches}
            inbound: dict[int, list[datetime]] = defaultdict(list)
            purchased: dict[int, datetime | None] = {}
            if contact_ids:
                for contact_id, at in (await session.execute(select(Message.contact_id, Message.created_at).where(
                        Message.contact_id.in_(contact_ids), Message.direction == "in",
                        Message.sender_role == "customer"))).all():
                    inbound[contact_id].append(at)
                for contact_id, at in (await session.execute(select(Contact.id, Contact.purchased_at).where(
                        Contact.id.in_(contact_ids)))).all():
                    purchased[contact_id] = at
        for times in inbound.values():
            times.sort()

        def replied(contact_id: int, sent_at: datetime) -> bool:
            times = inbound.get(contact_id, [])
            i = bisect.bisect_right(times, sent_at)
            return i < len(times) and times[i] <= sent_at + REPLY_WINDOW

        # step → variant ("" for none) → [enrolled, sent, replied, purchased]
        tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
        for t in touches:
            arm = tally[t.step_id][t.variant or ""]
            arm[0] += 1
            if t.status == "sent" and t.finished_at is not None:
                arm[1] += 1
                arm[2] += replied(t.contact_id, t.finished_at)
                bought = purchased.get(t.contact_id)
                arm[3] += bought is not None and bought >= t.finished_at
        steps = []
        for step in journey.steps:
            arms = tally.get(step.id, {})
            total = [sum(a[i] for a in arms.values()) for i in range(4)]
            variants = {name: _counts(*a) for name, a in sorted(arms.items()) if name}
            for variant in step.variants:  # every arm shows, also before anyone got it
                variants.setdefault(variant.name, _counts(0, 0, 0, 0))
            test = None
            names = sorted(variants)
            if len(names) >= 2:
                a, b = variants[names[0]], variants[names[1]]
                z, p = two_proportion_z(a.replied, a.sent, b.replied, b.sent)
                test = AbTest(a=names[0], b=names[1], z=round(z, 4), p=round(p, 4))
            steps.append(FunnelStep(step=step.id, **_counts(*total).model_dump(), variants=variants, ab_test=test))
        return Funnel(journey=journey.id, title=journey.title, date_from=span.first, date_to=span.last, steps=steps)

    async def decisions(self, span: DateRange) -> Decisions:
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            rows = (await session.execute(select(TouchLog.at, TouchLog.decision, TouchLog.reason).where(
                TouchLog.at >= start, TouchLog.at < end))).all()
        counts = Counter((at.astimezone(self.zone).date(), decision, reason) for at, decision, reason in rows)
        return Decisions(date_from=span.first, date_to=span.last, rows=[
            DecisionCount(day=day, decision=decision, reason=reason, reason_text=reason_text(reason), count=n)
            for (day, decision, reason), n in sorted(counts.items())])

    async def faq(self, span: DateRange) -> FaqInsights:
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            replies = (await session.execute(select(Message.created_at, Message.intent, Message.handoff).where(
                Message.direction == "out", Message.created_at >= start, Message.created_at < end,
                (Message.intent.isnot(None)) | (Message.handoff.is_(True))))).all()
            unanswered = (await session.scalars(select(Message.text).where(
                Message.direction == "in", Message.handoff.is_(True), Message.created_at >= start,
                Message.created_at < end).order_by(Message.id.desc()).limit(5000))).all()
        shares = question_mix([(at, intent, bool(handoff)) for at, intent, handoff in replies], self.zone)
        gaps = cluster_gaps(unanswered)
        return FaqInsights(date_from=span.first, date_to=span.last,
                           shares=[QuestionShare(period=s.period, intent=s.intent, count=s.count,
                                                 share=round(s.share, 4)) for s in shares],
                           gaps=[QuestionGap(example=g.example, count=g.count, variants=list(g.variants))
                                 for g in gaps])

    async def guard(self, span: DateRange) -> GuardSummary:
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            rows = (await session.execute(select(GuardEvent.rule, GuardEvent.action).where(
                GuardEvent.at >= start, GuardEvent.at < end))).all()
        by_rule: dict[str, Counter[str]] = defaultdict(Counter)
        for rules, action in rows:
            for rule in rules.split(","):  # an event may name several rules; each is counted
                by_rule[rule.strip()][action] += 1
        return GuardSummary(date_from=span.first, date_to=span.last, rules=[
            GuardRuleCount(rule=rule, name=RULE_NAMES.get(rule, rule), count=sum(actions.values()),
                           actions=dict(actions))
            for rule, actions in sorted(by_rule.items(), key=lambda kv: -sum(kv[1].values()))])

    async def churn(self, span: DateRange) -> Churn:
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            rows = (await session.scalars(select(Contact).where(
                Contact.churned.is_(True), Contact.churned_at >= start, Contact.churned_at < end)
                .order_by(Contact.churned_at.desc()).limit(1000))).all()
        return Churn(date_from=span.first, date_to=span.last, customers=[
            ChurnedCustomer(id=c.id, customer=c.name, channel=c.channel,
                            guide=c.guide_key or self.app.settings.default_guide, added_at=c.added_at,
                            churned_at=c.churned_at, local_time=f"{c.churned_at.astimezone(self.zone):%Y-%m-%d %H:%M}")
            for c in rows if c.churned_at is not None])


# --- CSV: one table per answer ---

def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """UTF-8 with a BOM, so spreadsheet programs open the Chinese correctly."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def funnel_csv(funnel: Funnel) -> str:
    rows: list[list[object]] = []
    for step in funnel.steps:
        arms: list[tuple[str, Counts]] = [("", step)] + sorted(step.variants.items())
        for name, c in arms:
            rows.append([step.step, name or "全部", c.enrolled, c.sent, c.replied, c.purchased, c.reply_rate,
                         c.purchase_rate, step.ab_test.z if step.ab_test and not name else "",
                         step.ab_test.p if step.ab_test and not name else ""])
    return csv_text(["step", "variant", "enrolled", "sent", "replied_48h", "purchased", "reply_rate",
                     "purchase_rate", "ab_z", "ab_p"], rows)


def decisions_csv(d: Decisions) -> str:
    return csv_text(["day", "decision", "reason", "reason_text", "count"],
                    [[r.day, r.decision, r.reason, r.reason_text, r.count] for r in d.rows])


def faq_csv(f: FaqInsights) -> str:
    rows: list[list[object]] = [["share", s.period, s.intent, s.count, s.share] for s in f.shares]
    rows += [["gap", "", g.example, g.count, "；".join(g.variants)] for g in f.gaps]
    return csv_text(["kind", "period", "intent_or_question", "count", "share_or_variants"], rows)


def guard_csv(g: GuardSummary) -> str:
    return csv_text(["rule", "count", "actions"],
                    [[r.rule, r.count, " ".join(f"{a}={n}" for a, n in sorted(r.actions.items()))] for r in g.rules])


def churn_csv(c: Churn) -> str:
    return csv_text(["id", "customer", "channel", "guide", "added_at", "churned_at_local"],
                    [[x.id, x.customer, x.channel, x.guide or "", x.added_at.isoformat(), x.local_time]
                     for x in c.customers])
