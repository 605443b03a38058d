"""TouchPolicy: every proactive message is sent, deferred or dropped for a stated reason."""
from __future__ import annotations

from datetime import datetime, timedelta

from bot.config import Caps, PolicySettings
from bot.policy import Rules, TouchPolicy, TouchRequest, Verdict, budget_blocks
from tests.conftest import SHANGHAI

POLICY = TouchPolicy()
RULES = Rules.from_settings(PolicySettings())


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI)


def decide(now: datetime, **kwargs) -> object:  # type: ignore[no-untyped-def]
    return POLICY.decide(TouchRequest(now=now, zone=SHANGHAI, rules=kwargs.pop("rules", RULES), **kwargs))


def test_within_every_limit_it_sends() -> None:
    decision = decide(at(3, 11), sent=[at(2, 11)])
    assert (decision.verdict, decision.reason) == (Verdict.SEND, "ok")


def test_one_proactive_touch_a_day() -> None:
    decision = decide(at(3, 11), sent=[at(3, 9, 30)], rules=RULES.__class__(**{**RULES.__dict__,
                                                                             "min_gap": timedelta(0)}))
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "cap_day")
    assert decision.until == at(4, 9)  # midnight, then quiet hours end at 09:00


def test_minimum_gap_between_touches() -> None:
    decision = decide(at(3, 11), sent=[at(2, 20)])
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "min_gap")
    assert decision.until == at(3, 16)
    assert "minimum gap 20:00:00" in decision.detail


def test_rolling_week_cap_frees_up_when_the_oldest_ages_out() -> None:
    sent = [at(1, 10), at(2, 10), at(3, 10), at(4, 10)]
    decision = decide(at(6, 11), sent=sent)
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "cap_week")
    assert decision.until == at(8, 10)


def test_calendar_month_cap_in_the_customers_timezone() -> None:
    rules = Rules.from_settings(PolicySettings(caps=Caps(day=None, week=None, month=2), min_gap="0h"))
    decision = decide(at(20, 11), sent=[at(1, 10), at(10, 10)], rules=rules)
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "cap_month")
    assert decision.until == datetime(2026, 4, 1, 9, 0, tzinfo=SHANGHAI)


def test_live_conversation_waits_until_it_has_been_quiet() -> None:
    decision = decide(at(3, 11), last_inbound_at=at(3, 10, 50))
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "live_conversation")
    assert decision.until == at(3, 11, 20)
    assert decide(at(3, 11), last_inbound_at=at(3, 10, 50), triggered_by="xiaomei").verdict is Verdict.SEND


def test_weekdays_and_quiet_hours() -> None:
    weekdays_only = Rules.from_settings(PolicySettings(weekdays=("mon", "tue", "wed", "thu", "fri")))
    saturday = datetime(2026, 3, 7, 11, tzinfo=SHANGHAI)
    decision = decide(saturday, rules=weekdays_only)
    assert (decision.reason, decision.until) == ("weekday", datetime(2026, 3, 9, 9, tzinfo=SHANGHAI))
    assert decide(at(3, 23)).reason == "quiet_hours"


def test_opted_out_churned_and_stale_touches_are_dropped() -> None:
    assert decide(at(3, 11), opted_out=True).reason == "opted_out"
    assert decide(at(3, 11), churned=True).reason == "churned"
    stale = decide(at(3, 11), first_due_at=at(1, 10), expire=timedelta(days=1))
    assert (stale.verdict, stale.reason) == (Verdict.DROP, "expired")


def test_higher_priority_touch_wins_the_budget() -> None:
    decision = decide(at(3, 11), priority=40, competing_priority=60)
    assert (decision.verdict, decision.reason) == (Verdict.DEFER, "lower_priority")
    assert decide(at(3, 11), priority=60, competing_priority=40).verdict is Verdict.SEND


def test_guides_bypass_caps_only_when_allowed_and_it_is_recorded() -> None:
    sent = [at(3, 9, 30)]
    assert decide(at(3, 11), sent=sent, triggered_by="xiaomei").verdict is Verdict.DEFER
    open_rules = Rules.from_settings(PolicySettings(guides_may_bypass_caps=True))
    decision = decide(at(3, 11), sent=sent, triggered_by="xiaomei", rules=open_rules)
    assert (decision.verdict, decision.reason, decision.detail) == (
        Verdict.SEND, "guide_bypass", "caps bypassed by xiaomei")
    assert decide(at(3, 23), sent=sent, triggered_by="xiaomei", rules=open_rules).reason == "quiet_hours"


def test_replies_to_the_customer_never_count() -> None:
    decision = decide(at(3, 23), sent=[at(3, 9), at(3, 10)], reply=True)
    assert (decision.verdict, decision.reason) == (Verdict.SEND, "reply")


def test_per_journey_overrides() -> None:
    policy = PolicySettings(journeys={"occasions": {"min_gap": "4h"}})
    assert Rules.from_settings(policy, "occasions").min_gap == timedelta(hours=4)
    assert Rules.from_settings(policy, "new_customer").min_gap == timedelta(hours=20)
    assert budget_blocks(TouchRequest(now=at(3, 16), zone=SHANGHAI, rules=Rules.from_settings(policy, "occasions"),
                                      sent=[at(2, 10)])) == []


def test_channel_limits_declared_by_the_adapter_are_planned_for() -> None:
    from bot.transport import ChannelLimits

    kf = ChannelLimits(reply_window=timedelta(hours=48), window_messages=5)
    assert decide(at(3, 11), channel=kf, last_inbound_at=at(3, 9)).verdict is Verdict.SEND
    closed = decide(at(6, 11), channel=kf, last_inbound_at=at(3, 9))
    assert (closed.verdict, closed.reason) == (Verdict.DROP, "channel_window_closed")
    full = decide(at(3, 11), channel=kf, last_inbound_at=at(3, 9), window_used=5, reply=True)
    assert (full.verdict, full.reason) == (Verdict.DROP, "channel_window_full")

    wecom = ChannelLimits(assisted=True, per_customer_day=1, month_is_days=True)
    no_caps = Rules.from_settings(PolicySettings(caps=Caps(day=None, week=None, month=None), min_gap="0h",
                                                 guides_may_bypass_caps=True))
    quota = decide(at(3, 11), channel=wecom, sent=[at(3, 9, 30)], rules=no_caps, triggered_by="xiaomei")
    assert (quota.verdict, quota.reason) == (Verdict.DEFER, "channel_quota_day")  # nobody bypasses the platform
    month = decide(at(31, 11), channel=wecom, rules=no_caps,
                   sent=[datetime(2026, 3, d, 10, tzinfo=SHANGHAI) for d in range(1, 32)])
    assert (month.reason, month.until) == ("channel_quota_month", datetime(2026, 4, 1, 9, tzinfo=SHANGHAI))
