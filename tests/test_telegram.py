"""Telegram end to end: the real python-telegram-bot client polling a fake Bot API server on 127.0.0.1."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from adapters.telegram.adapter import TelegramAdapter
from bot.guard_feedback import guard_events, mark_not_spam
from storage.models import Contact, GuardSample
from tests.fakes import FakeTelegram, tg_blocked, tg_group, tg_joined, tg_private, tg_user
from tests.harness import SCRIPTS, Harness

GUIDE = 500
GROUP = -1001234567890
STAFF = ({"id": "xiaomei", "name": "小美", "identities": {"telegram": str(GUIDE)}},)


class TelegramWorld:
    def __init__(self, harness: Harness, fake: FakeTelegram, adapter: TelegramAdapter) -> None:
        self.h, self.fake, self.adapter = harness, fake, adapter
        self._ids = 100

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        """Let polling and the scheduler run until `condition` holds."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            await self.h.app.tick()
            if condition():
                return
            assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
            await asyncio.sleep(0.02)

    def texts_to(self, chat_id: int) -> list[str]:
        return [p["text"] for p in self.fake.sent() if int(p["chat_id"]) == chat_id]

    async def customer(self, user_id: int, name: str, text: str) -> None:
        await self.push(tg_private(user_id, name, text, self.next_id()))

    async def push(self, update: dict[str, Any]) -> None:
        """The platform sends an update; wait until siyu has handled and delivered it."""
        before = len(self.fake.updates)
        self.fake.push(update)
        await self.settle(before)

    async def settle(self, before: int) -> None:
        # wait until PTB fetched the update and the engine handled it, then deliver
        await self.until(lambda: self.adapter.app.update_queue.empty() and len(self.fake.updates) > before)
        await asyncio.sleep(0.1)
        await self.h.app.tick()


async def telegram_harness(fake: FakeTelegram, api_base: str, db: str, start, **telegram: str) -> Harness:  # type: ignore[no-untyped-def]
    """siyu with Telegram configured as an operator would: the token and API base from settings."""
    h = await Harness.create(f"sqlite+aiosqlite:///{db}", start, SCRIPTS, staff=STAFF,
                             adapters={"telegram": {"token": fake.token, "api_base": api_base, **telegram}})
    h.app.plug_in()
    await h.app.start_adapters()
    return h


@pytest.fixture
async def world(tmp_path, start) -> AsyncIterator[TelegramWorld]:  # type: ignore[no-untyped-def]
    fake = FakeTelegram()
    api_base = await fake.start()
    h = await telegram_harness(fake, api_base, str(tmp_path / "t.db"), start)
    adapter = h.app.transports["telegram"]
    assert isinstance(adapter, TelegramAdapter)
    try:
        yield TelegramWorld(h, fake, adapter)
    finally:
        await h.close()
        await fake.close()


async def test_commands_are_registered_for_guides(world: TelegramWorld) -> None:
    registered = world.fake.sent("setMyCommands")
    scopes = {p["scope"]["type"]: [c["command"] for c in p["commands"]] for p in registered}
    assert scopes["default"] == ["start", "help"]
    assert "sop" in scopes["chat"] and "release" in scopes["chat"]
    guide_scope = next(p for p in registered if p["scope"]["type"] == "chat")
    assert guide_scope["scope"]["chat_id"] == GUIDE


async def test_dm_start_greets_and_questions_are_answered(world: TelegramWorld) -> None:
    await world.customer(1001, "Lin", "/start xiaohongshu")
    await world.until(lambda: len(world.texts_to(1001)) == 1)
    assert world.texts_to(1001)[0].startswith("问候：Lin您好，我是测试品牌的小美\n感谢您在xiaohongshu添加我")
    await world.customer(1001, "Lin", "包邮吗？")
    await world.until(lambda: len(world.texts_to(1001)) == 2)
    assert world.texts_to(1001)[1].startswith("答·运费：测试订单满 99 元包邮")


