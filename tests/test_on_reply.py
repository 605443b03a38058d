"""Journeys that listen: a day-3 offer answered with a question, with "no", or with silence; interests
learned from what the customer asked; a guide's take-over pausing the journey and its release resuming it."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.library import ScriptLibrary
from storage.models import Contact, Enrolment, TouchLog
from tests.harness import SCRIPTS, Harness
from tests.lifecycle import contact_of
from tests.lifecycle_scripts import scripts_with


@pytest.fixture
async def listening(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await Harness.create(db_url, start, scripts_with(tmp_path, "gift_offer", new_customer=False))
    try:
        yield h
    finally:
        await h.close()


async def branches(h: Harness, customer: str) -> list[str]:
    async with h.app.db.session() as session:
        rows = (await session.scalars(select(TouchLog).join(Contact, Contact.id == TouchLog.contact_id).where(
            Contact.external_id == customer, TouchLog.decision == "branched"))).all()
    return [f"{r.journey_id}.{r.step_id} {r.reason} {r.detail}" for r in rows]


def journey_lines(h: Harness, customer: str) -> list[str]:
    """The customer's transcript without the notes to their guide: what the journey sent."""
    return [line for line in h.transcript(customer) if "导购" not in line]


async def test_a_question_about_shipping_branches_to_its_step(listening: Harness) -> None:
    h = listening
    await h.customer_adds_guide("lin", "林小姐")
    await h.run_until(h.start + timedelta(days=3, minutes=45))
    await h.customer_says("lin", "包邮吗？")
    await h.run_until(h.start + timedelta(days=35))
    assert h.transcript("lin") == [
        "d0 10:15 问候：林小姐您好，我是小美",
        "d3 10:15 见面礼：林小姐，回复「领取」领取",
        "d3 11:00 答·运费：测试订单满 99 元包邮",   # the FAQ still answers the question …
        "d3 12:00 运费说明：林小姐，见面礼包邮到家",  # … and the offer's branch follows an hour later
        "d30 10:15 第30天：林小姐，欢迎来测试门店坐坐",  # replied after the offer: no day-7 nudge
    ]
    assert await branches(h, "lin") == ["gift_offer.offer shipping_fee on_reply → shipping_detail"]


async def test_silence_gets_the_planned_nudge(listening: Harness) -> None:
    h = listening
    await h.customer_adds_guide("wang", "王先生")
    await h.run_until(h.start + timedelta(days=35))
    assert h.transcript("wang") == [
        "d0 10:15 问候：王先生您好，我是小美",
        "d3 10:15 见面礼：王先生，回复「领取」领取",
        "d7 10:15 第7天提醒：王先生，见面礼还给您留着",
        "d30 10:15 第30天：王先生，欢迎来测试门店坐坐",
    ]
    assert await branches(h, "wang") == []


async def test_no_thanks_ends_the_journey_without_a_hand_off(listening: Harness) -> None:
    h = listening
    await h.customer_adds_guide("zhao", "赵女士")
    await h.run_until(h.start + timedelta(days=3, hours=2))
    await h.customer_says("zhao", "不用了")
    await h.run_until(h.start + timedelta(days=35))
    assert h.transcript("zhao") == [
        "d0 10:15 问候：赵女士您好，我是小美",
        "d3 10:15 见面礼：赵女士，回复「领取」领取",
    ]
    async with h.app.db.session() as session:
        enrolment = await session.scalar(select(Enrolment))
    contact = await contact_of(h, "zhao")
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "branched")
    assert contact.handoff_until is None  # the journey took the reply; nobody was asked


async def test_only_the_next_reply_within_the_window_branches(listening: Harness) -> None:
    h = listening
    await h.customer_adds_guide("qian", "钱女士")
    await h.run_until(h.start + timedelta(days=3, hours=1))
    await h.customer_says("qian", "你好")  # the next reply: a greeting, no branch for it
    await h.run_for(timedelta(hours=1))
    await h.customer_says("qian", "包邮吗")  # not the next reply any more
    await h.run_until(h.start + timedelta(days=6))
    assert not any("运费说明" in line for line in h.transcript("qian"))
    assert await branches(h, "qian") == []


async def test_asking_about_a_topic_sets_the_interest_day30_targets(listening: Harness) -> None:
    h = listening
    await h.customer_adds_guide("sun", "孙小姐")
    await h.run_for(timedelta(days=1))
    await h.customer_says("sun", "敏感肌能用吗")
    await h.run_until(h.start + timedelta(days=35))
    assert h.transcript("sun")[-1] == "d30 10:15 第30天·敏感肌：孙小姐，给您一份测试舒缓清单"
    contact = await contact_of(h, "sun")
    assert contact.interests == ["sensitive"]


