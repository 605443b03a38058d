"""A tag starts the journeys triggered by it: from a guide's /tag, and from a tag a guide sets in WeCom."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.models import Contact
from tests.harness import Harness
from tests.test_wecom import GUIDE, WeComWorld, add_contact_xml, wecom_world

WELCOME = """journey: welcome
title: 加好友问候
trigger: contact_added
steps:
  - id: hello
    at: 0m
    reply: true
    say: "测试问候：{{ customer.name }}"
"""
VIP = """journey: vip_care
title: 会员礼遇
trigger: tag_added:vip
steps:
  - id: vip_hello
    at: 0m
    say: "测试会员礼遇：{{ customer.name }}，专属顾问为您服务"
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    journeys = tmp_path / "scripts" / "journeys"
    journeys.mkdir(parents=True)
    (journeys / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    (journeys / "vip.yaml").write_text(VIP, encoding="utf-8")
    return tmp_path / "scripts"


async def test_guide_tag_starts_the_tag_journey(db_url: str, start: datetime, scripts: Path) -> None:
    h = await Harness.create(db_url, start, scripts)
    try:
        await h.customer_adds_guide("lin", "林小姐")
        await h.guide_says("/tag 林小姐 vip")
        await h.guide_says("/tag 林小姐 vip")  # a second time changes nothing
        assert h.transcript("lin") == ["d0 10:15 测试问候：林小姐", "d0 10:15 测试会员礼遇：林小姐，专属顾问为您服务"]
        assert h.texts("guide-xiaomei") == ["已给 林小姐 打上标签 vip", "林小姐 已有标签 vip"]
        assert await h.steps_sent("lin") == ["welcome.hello", "vip_care.vip_hello"]
    finally:
        await h.close()


@pytest.fixture
async def wecom(db_url: str, start: datetime, scripts: Path) -> AsyncIterator[WeComWorld]:
    async with wecom_world(db_url, start, scripts) as world:
        yield world


async def test_a_tag_set_in_wecom_starts_the_tag_journey(wecom: WeComWorld) -> None:
    wecom.fake.contact_tags["wmVIP0001"] = ["high_value"]
    assert await wecom.post(add_contact_xml("wmVIP0001")) == 200
    await wecom.h.app.tick()
    assert wecom.fake.called("/externalcontact/add_msg_template") == []  # nothing to send as the guide yet

    wecom.fake.contact_tags["wmVIP0001"] = ["high_value", "vip"]  # the guide tags her in WeCom
    edited = add_contact_xml("wmVIP0001").replace("add_external_contact", "edit_external_contact")
    assert await wecom.post(edited) == 200
    await wecom.h.app.tick()
    (assisted,) = wecom.fake.called("/externalcontact/add_msg_template")  # proactive on WeCom: the guide sends
    assert assisted["sender"] == GUIDE
    assert assisted["text"]["content"] == "测试会员礼遇：客户0001，专属顾问为您服务"


async def test_app_messages_from_corp_members_who_are_not_staff_do_nothing(wecom: WeComWorld) -> None:
    await wecom.h.customer_adds_guide("wmVICTIM1", "王女士")
    command = ("<xml><ToUserName><![CDATA[wwcorp0001]]></ToUserName><FromUserName><![CDATA[intern07]]>"
               "</FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               "<Content><![CDATA[/optout 王女士]]></Content><MsgId>900001</MsgId><AgentID>1000002</AgentID></xml>")
    assert await wecom.post(command) == 200
    await wecom.h.app.tick()
    async with wecom.h.app.db.session() as session:
        opted_out = await session.scalar(select(Contact.opted_out).where(Contact.name == "王女士"))
    assert opted_out is False
    assert wecom.fake.called("/message/send") == []
