"""Points and levels (积分与等级): earned, capped, redeemed and expired as a ledger; a level-up starts its
journey; 「查积分」 answers with the customer's own points; `siyu check` places loyalty.yaml mistakes."""
from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.business_events import EventRejected
from bot.check import check_everything
from bot.loyalty import add_months
from tests.harness import CONFIG, SCRIPTS, Harness
from tests.lifecycle import contact_of, events_of, ledger, lifecycle_harness


@pytest.fixture
async def h(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Harness]:
    async with lifecycle_harness(db_url, start, tmp_path) as harness:
        yield harness


def purchase(event_id: str, customer: str, amount: float) -> dict[str, object]:
    return {"event_id": event_id, "type": "purchase", "customer": {"channel": "test", "id": customer},
            "data": {"order_id": event_id.upper(), "amount": amount}}


async def test_points_are_earned_capped_redeemed_and_expire_first_in_first_out(h: Harness) -> None:
    events = events_of(h)
    await h.customer_adds_guide("lin", "林小姐")
    await events.receive(purchase("o1", "lin", 199.0))
    for text in ("这款面霜好用吗", "大家用过精华吗", "我觉得很滋润呢", "明天还有活动吗", "好的"):
        await h.member_says_in_group("lin", "g1", text)  # the 4th is over the daily cap, 「好的」 is too short
        await h.run_for(timedelta(minutes=5))
    await h.run_for(timedelta(days=1))
    await h.member_says_in_group("lin", "g1", "今天的直播几点开始")
    await h.run_for(timedelta(days=1))
    await events.receive({"event_id": "r1", "type": "redeem", "customer": {"channel": "test", "id": "lin"},
                          "data": {"points": 100}})
    with pytest.raises(EventRejected, match="^data.points 500 is more than the customer's balance"):
        await events.receive({"event_id": "r2", "type": "redeem", "customer": {"channel": "test", "id": "lin"},
                              "data": {"points": 500}})

    await h.run_until(add_months(h.start, 12) + timedelta(days=2))
    await h.member_says_in_group("lin", "g1", "一年了还在群里呀")

    assert await ledger(h, "lin") == [
        "d0 purchase +199 订单 O1 消费 199 元",
        "d0 group +10 群互动",
        "d0 group +10 群互动",
        "d0 group +10 群互动",  # 30 a day at most
        "d1 group +10 群互动",
        "d2 redeem -100 兑换 100 积分（抵 10 元）",  # taken from the oldest points: 99 of the order's are left
        "d365 expired -99 99 积分到期（先到先扣）",  # twelve months on, oldest first
        "d365 expired -10 10 积分到期（先到先扣）",
        "d365 expired -10 10 积分到期（先到先扣）",
        "d365 expired -10 10 积分到期（先到先扣）",
        "d366 expired -10 10 积分到期（先到先扣）",
        "d367 group +10 群互动",
    ]
    async with h.app.db.session() as session:
        contact = await contact_of(h, "lin")
        standing = await h.app.engine.contacts.points.standing(session, contact, h.clock.now())
    assert standing is not None and (standing.balance, standing.level.name) == (10, "普通")


async def test_a_level_up_starts_its_journey(h: Harness) -> None:
    await h.customer_adds_guide("lin", "林小姐")
    await h.run_for(timedelta(hours=1, minutes=45))  # 12:00
    await events_of(h).receive(purchase("o1", "lin", 350.0))  # 350 points: 银卡 needs 300
    await h.run_for(timedelta(days=2))
    assert h.transcript("lin") == [
        "d0 10:15 问候：林小姐您好",
        "d0 12:00 升级银卡：林小姐，您现在是银卡，积分 350",  # the level-up outranks the thank-you …
        "d1 09:00 谢谢惠顾：林小姐，您现在有 350 积分（银卡）",  # … which waits for the next day's touch
    ]
    assert (await contact_of(h, "lin")).level == "银卡"
    await events_of(h).receive(purchase("o2", "lin", 10.0))  # still 银卡: nothing starts again
    await h.run_for(timedelta(days=2))
    assert len(h.transcript("lin")) == 3


async def test_check_points_answers_with_the_customers_own_balance(h: Harness) -> None:
    events = events_of(h)
    await h.customer_adds_guide("lin", "林小姐")
    await events.receive(purchase("o1", "lin", 120.0))
    await h.run_until(h.start + timedelta(days=340))
    await events.receive(purchase("o2", "lin", 80.0))
    await h.customer_says("lin", "查积分")
    assert h.texts("lin")[-1] == (
        "您当前有 200 积分（可抵 20 元），会员等级：普通。\n"
        "即将到期：120 积分于 2027-03-02 到期，请尽快使用。\n"
        "升级到银卡需要累计 300 积分或累计消费 500 元（您已累计 200 积分、消费 200 元）。"
    )


