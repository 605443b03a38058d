"""Applying the group guard: judge a message, count strikes, queue delete/warn/mute/remove, or hold it
for staff with no public action.

The optional LLM second opinion on a held message is asked after the engine's transaction commits (no
network call may keep a transaction open): `review` returns a `SecondOpinion` for the caller, which
`ask`s with no transaction open and then `settle`s the answer in a short transaction of its own."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.durations import spoken_duration
from bot.events import ActionKind, ChatType, Event
from bot.guard import Finding, GuardRules, RecentMessage, Verdict, finding
from bot.guard_history import CALLED_OFF
from bot.guard_llm import SpamJudge
from bot.guard_members import display_names, remember_name
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


def unmute_notice(member: str) -> str:
    """What the group reads when staff overturn the strike that muted a member."""
    return f"{member} 的禁言已解除"


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


@dataclass(frozen=True)
class SecondOpinion:
    """A message held for review that the LLM is to judge once the transaction that held it has committed."""

    guard_event_id: int
    event: Event
    group_id: str
    member_name: str
    score: float | None
    newcomer: bool


@dataclass(frozen=True)
class Review:
    """What the guard did with one message: `punished` (deleted or punished: the bot says nothing else about
    it), and a held message's `second_opinion` for the caller to ask after the commit."""

    punished: bool = False
    second_opinion: SecondOpinion | None = None


async def undo_strike(session: AsyncSession, event: GuardEvent, now: datetime) -> None:
    """Take back what a strike set going, once staff say the message was fine (the event no longer counts).

    A warning, mute or removal still waiting in the outbox is called off; a mute that went out (or may be
    going out right now) and still runs is lifted, unless another standing strike muted the member too. A
    deleted message and a removal that went out stay as they are: the platforms cannot take those back.
    """
    mine = Message.target_ref == event.message_ref if event.message_ref else Message.created_at == event.at
    rows = (await session.scalars(select(Message).where(
        Message.direction == "out", Message.channel == event.channel, Message.chat_id == event.group_id,
        Message.target_id == event.member_id, Message.action.in_(("say", "mute", "remove")), mine))).all()
    lift = False
    for row in rows:
        went_out = True  # or may have: the platform may have it
        if (row.delivered_at is None and row.delivery_error is None and row.awaiting_until is None
                and row.delivery_started_at is None):
            # a worker may hold it this very moment (a claim): then a mute is lifted as well, to be sure
            went_out = row.delivery_claimed_until is not None and row.delivery_claimed_until > now
            row.delivery_error, row.delivery_claimed_until = f"{CALLED_OFF}: staff said it was not spam", None
        elif row.delivered_at is None and row.delivery_error and not row.delivery_error.startswith(repo.IN_DOUBT):
            went_out = False  # the platform refused it, or it was called off before
        if row.action == "mute" and row.until is not None and row.until > now:
            lift = went_out
    if not lift or await _still_muted(session, event, now) or await _unmuted_before(session, event):
        return
    name = (await display_names(session, {(event.channel, event.member_id)}))[(event.channel, event.member_id)]
    queue_action(session, event.channel, event.group_id, event.member_id, event.message_ref, ActionKind.UNMUTE, now,
                 unmute_notice(name))


async def _unmuted_before(session: AsyncSession, event: GuardEvent) -> bool:
    # staff said "not spam" about this message once already (then changed their mind, and back): one unmute
    return bool(event.message_ref) and bool(await session.scalar(select(func.count()).select_from(Message).where(
        Message.idempotency_key == f"guard:{event.channel}:{event.message_ref}:{ActionKind.UNMUTE.value}")))


