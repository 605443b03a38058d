"""The new-customer journey as customers live it, 35 days on the virtual clock."""
from __future__ import annotations

from datetime import timedelta

from tests.harness import Harness


async def test_engaged_customer_35_days(harness: Harness) -> None:
    await harness.customer_adds_guide("lin", "林小姐", source="门店扫码", interests=("sensitive",))
    await harness.run_for(timedelta(minutes=10))
    await harness.customer_says("lin", "你好呀")
    await harness.run_for(timedelta(days=2, hours=3))
    await harness.customer_says("lin", "包邮吗？")
    await harness.run_for(timedelta(days=1, hours=3))
    await harness.customer_says("lin", "领取")
    await harness.run_until(harness.start + timedelta(days=35))

    assert harness.transcript("lin") == [
        "d0 10:15 林小姐您好～我是山茶集的专属护肤顾问小美 🌸",
        "d0 10:25 你好～我是您的专属顾问，有任何护肤或订单问题都可以直接问我哦。",
        "d1 10:15 林小姐，昨天加上您很开心～",
        "d2 10:00 林小姐，我们有个小而精的会员群「山茶集·护肤研究所」，",  # the next day: 20 h gap after day-1 care
        "d2 13:25 全国满 99 元包邮（港澳台及偏远地区除外），不满 99 元运费 8 元。",
        harness.transcript("lin")[5],  # day 3 gift: variant A or B, checked below
        "d3 16:25 收到～见面礼已为您登记，请把收货人、电话和地址发给我，我们 48 小时内寄出 🎁",
        "d30 10:15 林小姐，换季敏感肌容易泛红，给您整理了一份「舒缓修护三步法」，需要的话回我一声就发您～",
    ]
    assert harness.transcript("lin")[5].startswith("d3 10:15 林小姐，")
    # replied after day 3, so no day-7 nudge
    assert "new_customer.day7_followup" not in await harness.steps_sent("lin")


async def test_silent_customer_35_days(harness: Harness) -> None:
    await harness.customer_adds_guide("wang", "王先生")
    await harness.run_until(harness.start + timedelta(days=35))

    assert harness.transcript("wang") == [
        "d0 10:15 王先生您好～我是山茶集的专属护肤顾问小美 🌸",
        "d1 10:15 王先生，昨天加上您很开心～",
        harness.transcript("wang")[2],
        "d7 10:15 王先生，不知道您最近是不是比较忙～见面礼还给您留着，",
        "d30 10:15 王先生，认识您一个月啦～山茶集上海静安嘉里中心店本月有免费肌肤检测，欢迎来店里坐坐，也可以直接问我护肤问题。",
    ]
    assert harness.transcript("wang")[2].startswith("d3 10:15 王先生，")
    # never replied and not high-value: not invited to the group
    assert await harness.steps_sent("wang") == [
        "new_customer.greeting", "new_customer.day1_care", "new_customer.day3_followup",
        "new_customer.day7_followup", "new_customer.day30_interest",
    ]


async def test_high_value_customer_is_invited_without_replying(harness: Harness) -> None:
    await harness.customer_adds_guide("zhao", "赵女士", tags=("high_value",))
    await harness.run_for(timedelta(days=2))
    assert "new_customer.group_invite" in await harness.steps_sent("zhao")


async def test_ab_variant_is_deterministic_and_recorded(harness: Harness) -> None:
    for i in range(12):
        await harness.customer_adds_guide(f"c{i}", f"顾客{i}")
    await harness.run_for(timedelta(days=4))
    gifts = {harness.texts(f"c{i}")[-1].split("「")[1].split("」")[0] for i in range(12)}
    assert gifts == {"山茶花修护精华 5ml 体验装", "山茶花润唇膏 旅行装"}  # both arms in use

    from sqlalchemy import select

    from storage.models import Enrolment, Touch

    async with harness.app.db.session() as session:
        touches = (await session.scalars(select(Touch).where(Touch.step_id == "day3_followup"))).all()
        enrolments = {e.id: e for e in (await session.scalars(select(Enrolment))).all()}
    for touch in touches:
        assert touch.variant in ("A", "B")
        assert enrolments[touch.enrolment_id].variants["day3_followup"] == touch.variant
        journey = harness.app.library.journeys["new_customer"]
        assert journey.step("day3_followup").choose_variant("new_customer", touch.contact_id).name == touch.variant