def test_siyu_check_places_loyalty_mistakes_on_their_lines(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts)
    text = (SCRIPTS / "loyalty.yaml").read_text(encoding="utf-8")
    broken = (text.replace("group_daily_cap: 30", "group_daily_cap: 很多")
                  .replace("    points: 1000", "    points: 200")
                  .replace("  - name: 钻石\n    points: 5000\n", "  - name: 钻石\n"))
    (scripts / "loyalty.yaml").write_text(broken, encoding="utf-8")
    problems = [str(p).removeprefix(str(scripts) + "/") for p in check_everything(CONFIG, scripts)]
    assert problems == [
        "loyalty.yaml:6: earn group_daily_cap must be a whole number ≥ 0, got '很多'",
        "loyalty.yaml:23: level '金卡' points 200 must be higher than the level below (300)",
        "loyalty.yaml:26: level '钻石' needs points: or spend: (how it is reached)",
    ]
    assert check_everything(CONFIG, SCRIPTS) == []
    (scripts / "loyalty.yaml").write_text(text + "balance_intent: check_points\n", encoding="utf-8")
    problems = [str(p).removeprefix(str(scripts) + "/") for p in check_everything(CONFIG, scripts)]
    assert problems == ["loyalty.yaml:1: balance_intent 'check_points' is not an intent of faq.yaml — add it there "
                        "(e.g. examples: [查积分]) or remove balance_intent"]


async def test_the_monthly_leaderboard_is_posted_once_in_each_group_with_points(h: Harness) -> None:
    events = events_of(h)
    for customer, name in (("lin", "林小姐"), ("wang", "王女士"), ("zhao", "赵先生"), ("qian", "钱女士")):
        await h.customer_adds_guide(customer, name)
    await h.member_joins_group("wang", "g1")
    await h.member_joins_group("qian", "g1")
    await h.member_joins_group("qian", "g2")  # nobody in g2 earned anything: no board there
    await h.member_says_in_group("lin", "g1", "这款面霜好用吗")
    await h.member_says_in_group("zhao", "g1", "周末门店有活动吗")
    await events.receive(purchase("o1", "lin", 199.0))
    await events.receive(purchase("o2", "wang", 500.0))
    await h.run_until(datetime(2026, 4, 1, 9, 30, tzinfo=h.start.tzinfo))
    assert not any("积分榜" in line for line in h.group_log("g1"))  # not before its time

    await h.run_until(datetime(2026, 4, 2, 12, 0, tzinfo=h.start.tzinfo))
    boards = [line for line in h.group_log("g1") if "积分榜" in line]
    assert boards == ["say: 【3月积分榜】\n1. 王** 500 积分\n2. 林** 209 积分\n3. 赵** 10 积分\n"
                      "发言、邀请好友、购物都能得积分，这个月继续加油！"]
    assert not any("积分榜" in line for line in h.group_log("g2"))


def test_scheduled_group_posts_keep_to_quiet_hours_and_one_a_day() -> None:
    from zoneinfo import ZoneInfo

    from bot.config import PolicySettings
    from bot.policy import Rules, Verdict, group_post_decision

    zone = ZoneInfo("Asia/Shanghai")
    rules = Rules.from_settings(PolicySettings())
    morning = datetime(2026, 4, 1, 10, 0, tzinfo=zone)
    assert group_post_decision(morning, zone, rules, posted_today=0).verdict is Verdict.SEND
    busy = group_post_decision(morning, zone, rules, posted_today=1)
    assert (busy.verdict, busy.reason, busy.until) == (Verdict.DEFER, "group_cap_day",
                                                       datetime(2026, 4, 2, tzinfo=zone))
    night = group_post_decision(datetime(2026, 4, 1, 23, 0, tzinfo=zone), zone, rules, posted_today=0)
    assert (night.verdict, night.until) == (Verdict.DEFER, datetime(2026, 4, 2, 9, 0, tzinfo=zone))


async def test_inviting_a_friend_who_joins_earns_points_once(h: Harness) -> None:
    await h.customer_adds_guide("lin", "林小姐")
    await events_of(h).receive({"event_id": "p1", "type": "profile", "customer": {"channel": "test", "id": "lin"},
                                "data": {"member_id": "M001"}})
    await h.customer_adds_guide("zhou", "周先生", source="invite:M001")  # scanned 林小姐's invitation code
    await h.customer_removes_guide("zhou")
    await h.customer_adds_guide("zhou", "周先生", source="invite:M001")  # coming back is not a second invite
    assert await ledger(h, "lin") == ["d0 invite +50 邀请好友 周先生 加入"]
