"""Applying the group guard: judge a message, count strikes, queue delete/warn/mute/remove, or hold it
for staff with no public action."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.durations import spoken_duration
from bot.events import ActionKind, ChatType, Event
from bot.guard import Finding, GuardRules, RecentMessage, Verdict, finding
from bot.guard_llm import SpamJudge
from bot.guard_members import remember_name
from bot.guard_model import SpamModel
from bot.guard_similar import SampleIndex
from bot.metrics import Metrics
from bot.templates import TemplateProblem, render
from storage import repo
from storage.models import GuardEvent, GuardSample, Group, Message

log = logging.getLogger(__name__)

HARD_RULES = ("banned_word", "link", "blocked_type", "similar_spam")  # a newcomer posting these is an advertiser
MODEL_RECHECK = 30.0  # seconds between looks at the model file (a retrained one counts within this)
COUNTED = ("acted", "spam")  # guard events that are strikes; held and overturned ones are not
DEFAULT_WARNING = "@{member} 请勿在群里发广告、链接或刷屏～"


def mute_notice(member: str, strike: int, length: timedelta) -> str:
    """What the group reads when a member is muted: first offence or not, and for how long in words."""
    why = "违反群规" if strike <= 1 else "再次违反群规"
    return f"{member} {why}，已被禁言 {spoken_duration(length)}"


def remove_notice(member: str, strike: int) -> str:
    """What the group reads when a member is removed; a first offence is called one."""
    return f"{member} {'违反群规' if strike <= 1 else '多次违规'}，已被移出群聊"


async def strikes_since(session: AsyncSession, channel: str, group_id: str, member_id: str, since: datetime) -> int:
    """Strikes within the window: what staff overturned or still review does not count."""
    return int(await session.scalar(select(func.count()).select_from(GuardEvent).where(
        GuardEvent.channel == channel, GuardEvent.group_id == group_id, GuardEvent.member_id == member_id,
        GuardEvent.at > since, GuardEvent.status.in_(COUNTED))) or 0)


def queue_action(session: AsyncSession, channel: str, group_id: str, member: str, message_ref: str | None,
                 kind: ActionKind, now: datetime, text: str = "", until: datetime | None = None) -> None:
    """One moderation action in the outbox, keyed on the message so a replay (or staff) never repeats it."""
    key = f"guard:{channel}:{message_ref}:{kind.value}" if message_ref else None
    repo.add_message(session, channel=channel, chat_type=ChatType.GROUP.value, chat_id=group_id, direction="out",
                     sender_role="bot", sender_id="bot", text=text, action=kind.value, target_id=member,
                     target_ref=message_ref, until=until, idempotency_key=key, created_at=now)


class GroupModerator:
    """Decides and records punishments inside the engine's transaction; the outbox carries them out."""

    def __init__(self, metrics: Metrics | None = None, judge: SpamJudge | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.judge = judge
        self._samples = SampleIndex()
        self._loaded: tuple[str | None, SpamModel | None, float] | None = None  # (path, model, checked at)

    async def samples(self, session: AsyncSession, rules: GuardRules) -> SampleIndex:
        """Staff samples, rebuilt only when storage has new ones: a decision counts from the next message on,
        in every process, without a restart."""
        count, newest = (await session.execute(select(func.count(), func.max(GuardSample.id)))).one()
        version = (int(count or 0), int(newest or 0))
        if version != self._samples.version:
            rows = (await session.execute(select(GuardSample.id, GuardSample.text, GuardSample.spam)
                                          .order_by(GuardSample.id))).all()
            self._samples = SampleIndex.build([(i, t, bool(s)) for i, t, s in rows], version, rules.evasions)
        return self._samples

    def _model(self, rules: GuardRules) -> SpamModel | None:
        # the file is looked at (a stat) at most every MODEL_RECHECK seconds, not on every message
        where, now = rules.classifier.model, time.monotonic()
        if self._loaded is not None and self._loaded[0] == where and now - self._loaded[2] < MODEL_RECHECK:
            return self._loaded[1]
        try:
            model: SpamModel | None = rules.model()
        except (OSError, ValueError) as exc:  # the rules still work without the learned tier
            log.warning("guard: the classifier's model cannot be read (%s); rules only", exc)
            model = None
        self._loaded = (where, model, now)
        return model

    async def review(self, session: AsyncSession, rules: GuardRules, event: Event, group: Group,
                     member_name: str, inbound: Message | None = None) -> bool:
        """True when the message was deleted or punished (the bot then says nothing else about it).

        `inbound` is the stored message (already added to the session); it is left out of the rate rules.
        A message held for review is recorded for staff and otherwise left alone: False.
        """
        if event.sender_id in rules.exempt:
            return False
        now = event.at
        membership = await repo.membership_of(session, group, event.sender_id)
        newcomer = membership is not None and now - membership.joined_at <= timedelta(minutes=rules.new_member_minutes)
        verdict = rules.judge(event.text, event.content_type, newcomer, self._model(rules),
                              await self.samples(session, rules))
        if verdict.action == "hold" and rules.classifier.llm and self.judge is not None:
            verdict = await self._second_opinion(verdict, event.text)
        since = now - max(rules.repeat_window, timedelta(seconds=rules.flood_seconds))
        own = inbound.id if inbound is not None and inbound.id is not None else None
        recent = [RecentMessage(m.sender_id, m.chat_id, m.text, m.created_at, bool(m.mentions_bot))
                  for m in await repo.recent_group_messages(session, event.channel, since) if m.id != own]
        rate = rules.rate_findings(event.sender_id, event.text, now, recent, to_bot=event.mentions_bot)
        if verdict.action == "act" or rate:
            findings = [*(verdict.findings if verdict.action == "act" else ()), *rate]
            await self._act(session, rules, event, group, member_name, findings, verdict.score, newcomer, inbound)
            return True
        if verdict.action == "hold":
            await self._hold(session, event, group, member_name, verdict, inbound)
        return False

    async def _second_opinion(self, verdict: Verdict, text: str) -> Verdict:
        assert self.judge is not None
        spam = await self.judge.is_spam(text)
        if spam is None:
            return verdict  # no answer: staff decide
        if spam:
            return Verdict("act", (finding("llm", score=verdict.score or 0),),
                           verdict.score)
        return Verdict("pass", (), verdict.score)

    async def _hold(self, session: AsyncSession, event: Event, group: Group, member_name: str, verdict: Verdict,
                    inbound: Message | None) -> None:
        reason = "；".join(f.detail for f in verdict.findings)
        session.add(GuardEvent(channel=event.channel, group_id=group.external_id, member_id=event.sender_id,
                               message_ref=event.message_id, rule=",".join(f.rule for f in verdict.findings),
                               strike=0, action="hold", status="held", reason=reason, excerpt=event.text[:200],
                               score=verdict.score, message_row=inbound.id if inbound is not None else None,
                               at=event.at))
        await remember_name(session, event.channel, event.sender_id, member_name, event.at)
        log.info("guard: held a message in %s for staff review — %s", group.external_id, reason)
        self.metrics.guard_actions.labels(verdict.findings[0].rule if verdict.findings else "review", "hold").inc()

    async def _act(self, session: AsyncSession, rules: GuardRules, event: Event, group: Group, member_name: str,
                   findings: list[Finding], score: float | None, newcomer: bool, inbound: Message | None) -> None:
        now = event.at
        strike = await strikes_since(session, event.channel, group.external_id, event.sender_id,
                                     now - rules.escalation_window) + 1
        if newcomer and any(f.rule in HARD_RULES for f in findings):
            findings.append(finding("new_member_ad", minutes=rules.new_member_minutes))
            action = "remove"
        else:
            action = rules.action_for(strike)

        def op(kind: ActionKind, text: str = "", until: datetime | None = None) -> None:
            queue_action(session, event.channel, group.external_id, event.sender_id, event.message_id, kind, now,
                         text, until)

        if event.message_id:
            op(ActionKind.DELETE)
        if action == "warn":
            op(ActionKind.SAY, self._warning(rules, member_name))
        elif action == "mute":
            op(ActionKind.MUTE, mute_notice(member_name, strike, rules.mute_for), now + rules.mute_for)
        else:
            op(ActionKind.REMOVE, remove_notice(member_name, strike))
        reason = "；".join(f.detail for f in findings)
        session.add(GuardEvent(channel=event.channel, group_id=group.external_id, member_id=event.sender_id,
                               message_ref=event.message_id, rule=",".join(f.rule for f in findings),
                               strike=strike, action=action, status="acted", reason=reason,
                               excerpt=event.text[:200], score=score,
                               message_row=inbound.id if inbound is not None else None, at=now))
        await remember_name(session, event.channel, event.sender_id, member_name, now)
        log.info("guard: %s in %s — %s (strike %d → %s)", event.sender_id, group.external_id, reason, strike, action)
        for found in findings:
            self.metrics.guard_actions.labels(found.rule, action).inc()

    @staticmethod
    def _warning(rules: GuardRules, member: str) -> str:
        if rules.warning is None:
            return DEFAULT_WARNING.format(member=member)
        try:
            return render(rules.warning, {"member": member})
        except TemplateProblem:
            return DEFAULT_WARNING.format(member=member)