async def _still_muted(session: AsyncSession, event: GuardEvent, now: datetime) -> bool:
    """Whether another strike that still counts muted the member in this group for longer than now."""
    refs = [ref for ref in (await session.scalars(select(Message.target_ref).where(
        Message.direction == "out", Message.channel == event.channel, Message.chat_id == event.group_id,
        Message.target_id == event.member_id, Message.action == "mute", Message.until > now,
        Message.delivery_error.is_(None)))).all() if ref and ref != event.message_ref]
    if not refs:
        return False
    return bool(await session.scalar(select(func.count()).select_from(GuardEvent).where(
        GuardEvent.channel == event.channel, GuardEvent.group_id == event.group_id,
        GuardEvent.member_id == event.member_id, GuardEvent.message_ref.in_(refs), GuardEvent.status.in_(COUNTED))))


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
                     member_name: str, inbound: Message | None = None) -> Review:
        """Judge one message inside the engine's transaction.

        `inbound` is the stored message (already added to the session); it is left out of the rate rules.
        A message for review is held (recorded for staff, otherwise left alone); when the LLM is to give
        a second opinion on it, the returned Review carries it, for the caller to ask after the commit.
        """
        if event.sender_id in rules.exempt:
            return Review()
        now = event.at
        membership = await repo.membership_of(session, group, event.sender_id)
        newcomer = membership is not None and now - membership.joined_at <= timedelta(minutes=rules.new_member_minutes)
        verdict = rules.judge(event.text, event.content_type, newcomer, self._model(rules),
                              await self.samples(session, rules))
        since = now - max(rules.repeat_window, timedelta(seconds=rules.flood_seconds))
        own = inbound.id if inbound is not None and inbound.id is not None else None
        recent = [RecentMessage(m.sender_id, m.chat_id, m.text, m.created_at, bool(m.mentions_bot))
                  for m in await repo.recent_group_messages(session, event.channel, since) if m.id != own]
        rate = rules.rate_findings(event.sender_id, event.text, now, recent, to_bot=event.mentions_bot)
        if verdict.action == "act" or rate:
            findings = [*(verdict.findings if verdict.action == "act" else ()), *rate]
            await self._act(session, rules, event, group.external_id, member_name, findings, verdict.score,
                            newcomer, inbound)
            return Review(punished=True)
        if verdict.action != "hold":
            return Review()
        held = await self._hold(session, event, group, member_name, verdict, inbound)
        if rules.classifier.llm and self.judge is not None:
            await session.flush()  # the held event's id, for the second opinion after the commit
            return Review(second_opinion=SecondOpinion(held.id, event, group.external_id, member_name,
                                                       verdict.score, newcomer))
        return Review()

    async def ask(self, opinion: SecondOpinion) -> bool | None:
        """The LLM's answer on a held message: True (an ad), False (ordinary talk) or None (no clear answer,
        or any error: it stays held for staff). Call it with no transaction open."""
        if self.judge is None:
            return None
        try:
            return await self.judge.is_spam(opinion.event.text)
        except Exception as exc:  # noqa: BLE001 — whatever went wrong, staff still have the message to review
            log.warning("guard LLM failed (%s); the message stays held for staff", type(exc).__name__)
            return None

    async def settle(self, session: AsyncSession, rules: GuardRules, opinion: SecondOpinion,
                     spam: bool | None) -> None:
        """Apply the LLM's answer in a short transaction of its own: spam is deleted and punished as the high
        band would; ordinary talk is released (the hold is cleared); no answer leaves it held for staff. A
        message staff decided on meanwhile is left as they decided."""
        # locked, so a staff verdict given while the LLM was thinking is seen here, or waits for this one
        held = await session.get(GuardEvent, opinion.guard_event_id, with_for_update=True)
        if spam is None or held is None or held.status != "held":
            return
        if not spam:
            await session.delete(held)  # as if it had never been held: the guard passes it
            log.info("guard: the LLM cleared a held message in %s", opinion.group_id)
            return
        findings = [finding("llm", score=opinion.score or 0)]
        strike, action = await self._punish(session, rules, opinion.event, opinion.group_id, opinion.member_name,
                                            findings, opinion.newcomer)
        held.rule, held.strike, held.action, held.status = ",".join(f.rule for f in findings), strike, action, "acted"
        held.reason = "；".join(f.detail for f in findings)

    async def _hold(self, session: AsyncSession, event: Event, group: Group, member_name: str, verdict: Verdict,
                    inbound: Message | None) -> GuardEvent:
        reason = "；".join(f.detail for f in verdict.findings)
        held = GuardEvent(channel=event.channel, group_id=group.external_id, member_id=event.sender_id,
                          message_ref=event.message_id, rule=",".join(f.rule for f in verdict.findings),
                          strike=0, action="hold", status="held", reason=reason, excerpt=event.text[:200],
                          score=verdict.score, message_row=inbound.id if inbound is not None else None,
                          at=event.at)
        session.add(held)
        await remember_name(session, event.channel, event.sender_id, member_name, event.at)
        log.info("guard: held a message in %s for staff review — %s", group.external_id, reason)
        self.metrics.guard_actions.labels(verdict.findings[0].rule if verdict.findings else "review", "hold").inc()
        return held

    async def _act(self, session: AsyncSession, rules: GuardRules, event: Event, group_id: str, member_name: str,
                   findings: list[Finding], score: float | None, newcomer: bool, inbound: Message | None) -> None:
        strike, action = await self._punish(session, rules, event, group_id, member_name, findings, newcomer)
        session.add(GuardEvent(channel=event.channel, group_id=group_id, member_id=event.sender_id,
                               message_ref=event.message_id, rule=",".join(f.rule for f in findings),
                               strike=strike, action=action, status="acted",
                               reason="；".join(f.detail for f in findings), excerpt=event.text[:200], score=score,
                               message_row=inbound.id if inbound is not None else None, at=event.at))

    async def _punish(self, session: AsyncSession, rules: GuardRules, event: Event, group_id: str,
                      member_name: str, findings: list[Finding], newcomer: bool) -> tuple[int, str]:
        """Delete the message and queue the strike's action: (strike, action). `findings` may gain one."""
        now = event.at  # the actions sit in the chat's history where the message was
        strike = await strikes_since(session, event.channel, group_id, event.sender_id,
                                     now - rules.escalation_window) + 1
        if newcomer and any(f.rule in HARD_RULES for f in findings):
            findings.append(finding("new_member_ad", minutes=rules.new_member_minutes))
            action = "remove"
        else:
            action = rules.action_for(strike)

        def op(kind: ActionKind, text: str = "", until: datetime | None = None) -> None:
            queue_action(session, event.channel, group_id, event.sender_id, event.message_id, kind, now, text, until)

        if event.message_id:
            op(ActionKind.DELETE)
        if action == "warn":
            op(ActionKind.SAY, self._warning(rules, member_name))
        elif action == "mute":
            op(ActionKind.MUTE, mute_notice(member_name, strike, rules.mute_for), now + rules.mute_for)
        else:
            op(ActionKind.REMOVE, remove_notice(member_name, strike))
        await remember_name(session, event.channel, event.sender_id, member_name, now)
        log.info("guard: %s in %s — %s (strike %d → %s)", event.sender_id, group_id,
                 "；".join(f.detail for f in findings), strike, action)
        for found in findings:
            self.metrics.guard_actions.labels(found.rule, action).inc()
        return strike, action

    @staticmethod
    def _warning(rules: GuardRules, member: str) -> str:
        if rules.warning is None:
            return DEFAULT_WARNING.format(member=member)
        try:
            return render(rules.warning, {"member": member})
        except TemplateProblem:
            return DEFAULT_WARNING.format(member=member)
