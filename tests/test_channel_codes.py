"""渠道活码: a WeCom 「联系我」 code spreading three customers over three guides, with its source and tags;
start links for the other channels; and each code's adds, replies and purchases."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.channel_codes import ChannelCodeError, code_stats, create_channel_code, state_for
from bot.cli import main
from storage.models import ChannelCode, Contact
from tests.harness import Harness
from tests.lifecycle_scripts import scripts_with
from tests.test_transfers import JIE, LAN, MEI, added_xml, corp
from tests.test_webchat import Site, next_of, site  # noqa: F401  (the web chat page's fixture)
from tests.test_wecom import WeComWorld


@pytest.fixture
async def world(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[WeComWorld]:
    async with corp(db_url, start, scripts_with(tmp_path)) as world:
        yield world


async def test_a_code_spreads_three_customers_over_three_guides(world: WeComWorld) -> None:
    h, fake = world.h, world.fake
    code = await create_channel_code(h.app, "门店A扫码", ["xiaomei", "ajie", "xiaolan"], ["门店A"])
    (made,) = fake.called("/externalcontact/add_contact_way")
    assert made == {"type": 2, "scene": 2, "state": code.state, "user": [MEI, JIE, LAN], "remark": "门店A扫码",
                    "skip_verify": True}
    assert code.link == "https://wework.qpic.cn/wwpic/cfg0001/0"

    for customer in ("wmSCAN0001", "wmSCAN0002", "wmSCAN0003"):
        guide = fake.scan("cfg0001")  # WeCom picks the guide
        assert await world.post(added_xml(customer, guide, state=code.state)) == 200
    await h.app.tick()

    async with h.app.db.session() as session:
        contacts = (await session.scalars(select(Contact).order_by(Contact.id))).all()
    assert [(c.external_id, c.guide_key, c.source) for c in contacts] == [
        ("wmSCAN0001", "xiaomei", "门店A扫码"), ("wmSCAN0002", "ajie", "门店A扫码"), ("wmSCAN0003", "xiaolan", "门店A扫码")]
    assert all("门店A" in c.tags for c in contacts)
    welcomes = [b["text"]["content"] for b in fake.called("/externalcontact/send_welcome_msg")]
    assert [w.splitlines()[0] for w in welcomes] == [
        "问候：客户0001您好，我是测试品牌的小美", "问候：客户0002您好，我是测试品牌的阿杰", "问候：客户0003您好，我是测试品牌的小兰"]
    assert all("感谢您在门店A扫码添加我" in w for w in welcomes)  # the code's name, not its state
    (stats,) = await code_stats(h.app)
    assert (stats.name, stats.adds, stats.replies, stats.purchases) == ("门店A扫码", 3, 0, 0)


async def test_mistakes_are_refused_before_wecom_is_asked(world: WeComWorld) -> None:
    with pytest.raises(ChannelCodeError, match="没有工号为「nobody」的导购"):
        await create_channel_code(world.h.app, "门店B", ["xiaomei", "nobody"])
    await create_channel_code(world.h.app, "门店B", ["xiaomei"])
    with pytest.raises(ChannelCodeError, match="already a channel code named '门店B'"):
        await create_channel_code(world.h.app, "门店B", ["ajie"])
    with pytest.raises(ChannelCodeError, match="--bot needs"):
        await create_channel_code(world.h.app, "电报", ["ajie"], channel="telegram")
    assert len(world.fake.called("/externalcontact/add_contact_way")) == 1


async def test_start_links_spread_in_turn_and_count_replies_and_purchases(db_url: str, start: datetime,
                                                                          tmp_path: Path) -> None:
    staff = ({"id": "xiaomei", "name": "小美", "identities": {"test": "guide-xiaomei"}},
             {"id": "ajie", "name": "阿杰", "identities": {"test": "guide-ajie"}})
    h = await Harness.create(db_url, start, scripts_with(tmp_path), staff=staff)
    try:
        web = await create_channel_code(h.app, "官网弹窗", ["xiaomei", "ajie"], ["官网"], channel="webchat")
        tg = await create_channel_code(h.app, "电报群", ["ajie"], channel="telegram", bot_username="@shanchaji_bot")
        assert web.link == f"http://127.0.0.1:8080/?src={state_for('官网弹窗')}"
        assert tg.link == f"https://t.me/shanchaji_bot?start={state_for('电报群')}"
        for i in range(3):  # what the adapters hand over from ?src= and /start <state>
            await h.customer_adds_guide(f"w{i}", f"访客{i}", source=web.state)
        await h.customer_adds_guide("t0", "电报用户", source=tg.state)
        await h.customer_says("w0", "包邮吗")
        await h.guide_says("/purchased w1")
        await h.run_for(timedelta(minutes=5))

        async with h.app.db.session() as session:
            guides = dict((await session.execute(select(Contact.external_id, Contact.guide_key))).all())
        assert guides == {"w0": "xiaomei", "w1": "ajie", "w2": "xiaomei", "t0": "ajie"}
        assert [(s.name, s.adds, s.replies, s.purchases) for s in await code_stats(h.app)] == [
            ("官网弹窗", 3, 1, 1), ("电报群", 1, 0, 0)]
        assert h.transcript("w2")[0] == "d0 10:15 问候：访客2您好，我是测试品牌的小美"
    finally:
        await h.close()


def test_siyu_channel_code_list_prints_each_code(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI test runs on SQLite only")
    monkeypatch.setenv("SIYU_DATABASE_URL", db_url)
    config = tmp_path / "config.yaml"
    config.write_text((Path(__file__).parent / "data" / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    scripts = scripts_with(tmp_path)
    assert main(["channel-code", "create", "门店C", "--guides", "xiaomei", "--tags", "门店C,新客", "--channel",
                 "webchat", "--config", str(config), "--scripts", str(scripts)]) == 0
    assert main(["channel-code", "list", "--config", str(config), "--scripts", str(scripts)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"门店C（webchat，state {state_for('门店C')}）导购 xiaomei，标签 门店C、新客：添加 0，回复 0，购买 0"
    assert main(["channel-code", "create", "门店D", "--guides", "xiaomei", "--config", str(config),
                 "--scripts", str(scripts)]) == 1  # WeCom is not configured in this config
    assert ChannelCode.__tablename__ == "channel_codes"


async def test_a_web_chat_src_link_gives_the_codes_source_and_tags(site: Site) -> None:  # noqa: F811
    code = await create_channel_code(site.harness.app, "官网弹窗", ["xiaomei"], ["官网"], channel="webchat")
    ws = await site.client.ws_connect("/ws")
    # the page sends what its own address says: /?src=<state>
    await ws.send_json({"type": "join", "role": "customer", "name": "访客甲", "source": code.state})
    greeting = await next_of(ws, "message")
    assert "感谢您在官网弹窗添加我" in greeting["text"]
    await ws.close()
    async with site.harness.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.name == "访客甲"))
    assert (contact.source, "官网" in contact.tags) == ("官网弹窗", True)
