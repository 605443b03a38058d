"""The new-customer journey as customers live it, 35 days on the virtual clock."""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bot.library import ScriptLibrary
from storage.models import Contact, Enrolment, Touch
from tests.harness import ROOT, SCRIPTS, Harness

AB_SCRIPTS = ROOT / "tests" / "data" / "ab_scripts"  # A/B steps split 50/50, 90/10 and all-A, sent on add
GIFT = re.compile(r"^见面礼([AB])：")


def gift_line(day_time: str, name: str, arm: str) -> str:
    """The day-3 gift as the customer sees it in arm A or B (tests/data/scripts/journeys/new_customer.yaml)."""
    return f"{day_time} 见面礼{arm}：{name}，送您「测试礼{arm}」，回复「领取」领取"


async def recorded_arm(h: Harness, customer: str, journey: str = "new_customer", step: str = "day3_followup") -> str:
    """The arm stored on the customer's sent touch of `step`."""
    async with h.app.db.session() as session:
        variant = await session.scalar(select(Touch.variant).join(Contact, Contact.id == Touch.contact_id).where(
            Contact.external_id == customer, Touch.journey_id == journey, Touch.step_id == step,
            Touch.status == "sent"))
    assert variant is not None, f"{customer} got no {journey}.{step}"
    return variant


def received_arm(h: Harness, customer: str) -> str:
    """The arm of the day-3 gift the customer actually received, read from the text on their screen."""
    (arm,) = [m.group(1) for t in h.texts(customer) if (m := GIFT.match(t))]
    return arm


async def test_engaged_customer_35_days(harness: Harness) -> None:
    await harness.customer_adds_guide("lin", "林小姐", source="门店扫码", interests=("sensitive",))
    await harness.run_for(timedelta(minutes=10))
    await harness.customer_says("lin", "你好呀")
    await harness.run_for(timedelta(days=2, hours=3))
    await harness.customer_says("lin", "包邮吗？")
    await harness.run_for(timedelta(days=1, hours=3))
    await harness.customer_says("lin", "领取")
    await harness.run_until(harness.start + timedelta(days=35))

    arm = await recorded_arm(harness, "lin")
    assert harness.transcript("lin") == [
        "d0 10:15 问候：林小姐您好，我是测试品牌的小美",
        "d0 10:25 答·打招呼：你好，我是测试顾问",
        "d1 10:15 第1天关怀：林小姐，加上您的第一天",
        "d2 10:00 入群邀请：林小姐，欢迎加入「测试会员群」",  # the next day: 20 h gap after day-1 care
        "d2 13:25 答·运费：测试订单满 99 元包邮",
        gift_line("d3 10:15", "林小姐", arm),  # the arm recorded on the touch is the text she got
        "d3 16:25 答·领取：测试见面礼已登记，请发地址",
        "d30 10:15 第30天·敏感肌：林小姐，给您一份测试舒缓清单",
    ]
    assert harness.texts("lin")[0] == ("问候：林小姐您好，我是测试品牌的小美\n"
                                       "感谢您在门店扫码添加我。这是测试问候的第二行。")
    # replied after day 3, so no day-7 nudge
    assert "new_customer.day7_followup" not in await harness.steps_sent("lin")


async def test_silent_customer_35_days(harness: Harness) -> None:
    await harness.customer_adds_guide("wang", "王先生")
    await harness.run_until(harness.start + timedelta(days=35))

    arm = await recorded_arm(harness, "wang")
    assert harness.transcript("wang") == [
        "d0 10:15 问候：王先生您好，我是测试品牌的小美",
        "d1 10:15 第1天关怀：王先生，加上您的第一天",
        gift_line("d3 10:15", "王先生", arm),
        "d7 10:15 第7天提醒：王先生，见面礼还给您留着",
        "d30 10:15 第30天：王先生，欢迎来测试门店坐坐",
    ]
    assert harness.texts("wang")[0] == "问候：王先生您好，我是测试品牌的小美\n这是测试问候的第二行。"  # no source
    # never replied and not high-value: not invited to the group
    assert await harness.steps_sent("wang") == [
        "new_customer.greeting", "new_customer.day1_care", "new_customer.day3_followup",
        "new_customer.day7_followup", "new_customer.day30_interest",
    ]


async def test_high_value_customer_is_invited_without_replying(harness: Harness) -> None:
    await harness.customer_adds_guide("zhao", "赵女士", tags=("high_value",))
    await harness.run_for(timedelta(days=2))
    assert "new_customer.group_invite" in await harness.steps_sent("zhao")
    assert harness.transcript("zhao") == [
        "d0 10:15 问候：赵女士您好，我是测试品牌的小美",
        "d1 10:15 第1天关怀：赵女士，加上您的第一天",
        "d2 10:00 入群邀请：赵女士，欢迎加入「测试会员群」",  # due d1 14:15; 20 h after day-1 care, in the window
    ]


