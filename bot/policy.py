"""TouchPolicy: whether a proactive message may go out now, later, or not at all — and why."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from zoneinfo import ZoneInfo

from bot.durations import DailyWindow


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
class TouchRequest:
    """Everything the policy needs about one touch; built by the scheduler from storage."""

    now: datetime
    zone: ZoneInfo
    opted_out: bool
    churned: bool
    reply: bool = False
    window: DailyWindow | None = None


def next_allowed_time(now: datetime, zone: ZoneInfo, quiet: DailyWindow,
                      window: DailyWindow | None) -> datetime | None:
    """The earliest moment ≥ now outside quiet hours and inside the step's window (pure)."""
    local = now.astimezone(zone)

    def allowed(moment: datetime) -> bool:
        t = moment.astimezone(zone).time()
        return not quiet.contains(t) and (window is None or window.contains(t))

    if allowed(local):
        return now
    candidates = []
    for offset in range(3):
        day: date = local.date() + timedelta(days=offset)
        for boundary in (quiet.end, window.start if window else None):
            if boundary is not None:
                candidates.append(datetime.combine(day, boundary, tzinfo=zone))
    for moment in sorted(c for c in candidates if c > local):
        if allowed(moment):
            return moment.astimezone(timezone.utc)
    return None


class TouchPolicy:
    """One gate for every proactive message."""

    def __init__(self, quiet: DailyWindow) -> None:
        self.quiet = quiet

    def decide(self, request: TouchRequest) -> PolicyDecision:
        if request.opted_out:
            return PolicyDecision(Verdict.DROP, "opted_out", "the customer unsubscribed")
        if request.churned:
            return PolicyDecision(Verdict.DROP, "churned", "the customer removed us or left")
        if request.reply:
            return PolicyDecision(Verdict.SEND, "reply", "answers the customer's own action")
        until = next_allowed_time(request.now, request.zone, self.quiet, request.window)
        if until is None:
            return PolicyDecision(Verdict.DROP, "no_allowed_time",
                                  f"the step window {request.window} lies inside quiet hours {self.quiet}")
        if until > request.now:
            local = until.astimezone(request.zone)
            inside_quiet = self.quiet.contains(request.now.astimezone(request.zone).time())
            reason = "quiet_hours" if inside_quiet else "outside_window"
            what = f"quiet hours {self.quiet}" if inside_quiet else f"outside the send window {request.window}"
            return PolicyDecision(Verdict.DEFER, reason, f"{what}; deferred to {local:%Y-%m-%d %H:%M} local",
                                  until)
        return PolicyDecision(Verdict.SEND, "ok", "within all limits")