async def test_a_take_over_pauses_the_journey_and_release_shifts_what_is_left(harness: Harness) -> None:
    h = harness
    await h.customer_adds_guide("wang", "王先生")
    await h.run_until(h.start + timedelta(days=1, minutes=-15))  # d1 10:00
    await h.guide_says("/handoff wang")
    await h.run_for(timedelta(hours=1))  # day-1 care (due 10:15) waits while 小美 has the chat
    assert not any("第1天关怀" in line for line in h.transcript("wang"))
    await h.guide_says("/release wang")  # d1 11:00: paused one hour
    await h.run_until(h.start + timedelta(days=35))
    journey = journey_lines(h, "wang")
    assert journey == [
        "d0 10:15 问候：王先生您好，我是测试品牌的小美",
        "d1 11:15 第1天关怀：王先生，加上您的第一天",  # each later step an hour later
        "d3 11:15 见面礼" + journey[2].removeprefix("d3 11:15 见面礼"),
        "d7 11:15 第7天提醒：王先生，见面礼还给您留着",
        "d30 11:15 第30天：王先生，欢迎来测试门店坐坐",
    ]


def test_check_names_the_line_of_a_branch_to_nowhere(tmp_path: Path) -> None:
    root = scripts_with(tmp_path, "gift_offer", new_customer=False)
    path = root / "journeys" / "gift_offer.yaml"
    text = path.read_text(encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "shipping_fee: shipping_detail" in row)
    library = ScriptLibrary(root, {"name": "测试品牌", "store": "测试门店"})

    path.write_text(text.replace("shipping_fee: shipping_detail", "shipping_fee: shiping_detail"), encoding="utf-8")
    assert [str(p) for p in library.reload()] == [
        f"{path}:{line}: step 'offer' branch shipping_fee goes to 'shiping_detail', which is not a step of this "
        "journey — use a step id, end or handoff"]

    path.write_text(text.replace("negative: end", "negatve: end"), encoding="utf-8")
    negative = next(i for i, row in enumerate(text.splitlines(), 1) if "negative: end" in row)
    assert [str(p) for p in library.reload()] == [
        f"{path}:{negative}: step 'offer' on_reply branch 'negatve' is not an FAQ intent id — use an id from "
        "faq.yaml or question, positive, negative, opt_out"]


async def test_simulate_shows_branches_purchases_points_levels_and_transfers(start: datetime, tmp_path: Path) -> None:
    from bot.config_loader import load_config
    from bot.simulate import Simulation
    from tests.harness import CONFIG

    root = scripts_with(tmp_path, "gift_offer", "handover", new_customer=False)
    offer = root / "journeys" / "gift_offer.yaml"  # the engaged customer asks on day 5: listen for three days
    offer.write_text(offer.read_text(encoding="utf-8").replace("within: 2d", "within: 3d"), encoding="utf-8")
    (root / "loyalty.yaml").write_text((SCRIPTS / "loyalty.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    customers = await Simulation(load_config(CONFIG, env={}), root, 35, 7, 1, start).run()
    lines = {c.kind: c.lines for c in customers}
    assert {"purchased", "points", "level_up"} <= {line["kind"] for line in lines["buys"]}
    (moved,) = [line for line in lines["transferred"] if line["kind"] == "transferred"]
    assert moved["text"] == "xiaomei → sim_colleague" and moved["reason"] == "accepted"
    assert any(line["step"] == "introduce" and line["kind"] == "sent" for line in lines["transferred"])
    (branch,) = [line for line in lines["engaged"] if line["kind"] == "branched"]
    assert (branch["journey"], branch["step"], branch["reason"], branch["text"]) == (
        "gift_offer", "offer", "question", "on_reply → handoff")


async def test_a_take_over_that_times_out_resumes_at_its_end(harness: Harness) -> None:
    h = harness
    await h.customer_adds_guide("wang", "王先生")
    await h.run_until(h.start + timedelta(days=1, minutes=-15))  # d1 10:00
    await h.guide_says("/handoff wang")  # nobody releases it: the bot has the chat again after 2 h
    await h.run_until(h.start + timedelta(days=4))
    assert journey_lines(h, "wang")[1:3] == [
        "d1 12:15 第1天关怀：王先生，加上您的第一天",
        "d3 12:15 见面礼" + h.transcript("wang")[-1].removeprefix("d3 12:15 见面礼"),
    ]


async def test_two_take_overs_add_up(harness: Harness) -> None:
    h = harness
    await h.customer_adds_guide("wang", "王先生")
    for day in (1, 2):
        await h.run_until(h.start + timedelta(days=day, minutes=-15))  # 10:00
        await h.guide_says("/handoff wang")
        await h.run_for(timedelta(hours=1))
        await h.guide_says("/release wang")  # 11:00
    await h.run_until(h.start + timedelta(days=4))
    journey = journey_lines(h, "wang")
    assert [line[:8] for line in journey] == ["d0 10:15", "d1 11:15", "d3 12:15"]  # the day-3 gift: two hours on
