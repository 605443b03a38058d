"""The guard's log for operators, and their verdicts on it: "not spam" (the strike is undone, the message kept
as a normal example) and "spam" (a spam example). bot/guard_feedback.py decides what a verdict does."""
from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot import guard_feedback
from bot.app import App
from bot.guard import rule_names
from bot.guard_members import display_names
from console.auth import Refused, Staffer
from console.dashboard import DateRange, csv_text
from console.models import GuardEventOut, GuardVerdictResult
from storage.models import GuardEvent

NO_EVENT = "找不到这条群防护记录（#{id}）"
NO_MESSAGE = "这条群防护记录没有保存原消息，不能标记为垃圾消息"
NO_GROUP_MESSAGE = "找不到这条群消息（{id}）"
MARKED = {True: "已标记为垃圾消息：消息已撤回，并作为垃圾样本，群防护从下一条消息起就会参考",
          False: "已标记为正常消息：这次处罚已撤销，消息作为正常样本保留"}
MAX_EVENTS = 500


class GuardReview:
    def __init__(self, app: App) -> None:
        self.app = app
        self.zone = ZoneInfo(app.settings.policy.timezone)

    async def events(self, span: DateRange) -> list[GuardEventOut]:
        start, end = span.bounds(self.zone)
        async with self.app.db.session() as session:
            rows = (await session.scalars(select(GuardEvent).where(GuardEvent.at >= start, GuardEvent.at < end)
                                          .order_by(GuardEvent.at.desc(), GuardEvent.id.desc())
                                          .limit(MAX_EVENTS))).all()
            names = await display_names(session, {(e.channel, e.member_id) for e in rows})
        return [self._out(e, names[(e.channel, e.member_id)]) for e in rows]

    def _out(self, e: GuardEvent, member_name: str) -> GuardEventOut:
        verdict = e.status if e.status in ("spam", "not_spam") else None
        return GuardEventOut(id=e.id, at=e.at, local_time=f"{e.at.astimezone(self.zone):%Y-%m-%d %H:%M}",
                             channel=e.channel, group=e.group_id, member=e.member_id,
                             member_name=member_name, rule=e.rule, rule_names=rule_names(e.rule), strike=e.strike,
                             action=e.action, reason=e.reason, excerpt=e.excerpt, verdict=verdict,
                             status=e.status or "acted", score=e.score, message_id=e.message_row)

    @staticmethod
    def csv(events: Sequence[GuardEventOut]) -> str:
        return csv_text(["id", "local_time", "channel", "group", "member", "member_name", "rule", "strike", "action",
                         "status", "reason", "excerpt"],
                        [[e.id, e.local_time, e.channel, e.group, e.member, e.member_name, e.rule, e.strike, e.action,
                          e.status, e.reason, e.excerpt] for e in events])

    async def mark(self, staffer: Staffer, event_id: int, spam: bool) -> GuardVerdictResult:
        """A staff verdict on one guard event (a spam verdict judges the event's message)."""
        now = self.app.clock.now()
        async with self.app.db.session() as session, session.begin():
            event = await session.get(GuardEvent, event_id)
            if event is None:
                raise Refused(404, NO_EVENT.format(id=event_id))
            if spam:
                if event.message_row is None:
                    raise Refused(409, NO_MESSAGE)
                view = await guard_feedback.mark_spam(session, event.message_row, staffer.key, now)
            else:
                view = await guard_feedback.mark_not_spam(session, event_id, staffer.key, now)
        self.app.engine.work_ready.set()  # a spam verdict may have queued the message's deletion
        return GuardVerdictResult(id=view.id, verdict="spam" if spam else "not_spam", message=MARKED[spam])

    async def mark_message(self, staffer: Staffer, message_id: int) -> GuardVerdictResult:
        """Any group message the guard let through can be marked spam too."""
        now = self.app.clock.now()
        async with self.app.db.session() as session, session.begin():
            try:
                view = await guard_feedback.mark_spam(session, message_id, staffer.key, now)
            except LookupError:
                raise Refused(404, NO_GROUP_MESSAGE.format(id=message_id)) from None
        self.app.engine.work_ready.set()
        return GuardVerdictResult(id=view.id, verdict="spam", message=MARKED[True])