async def test_unknown_question_goes_to_the_guide_and_the_bot_waits_for_release(world: TelegramWorld) -> None:
    await world.customer(1002, "Wang", "/start")
    await world.customer(1002, "Wang", "你们和隔壁那家比哪个好用")
    await world.until(lambda: any("【转人工】" in t for t in world.texts_to(GUIDE)))
    note = next(t for t in world.texts_to(GUIDE) if "【转人工】" in t)
    assert "你们和隔壁那家比哪个好用" in note and "tg://user?id=1002" in note
    assert world.texts_to(1002)[-1] == "转人工：这个问题请测试顾问来回答"

    await world.customer(GUIDE, "小美", "/handoff 1002")  # the guide joins: the customer is told
    await world.until(lambda: world.texts_to(1002)[-1].startswith("导购小美已加入对话"))
    await world.customer(1002, "Wang", "包邮吗")  # a person has the chat: the bot stays quiet
    await world.until(lambda: any("【转人工·续】Wang：包邮吗" in t for t in world.texts_to(GUIDE)))
    assert not any(t.startswith("答·运费") for t in world.texts_to(1002))

    await world.customer(GUIDE, "小美", "/release 1002")
    await world.until(lambda: any("交还给机器人" in t for t in world.texts_to(GUIDE)))
    await world.customer(1002, "Wang", "包邮吗")
    await world.until(lambda: world.texts_to(1002)[-1].startswith("答·运费：测试订单满 99 元包邮"))


async def test_non_guides_are_refused_guide_commands(world: TelegramWorld) -> None:
    await world.customer(1003, "Zhao", "/start")
    await world.customer(1003, "Zhao", "/sop new_customer.day3_followup 1003")
    await world.until(lambda: len(world.texts_to(1003)) == 2)
    assert world.texts_to(1003)[1] == "抱歉，这个命令仅供导购使用～有问题直接发消息问我就好。"
    await world.customer(GUIDE, "小美", "/sop new_customer.day3_followup 1003")
    await world.until(lambda: len(world.texts_to(1003)) == 3)
    assert world.texts_to(1003)[2].startswith(("见面礼A：Zhao，", "见面礼B：Zhao，"))


async def test_35_day_journey_on_the_virtual_clock(world: TelegramWorld) -> None:
    await world.customer(1004, "Sun", "/start")
    await world.h.run_until(world.h.start + timedelta(days=35))
    await world.until(lambda: len(world.texts_to(1004)) == 5)
    firsts = [t.splitlines()[0] for t in world.texts_to(1004)]
    assert firsts[0].startswith("问候：Sun您好") and firsts[1] == "第1天关怀：Sun，加上您的第一天"
    assert firsts[3] == "第7天提醒：Sun，见面礼还给您留着"
    assert firsts[4].startswith("第30天：Sun，欢迎来测试门店")


async def test_group_spammer_is_warned_muted_and_banned(world: TelegramWorld) -> None:
    await world.push(tg_joined(GROUP, 2001, "Spammy", world.next_id()))
    world.h.clock.advance(timedelta(hours=1))
    for text in ("兼职日结 一天500", "➕V信领福利", "http://cheap-bags.xyz 高仿"):
        await world.push(tg_group(GROUP, 2001, "Spammy", text, world.next_id()))
    await world.until(lambda: bool(world.fake.sent("banChatMember")))
    assert len(world.fake.sent("deleteMessage")) == 3
    assert world.texts_to(GROUP)[0].startswith("@Spammy 测试警告：请勿发广告")
    (mute,) = world.fake.sent("restrictChatMember")
    assert mute["user_id"] == 2001 and mute["permissions"]["can_send_messages"] is False
    (ban,) = world.fake.sent("banChatMember")
    assert (ban["chat_id"], ban["user_id"]) == (GROUP, 2001)


async def test_not_spam_lifts_the_mute_on_telegram(world: TelegramWorld) -> None:
    await world.push(tg_joined(GROUP, 2004, "Mama", world.next_id()))
    world.h.clock.advance(timedelta(hours=1))
    for text in ("刷单兼职找我", "有需要的姐妹私聊我"):
        await world.push(tg_group(GROUP, 2004, "Mama", text, world.next_id()))
    await world.until(lambda: len(world.fake.sent("restrictChatMember")) == 1)
    async with world.h.app.db.session() as session, session.begin():
        muted = (await guard_events(session, limit=1))[0]
        await mark_not_spam(session, muted.id, "xiaomei", world.h.clock.now())
    await world.until(lambda: len(world.fake.sent("restrictChatMember")) == 2)
    lifted = world.fake.sent("restrictChatMember")[1]
    assert lifted["user_id"] == 2004 and lifted["permissions"]["can_send_messages"] is True


