"""TouchPolicy: whether a proactive message may go out now, later, or not at all — and why.

Everything here is a pure function of `now` and facts loaded by the caller, so it can be tested
exhaustively and benchmarked without a database.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from zoneinfo import ZoneInfo

from bot.channel_rules import (
    Block,
    first_of_next_month,
    local_midnight,
    quota_blocks,
    same_local_day,
    same_local_month,
    window_refusal,
)
from bot.config import WEEKDAYS, PolicySettings
from bot.transport import ChannelLimits
from bot.durations import DailyWindow, parse_duration


class Verdict(StrEnum):
    SEND = "send"
    DEFER = "defer"
    DROP = "drop"


@dataclass(frozen=True)
class PolicyDecision:
    """The verdict, a stable reason code for machines and a sentence for people."""

    verdict: Verdict
    reason: str
    detail: str
    until: datetime | None = None


@dataclass(frozen=True)
class Rules:
    """The rules in force for one journey (global settings with its overrides applied)."""

    quiet: DailyWindow
    weekdays: frozenset[int]
    cap_day: int | None
    cap_week: int | None
    cap_month: int | None
    min_gap: timedelta
    live_conversation: timedelta
    guides_may_bypass_caps: bool

    @classmethod
    def from_settings(cls, policy: PolicySettings, journey_id: str | None = None) -> "Rules":
        override = policy.journeys.get(journey_id or "")
        pick = lambda name: getattr(override, name) if override and getattr(override, name) is not None \
            else getattr(policy, name)  # noqa: E731
        caps = pick("caps")
        return cls(
            quiet=DailyWindow.parse(pick("quiet_hours")),
            weekdays=frozenset(WEEKDAYS.index(d) for d in pick("weekdays")),
            cap_day=caps.day, cap_week=caps.week, cap_month=caps.month,
            min_gap=parse_duration(pick("min_gap")),
            live_conversation=parse_duration(pick("live_conversation")),
            guides_may_bypass_caps=policy.guides_may_bypass_caps,
        )


@dataclass(frozen=True)
class TouchRequest:
    """Everything the policy needs about one touch; built by the scheduler from storage.

    `sent` holds the times of proactive touches already sent to this customer (last ~5 weeks).
    `competing_priority` is the highest priority among the customer's other touches due now.
    """

    now: datetime
    zone: ZoneInfo
    rules: Rules
    opted_out: bool = False
    churned: bool = False
    reply: bool = False
    window: DailyWindow | None = None
    priority: int = 50
    competing_priority: int | None = None
    triggered_by: str | None = None
    first_due_at: datetime | None = None
    expire: timedelta | None = None
    last_inbound_at: datetime | None = None
    sent: Sequence[datetime] = field(default_factory=tuple)
    channel: ChannelLimits | None = None
    window_used: int = 0  # our messages since the customer's last one (for reply-window channels)


def next_allowed_time(now: datetime, zone: ZoneInfo, quiet: DailyWindow, window: DailyWindow | None,
                      weekdays: frozenset[int] = frozenset(range(7))) -> datetime | None:
    """The earliest moment ≥ now outside quiet hours, inside the step's window, on an allowed weekday."""
    local = now.astimezone(zone)

    def allowed(moment: datetime) -> bool:
        moment = moment.astimezone(zone)
        t = moment.time()
        return (moment.weekday() in weekdays and not quiet.contains(t)
                and (window is None or window.contains(t)))

    if allowed(local):
        return now
    candidates = []
    for offset in range(9):
        day: date = local.date() + timedelta(days=offset)
        for boundary in (quiet.end, window.start if window else None, datetime.min.time()):
            if boundary is not None:
                candidates.append(datetime.combine(day, boundary, tzinfo=zone))
    for moment in sorted(c for c in candidates if c > local):
        if allowed(moment):
            return moment.astimezone(timezone.utc)
    return None


def channel_verdict(request: TouchRequest) -> PolicyDecision | None:
    """A reply window that is closed or used up cannot reopen by waiting: such a touch is dropped."""
    refusal = window_refusal(request.channel, request.last_inbound_at, request.window_used, request.now)
    return PolicyDecision(Verdict.DROP, refusal.reason, refusal.detail) if refusal else None


def budget_blocks(request: TouchRequest) -> list[Block]:
    """Caps and minimum gap. Empty when within budget."""
    rules, now, zone = request.rules, request.now, request.zone
    today = now.astimezone(zone).date()
    blocks: list[Block] = []
    sent = sorted(request.sent)
    if rules.cap_day is not None:
        n = sum(1 for t in sent if same_local_day(t, today, zone))
        if n >= rules.cap_day:
            blocks.append(Block(local_midnight(today + timedelta(days=1), zone), "cap_day",
                                f"{n} proactive touch(es) today (cap {rules.cap_day})"))
    if rules.cap_week is not None:
        window = [t for t in sent if t > now - timedelta(days=7)]
        if len(window) >= rules.cap_week:
            frees_at = window[len(window) - rules.cap_week] + timedelta(days=7) if rules.cap_week else None
            blocks.append(Block(frees_at or now + timedelta(days=7), "cap_week",
                                f"{len(window)} proactive touches in the last 7 days (cap {rules.cap_week})"))
    if rules.cap_month is not None:
        n = sum(1 for t in sent if same_local_month(t, today, zone))
        if n >= rules.cap_month:
            blocks.append(Block(local_midnight(first_of_next_month(today), zone), "cap_month",
                                f"{n} proactive touches this month (cap {rules.cap_month})"))
    if sent and now < sent[-1] + rules.min_gap:
        blocks.append(Block(sent[-1] + rules.min_gap, "min_gap", f"last proactive touch "
                            f"{sent[-1].astimezone(zone):%m-%d %H:%M}; minimum gap {rules.min_gap}"))
    return blocks


