"""Churn and win-back: the guide gets one 流失提醒 with the customer's history, managers get a record,
win-back tries only where the platform still permits contact, and silent customers become dormant."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.business_events import BusinessEvents
from bot.channel_rules import reachable_after_removal
from bot.events import Event, EventKind, Profile
from storage import repo
from storage.models import Enrolment
from tests.harness import Harness, RecordingTransport
from tests.lifecycle import lifecycle_scripts
from tests.test_wecom import GUIDE, WeComWorld, add_contact_xml, wecom_world


@pytest.fixture
async def wecom(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[WeComWorld]:
    async with wecom_world(db_url, start, lifecycle_scripts(tmp_path)) as world:
        yield world


def deleted_xml(customer: str, change: str = "del_follow_user") -> str:
    return add_contact_xml(customer).replace("add_external_contact", change)


def test_win_back_may_only_try_where_the_platform_still_permits_contact() -> None:
    assert not reachable_after_removal("wecom")     # a customer who deleted the guide cannot be messaged
    assert not reachable_after_removal("telegram")  # nor a user who blocked the bot
    assert reachable_after_removal("webchat")       # the page keeps the conversation for their return


async def test_the_guide_gets_one_churn_alert_when_a_wecom_customer_deletes_them(wecom: WeComWorld) -> None:
    h = wecom.h
    assert await wecom.post(add_contact_xml("wmLOST0001", state="门店扫码")) == 200
    await h.app.tick()
    await h.run_for(timedelta(days=2))
    await BusinessEvents(h.app.db, h.app.engine.contacts, h.clock).receive(
        {"event_id": "o1", "type": "purchase", "customer": {"channel": "wecom", "id": "wmLOST0001"},
         "data": {"order_id": "W1", "amount": 99.0}})
    await h.run_for(timedelta(days=3))
    sent_before = len(wecom.fake.called("/externalcontact/add_msg_template"))

    assert await wecom.post(deleted_xml("wmLOST0001")) == 200
    await h.app.tick()
    assert await wecom.post(deleted_xml("wmLOST0001", "del_external_contact")) == 200  # the guide deletes too
    await h.app.tick()
    await h.run_for(timedelta(days=3))

    alerts = [m["text"]["content"] for m in wecom.fake.called("/message/send")
              if m.get("touser") == GUIDE and m["text"]["content"].startswith("【流失提醒】")]
    assert alerts == [
        "【流失提醒】客户 客户0001（#1）删除了好友或离开。\n"
        "来源：门店扫码；添加于 2026-03-02（5 天）\n"
        "互动：发言 0 次；标签：high_value\n"
        "消费 1 笔共 99 元；积分 99，等级 普通\n"
        "已结束旅程：无\n"  # every step had been sent
        "平台已不允许再联系该客户，挽回旅程不会发送。"
    ]
    # the win-back journey never tried: nothing more was handed to the guide to send
    assert len(wecom.fake.called("/externalcontact/add_msg_template")) == sent_before
    async with h.app.db.session() as session:
        (record,) = await repo.churn_records(session)
        win_back = await session.scalar(select(Enrolment).where(Enrolment.journey_id == "win_back"))
    assert (record.channel, record.guide_key, record.reachable) == ("wecom", "xiaomei", False)
    assert record.summary.startswith("来源：门店扫码") and win_back is None


async def test_win_back_starts_where_the_customer_can_still_be_reached(db_url: str, start: datetime,
                                                                       tmp_path: Path) -> None:
    h = await Harness.create(db_url, start, lifecycle_scripts(tmp_path))
    webchat = RecordingTransport(channel="webchat")
    h.app.add_transport(webchat)
    try:
        await h.app.handle(Event(EventKind.CONTACT_ADDED, "webchat", "visitor-7", h.clock.now(),
                                 profile=Profile(name="周先生")))
        await h.run_for(timedelta(days=5))
        await h.app.handle(Event(EventKind.CONTACT_REMOVED, "webchat", "visitor-7", h.clock.now()))
        await h.run_for(timedelta(days=2))
        seen = [d.text for d in webchat.delivered if d.chat_id == "visitor-7"]
        assert seen == ["问候：周先生您好", "第1天关怀：周先生", "第3天优惠：周先生，首单立减",
                        "挽回：周先生，我们想念您，回来领一份小礼物"]
        (alert,) = [t for t in h.texts("guide-xiaomei") if t.startswith("【流失提醒】")]
        assert alert.endswith("挽回旅程：测试挽回 已开始。")

        await h.app.handle(Event(EventKind.CONTACT_ADDED, "webchat", "visitor-8", h.clock.now(),
                                 profile=Profile(name="吴女士")))
        await h.app.handle(Event(EventKind.CONTACT_REMOVED, "webchat", "visitor-8", h.clock.now()))
        await h.run_for(timedelta(hours=2))
        await h.app.handle(Event(EventKind.CONTACT_ADDED, "webchat", "visitor-8", h.clock.now(),
                                 profile=Profile(name="吴女士")))  # back within the day: no win-back message
        await h.run_for(timedelta(days=2))
        assert not any(d.text.startswith("挽回") for d in webchat.delivered if d.chat_id == "visitor-8")
    finally:
        await h.close()


async def test_silent_customers_become_dormant_and_get_the_wake_up_journey(db_url: str, start: datetime,
                                                                           tmp_path: Path) -> None:
    h = await Harness.create(db_url, start, lifecycle_scripts(tmp_path))
    try:
        await h.customer_adds_guide("lin", "林小姐")
        await h.customer_adds_guide("wang", "王女士")
        await h.customer_says("lin", "你好")
        await h.run_until(h.start + timedelta(days=20))
        await h.customer_says("wang", "最近有新品吗")  # wang keeps talking, so stays out of the segment
        await h.run_until(h.start + timedelta(days=30, hours=2))
        assert h.transcript("lin")[-1] == "d30 12:15 好久不见：林小姐，已经 30 天没聊了"
        assert not any("好久不见" in line for line in h.transcript("wang"))
        await h.run_until(h.start + timedelta(days=60))  # once per customer, not every sweep
        assert sum("好久不见" in line for line in h.transcript("lin")) == 1
    finally:
        await h.close()