async def test_an_admin_removing_a_member_teaches_the_guard(world: TelegramWorld) -> None:
    for user, name in ((2005, "Seller"), (2006, "Spammy")):
        await world.push(tg_joined(GROUP, user, name, world.next_id()))
    world.h.clock.advance(timedelta(hours=1))
    for user, name, text in ((2005, "Seller", "姐妹们我这有便宜的面膜"), (2006, "Spammy", "扫码领取福利加我微信")):
        await world.push(tg_group(GROUP, user, name, text, world.next_id()))
    await world.until(lambda: bool(world.fake.sent("deleteMessage")))
    # the guide (an admin) takes the seller out; the bot's own ban of the other is the guard's, not staff's
    for remover, user, name in ((tg_user(GUIDE, "小美"), 2005, "Seller"),
                                (tg_user(999000, "山茶集小助手", is_bot=True), 2006, "Spammy")):
        update = tg_group(GROUP, GUIDE, "小美", "", world.next_id(), left_chat_member=tg_user(user, name))
        update["message"]["from"] = remover
        await world.push(update)
    async with world.h.app.db.session() as session:
        samples = (await session.execute(select(GuardSample.text, GuardSample.spam, GuardSample.staff_key))).all()
    assert [tuple(s) for s in samples] == [("姐妹们我这有便宜的面膜", True, "xiaomei")]


async def test_without_admin_rights_the_bot_warns_instead(world: TelegramWorld,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    world.fake.fail_next("restrictChatMember", 400, "Bad Request: not enough rights to restrict/unrestrict chat member")
    await world.push(tg_joined(GROUP, 2002, "Ads", world.next_id()))
    world.h.clock.advance(timedelta(hours=1))
    for text in ("刷单兼职", "刷单兼职日结"):
        await world.push(tg_group(GROUP, 2002, "Ads", text, world.next_id()))
    await world.until(lambda: len(world.texts_to(GROUP)) == 2)
    assert world.texts_to(GROUP)[1] == "Ads 再次违反群规，已被禁言 1 小时"  # the second strike, in words
    assert "not an admin" in caplog.text


async def test_retry_after_is_respected_and_nothing_is_lost(world: TelegramWorld) -> None:
    world.fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 30", retry_after=30)
    await world.customer(1005, "Zhou", "/start")
    await world.h.app.tick()
    assert world.texts_to(1005) == [] and len(world.fake.refused) == 1  # refused once: waiting, not dropped
    world.h.clock.advance(timedelta(seconds=31))
    await world.until(lambda: len(world.texts_to(1005)) == 1)
    assert world.texts_to(1005)[0].startswith("问候：Zhou您好")


async def test_blocking_the_bot_marks_the_customer_churned(world: TelegramWorld) -> None:
    await world.customer(1006, "Qian", "/start")
    await world.push(tg_blocked(1006, "Qian"))
    async with world.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "1006"))
    assert contact.churned
    assert any(t.startswith("【流失提醒】客户 Qian") for t in world.texts_to(GUIDE))


async def test_forbidden_on_send_marks_the_customer_unreachable(world: TelegramWorld) -> None:
    await world.customer(1007, "Li", "/start")
    world.fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    await world.h.run_until(world.h.start + timedelta(days=1, hours=1))
    await world.until(lambda: True)
    async with world.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "1007"))
    assert contact.churned


async def test_webhook_mode_checks_the_secret(tmp_path, start) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from bot.app import build_web_app

    fake = FakeTelegram()
    api_base = await fake.start()
    h = await telegram_harness(fake, api_base, str(tmp_path / "w.db"), start, mode="webhook",
                               webhook_url="https://bot.example.com/telegram/webhook", webhook_secret="s3cret")
    try:
        (hook,) = fake.sent("setWebhook")
        assert hook["url"] == "https://bot.example.com/telegram/webhook" and hook["secret_token"] == "s3cret"
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            update = {"update_id": 1, **tg_private(3001, "Hook", "/start", 1)}
            forged = await client.post("/telegram/webhook", json=update,
                                       headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert forged.status == 403
            real = await client.post("/telegram/webhook", json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
            assert real.status == 200
        await h.app.tick()
        assert [p["text"][:7] for p in fake.sent() if p["chat_id"] == 3001] == ["问候：Hook"]
        async with h.app.db.session() as session:
            assert (await session.scalar(select(Contact.name).where(Contact.external_id == "3001"))) == "Hook"
    finally:
        await h.close()
        await fake.close()