async def test_ab_variant_is_recorded_and_is_what_the_customer_received(harness: Harness) -> None:
    for i in range(12):
        await harness.customer_adds_guide(f"c{i}", f"顾客{i}")
    await harness.run_for(timedelta(days=4))
    gifts = {harness.texts(f"c{i}")[-1].split("「")[1].split("」")[0] for i in range(12)}
    assert gifts == {"测试礼A", "测试礼B"}  # both arms in use

    async with harness.app.db.session() as session:
        touches = (await session.scalars(select(Touch).where(Touch.step_id == "day3_followup"))).all()
        enrolments = {e.id: e for e in (await session.scalars(select(Enrolment))).all()}
        customers = {c.id: c.external_id for c in (await session.scalars(select(Contact))).all()}
    assert len(touches) == 12
    for touch in touches:
        assert touch.variant in ("A", "B")
        assert enrolments[touch.enrolment_id].variants["day3_followup"] == touch.variant
        customer = customers[touch.contact_id]
        assert received_arm(harness, customer) == touch.variant
        assert f"「测试礼{touch.variant}」" in harness.texts(customer)[-1]


async def test_a_customer_keeps_their_arm_across_a_restart_and_a_rerun(db_url: str, start: datetime,
                                                                        tmp_path: Path) -> None:
    names = [f"r{i}" for i in range(20)]

    # one run with a restart between enrolment and the day-3 gift …
    first = await Harness.create(db_url, start, SCRIPTS, worker_id="process-1")
    for name in names:
        await first.customer_adds_guide(name, name)
    await first.run_for(timedelta(days=1, hours=2))
    stopped_at = first.clock.now()
    await first.close()
    second = await Harness.create(db_url, stopped_at, SCRIPTS, worker_id="process-2")
    try:
        await second.run_until(start + timedelta(days=4))
        restarted = {name: received_arm(second, name) for name in names}
        assert restarted == {name: await recorded_arm(second, name) for name in names}
    finally:
        await second.close()

    # … and a second, uninterrupted run of the same customers on a fresh database
    rerun = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'rerun.db'}", start, SCRIPTS)
    try:
        for name in names:
            await rerun.customer_adds_guide(name, name)
        await rerun.run_until(start + timedelta(days=4))
        again = {name: received_arm(rerun, name) for name in names}
    finally:
        await rerun.close()

    assert again == restarted
    assert set(restarted.values()) == {"A", "B"}  # not trivially the same: both arms occur


async def test_weights_set_the_share_of_each_arm(db_url: str, start: datetime) -> None:
    h = await Harness.create(db_url, start, AB_SCRIPTS, delivery={"test": {"per_second": 1000, "burst": 1000}})
    try:
        customers = [f"s{i:03d}" for i in range(200)]
        for customer in customers:
            await h.customer_adds_guide(customer, customer)
        await h.run_for(timedelta(minutes=1))  # every delivery is out
        shares: dict[str, Counter[str]] = {}
        for journey, label in (("ab_even", "五五分"), ("ab_skewed", "九一分"), ("ab_single", "全给A")):
            arms: Counter[str] = Counter()
            for customer in customers:
                arm = await recorded_arm(h, customer, journey, "offer")
                assert f"{label}·{arm}：{customer}" in h.texts(customer)  # recorded arm = text received
                arms[arm] += 1
            shares[journey] = arms
    finally:
        await h.close()

    assert 0.35 <= shares["ab_even"]["A"] / 200 <= 0.65 and shares["ab_even"].keys() == {"A", "B"}
    assert 0.80 <= shares["ab_skewed"]["A"] / 200 <= 0.97 and shares["ab_skewed"]["B"] > 0
    assert shares["ab_single"] == {"A": 200}


def test_a_zero_weight_is_refused(tmp_path: Path) -> None:
    """So `100/0` is written as a single arm (tests/data/ab_scripts/journeys/single.yaml)."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    text = (AB_SCRIPTS / "journeys" / "even.yaml").read_text(encoding="utf-8")
    (journeys / "even.yaml").write_text(text.replace("B: {weight: 50,", "B: {weight: 0,"), encoding="utf-8")
    problems = [str(p) for p in ScriptLibrary(tmp_path, {"name": "测试品牌"}).reload()]
    assert len(problems) == 1 and "variant B weight must be a whole number > 0, got 0" in problems[0]
