"""The web chat group page after the guard acts: reloading shows what the group showed, nothing more."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient

from bot.guard_feedback import guard_events
from bot.lookups import guard_log
from tests.test_webchat import Site, client, join, next_of, site  # noqa: F401  (fixtures and page helpers)


async def test_history_after_a_deletion_shows_the_notice_not_the_ad(client: TestClient) -> None:  # noqa: F811
    member = await join(client, "member", "安分")
    session = (await next_of(member, "joined"))["session"]
    await member.send_json({"type": "say", "id": "m1", "text": "大家好"})
    spammer = await join(client, "member", "卖包")
    await next_of(spammer, "joined")
    await spammer.send_json({"type": "say", "id": "s1", "text": "高仿大牌包包 一手货源"})
    spam = await next_of(member, "deleted")
    assert spam["id"].endswith(":s1")
    assert (await next_of(member, "system"))["text"] == "卖包 违反群规，已被移出群聊"  # a first offence, in Chinese
    await member.close()
    await spammer.close()

    again = await join(client, "member", "安分", session)
    history = (await next_of(again, "joined"))["history"]
    shown = [(h["from"], h["text"], h.get("notice", False)) for h in history]
    assert shown == [("安分", "大家好", False),
                     ("bot", "一条消息因违反群规已被删除", True),
                     ("bot", "卖包 违反群规，已被移出群聊", True)]
    assert all(h["text"].strip() for h in history)  # no empty bubbles
    await again.close()


async def test_staff_read_the_guard_log_by_name_in_chinese_and_local_time(site: Site) -> None:  # noqa: F811
    spammer = await join(site.client, "member", "卖包")
    await next_of(spammer, "joined")
    await spammer.send_json({"type": "say", "id": "s1", "text": "高仿大牌包包 一手货源"})
    await next_of(spammer, "deleted")
    await spammer.close()
    async with site.harness.app.db.session() as session:
        (event,) = await guard_events(session)
    assert event.member == "卖包"  # the name she chose, not the page's c_… id
    (line,) = await guard_log(site.harness.app, 10)
    local = site.harness.clock.now().astimezone(ZoneInfo(site.harness.app.settings.policy.timezone))
    assert line.startswith(f"{local:%Y-%m-%d %H:%M}  webchat:") and "  卖包  " in line
    assert "含违禁词「高仿」；入群 10 分钟内发广告" in line  # the reasons staff read are Chinese