class TouchPolicy:
    """One gate for every proactive message: journey steps, guide-triggered scripts, broadcasts."""

    def decide(self, request: TouchRequest) -> PolicyDecision:
        now, zone, rules = request.now, request.zone, request.rules
        if request.opted_out:
            return PolicyDecision(Verdict.DROP, "opted_out", "the customer unsubscribed")
        if request.churned:
            return PolicyDecision(Verdict.DROP, "churned", "the customer removed us, left or blocked us")
        if request.expire is not None and request.first_due_at is not None \
                and now > request.first_due_at + request.expire:
            return PolicyDecision(Verdict.DROP, "expired",
                                  f"stale: due {request.first_due_at.astimezone(zone):%m-%d %H:%M}, "
                                  f"expires after {request.expire}")
        closed = channel_verdict(request)
        if closed is not None:
            return closed
        if request.reply:
            return PolicyDecision(Verdict.SEND, "reply", "answers the customer's own action; not counted")
        if request.competing_priority is not None and request.competing_priority > request.priority:
            return PolicyDecision(Verdict.DEFER, "lower_priority",
                                  f"a priority {request.competing_priority} touch is due; this one "
                                  f"(priority {request.priority}) waits", now + timedelta(minutes=1))

        # the platform's quotas: nobody bypasses them
        blocks = quota_blocks(request.channel, request.sent, now, zone)
        bypass = request.triggered_by is not None and rules.guides_may_bypass_caps
        if not bypass:
            blocks += budget_blocks(request)
        # a guide's own trigger is part of the live conversation, so only automatic touches wait it out
        if request.triggered_by is None and request.last_inbound_at is not None \
                and now < request.last_inbound_at + rules.live_conversation:
            blocks.append(Block(request.last_inbound_at + rules.live_conversation, "live_conversation",
                                "the customer is chatting right now; waiting until it has been quiet "
                                f"for {rules.live_conversation}"))
        earliest = max([now] + [until for until, _, _ in blocks])
        until = next_allowed_time(earliest, zone, rules.quiet, request.window, rules.weekdays)
        if until is None:
            return PolicyDecision(Verdict.DROP, "no_allowed_time",
                                  f"the step window {request.window} never falls outside quiet hours {rules.quiet}")
        if until > now:
            local = until.astimezone(zone)
            if blocks:
                _, reason, sentence = max(blocks)
            else:
                reason, sentence = self._window_reason(request)
            return PolicyDecision(Verdict.DEFER, reason, f"{sentence}; deferred to {local:%Y-%m-%d %H:%M} local",
                                  until)
        assisted = "; assisted: the guide confirms it on the platform" if request.channel and \
            request.channel.assisted else ""
        if bypass:
            return PolicyDecision(Verdict.SEND, "guide_bypass", f"caps bypassed by {request.triggered_by}{assisted}")
        return PolicyDecision(Verdict.SEND, "ok", f"within caps, gap, quiet hours and window{assisted}")

    @staticmethod
    def _window_reason(request: TouchRequest) -> tuple[str, str]:
        local = request.now.astimezone(request.zone)
        rules = request.rules
        if rules.quiet.contains(local.time()):
            return "quiet_hours", f"quiet hours {rules.quiet}"
        if local.weekday() not in rules.weekdays:
            return "weekday", f"{WEEKDAYS[local.weekday()]} is not a sending day"
        return "outside_window", f"outside the send window {request.window}"


GROUP_POSTS_PER_DAY = 1  # scheduled posts (leaderboards, notices) per group per local day: a group is not a feed


def group_post_decision(now: datetime, zone: ZoneInfo, rules: Rules, posted_today: int) -> PolicyDecision:
    """Whether a scheduled group post (not an answer) may go out now: quiet hours, sending days, and at
    most GROUP_POSTS_PER_DAY per group per local day."""
    if posted_today >= GROUP_POSTS_PER_DAY:
        tomorrow = local_midnight(now.astimezone(zone).date() + timedelta(days=1), zone)
        return PolicyDecision(Verdict.DEFER, "group_cap_day", f"{posted_today} scheduled post(s) in this group "
                                                              f"today (cap {GROUP_POSTS_PER_DAY})", tomorrow)
    until = next_allowed_time(now, zone, rules.quiet, None, rules.weekdays)
    if until is None:
        return PolicyDecision(Verdict.DROP, "no_allowed_time", "no sending day is configured")
    if until > now:
        return PolicyDecision(Verdict.DEFER, "quiet_hours", f"quiet hours {rules.quiet}; deferred to "
                                                            f"{until.astimezone(zone):%Y-%m-%d %H:%M} local", until)
    return PolicyDecision(Verdict.SEND, "ok", "outside quiet hours, within the group's daily posts")
