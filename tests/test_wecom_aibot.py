"""The AI bot long connection against a fake gateway on 127.0.0.1 speaking its JSON frames."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.wecom.aibot import AiBotConnection
from tests.fakes import FakeAiBotGateway
from tests.harness import SCRIPTS, Harness

STAFF = ({"id": "xiaomei", "name": "小美", "identities": {"wecom_aibot": "xiaomei.li"}},)


class AiBotWorld:
    def __init__(self, h: Harness, gateway: FakeAiBotGateway, bot: AiBotConnection) -> None:
        self.h, self.gateway, self.bot = h, gateway, bot

    async def settle(self, predicate) -> None:  # type: ignore[no-untyped-def]
        """Run the scheduler beside the connection until `predicate` holds; never cut a pass in half."""
        stop = asyncio.Event()

        async def ticking() -> None:
            while not stop.is_set():
                await self.h.app.tick()
                await asyncio.sleep(0.02)

        ticker = asyncio.create_task(ticking())
        try:
            await self.gateway.wait_for(predicate)
        finally:
            stop.set()
            await ticker


@pytest.fixture
async def world(tmp_path, start) -> AsyncIterator[AiBotWorld]:  # type: ignore[no-untyped-def]
    gateway = FakeAiBotGateway()
    url = await gateway.start()
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", start, SCRIPTS, staff=STAFF)
    bot = AiBotConnection(gateway.bot_id, gateway.secret, h.app.engine.handle, h.clock, url=url, heartbeat=0.2,
                          backoff=0.05)
    h.app.add_transport(bot)
    bot.start()
    await bot.wait_authenticated()
    try:
        yield AiBotWorld(h, gateway, bot)
    finally:
        await bot.stop()
        await h.close()
        await gateway.close()


async def test_subscribes_and_pings(world: AiBotWorld) -> None:
    (subscribe,) = world.gateway.received("aibot_subscribe")
    assert subscribe["body"] == {"bot_id": "aibot001", "secret": "aibotsecret"}
    await world.gateway.wait_for(lambda: len(world.gateway.received("ping")) >= 2)


async def test_welcome_on_enter_chat_and_replies_echo_the_req_id(world: AiBotWorld) -> None:
    enter = await world.gateway.push("aibot_event_callback", {
        "msgid": "e1", "aibotid": "aibot001", "from": {"userid": "lin.x"}, "msgtype": "event",
        "event": {"eventtype": "enter_chat"}})
    await world.settle(lambda: bool(world.gateway.received("aibot_respond_welcome_msg")))
    (welcome,) = world.gateway.received("aibot_respond_welcome_msg")
    assert welcome["headers"]["req_id"] == enter
    assert welcome["body"]["text"]["content"].startswith("问候：lin.x您好，我是测试品牌的小美")

    asked = await world.gateway.push("aibot_msg_callback", {
        "msgid": "m1", "aibotid": "aibot001", "chattype": "single", "from": {"userid": "lin.x"},
        "msgtype": "text", "text": {"content": "包邮吗"}})
    await world.settle(lambda: bool(world.gateway.received("aibot_respond_msg")))
    (reply,) = world.gateway.received("aibot_respond_msg")
    assert reply["headers"]["req_id"] == asked
    assert reply["body"]["msgtype"] == "stream" and reply["body"]["stream"]["finish"] is True
    assert reply["body"]["stream"]["content"].startswith("答·运费：测试订单满 99 元包邮")


async def test_group_mentions_are_answered_in_the_group(world: AiBotWorld) -> None:
    asked = await world.gateway.push("aibot_msg_callback", {
        "msgid": "g1", "aibotid": "aibot001", "chattype": "group", "chatid": "wrGROUP1",
        "from": {"userid": "zhao"}, "msgtype": "text", "text": {"content": "@山茶集小助手 什么时候发货"}})
    await world.settle(lambda: bool(world.gateway.received("aibot_respond_msg")))
    (reply,) = world.gateway.received("aibot_respond_msg")
    assert reply["headers"]["req_id"] == asked
    assert reply["body"]["stream"]["content"].startswith("答·发货：测试订单下单后 1 天内发货")


async def test_guides_run_commands_and_proactive_sends_use_send_msg(world: AiBotWorld) -> None:
    await world.gateway.push("aibot_event_callback", {"msgid": "e2", "from": {"userid": "wang.y"},
                                                      "msgtype": "event", "event": {"eventtype": "enter_chat"}})
    await world.settle(lambda: bool(world.gateway.received("aibot_respond_welcome_msg")))
    await world.gateway.push("aibot_msg_callback", {
        "msgid": "c1", "chattype": "single", "from": {"userid": "xiaomei.li"}, "msgtype": "text",
        "text": {"content": "/sop new_customer.day3_followup wang.y"}})
    await world.settle(lambda: bool(world.gateway.received("aibot_send_msg")))
    (proactive,) = world.gateway.received("aibot_send_msg")
    assert proactive["body"]["chatid"] == "wang.y"
    assert proactive["body"]["markdown"]["content"].startswith(("见面礼A：wang.y，", "见面礼B：wang.y，"))
    (answer,) = world.gateway.received("aibot_respond_msg")
    assert answer["body"]["stream"]["content"].startswith("已安排 new_customer.day3_followup")


async def test_reconnects_after_a_drop_but_not_after_disconnected_event(world: AiBotWorld) -> None:
    await world.gateway.drop()
    await world.gateway.wait_for(lambda: world.gateway.subscribes == 2)
    await world.bot.wait_authenticated()
    await world.gateway.push("aibot_event_callback", {"msgid": "d1", "from": {"userid": "system"},
                                                      "msgtype": "event", "event": {"eventtype": "disconnected_event"}})
    await world.gateway.wait_for(lambda: world.bot.stopped_by_platform)
    await asyncio.sleep(0.3)  # several back-off periods
    assert world.gateway.subscribes == 2 and world.bot.connections == 2


async def test_wrong_secret_is_refused_and_retried_with_back_off(tmp_path, start) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeAiBotGateway()
    url = await gateway.start()
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", start, SCRIPTS)
    bot = AiBotConnection(gateway.bot_id, "wrong", h.app.engine.handle, h.clock, url=url, backoff=0.05)
    bot.start()
    try:
        await gateway.wait_for(lambda: gateway.subscribes >= 3)
        assert not bot._authenticated.is_set()
    finally:
        await bot.stop()
        await h.close()
        await gateway.close()


async def test_http_callback_mode_uses_json_bodies_and_an_empty_receive_id(tmp_path, start) -> None:  # type: ignore[no-untyped-def]
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from adapters.wecom.crypto import WeComCrypto, signature
    from bot.app import build_web_app
    from tests.fakes import FakeQyapi
    from tests.test_wecom import AES_KEY, CORP, TOKEN

    replies: list[dict] = []

    async def response_url(request: web.Request) -> web.Response:
        replies.append(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    sink = web.Application()
    sink.router.add_post("/reply", response_url)
    fake = FakeQyapi()
    api = await fake.start()
    wecom = {"corp_id": CORP, "token": TOKEN, "encoding_aes_key": AES_KEY, "secret": fake.secret, "api_base": api,
             "aibot_id": "aibot001"}
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", start, SCRIPTS,
                             adapters={"webchat": {"enabled": False}, "wecom": wecom})
    try:
        async with TestClient(TestServer(sink, host="127.0.0.1")) as replies_server:
            async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
                crypto = WeComCrypto(TOKEN, AES_KEY, "")  # the AI bot signs with an empty receive id
                message = {"msgid": "hm1", "aibotid": "aibot001", "chattype": "single", "from": {"userid": "qian"},
                           "response_url": str(replies_server.make_url("/reply")), "msgtype": "text",
                           "text": {"content": "包邮吗"}}
                encrypt = crypto.encrypt(json.dumps(message, ensure_ascii=False))
                ts = str(int(h.clock.now().timestamp()))
                params = {"msg_signature": signature(TOKEN, ts, "n", encrypt), "timestamp": ts, "nonce": "n"}
                for _ in range(2):  # a retry of the same msgid has no second effect
                    response = await client.post("/wecom/aibot/callback", params=params,
                                                 data=json.dumps({"encrypt": encrypt}))
                    assert response.status == 200
                app_crypto = WeComCrypto(TOKEN, AES_KEY, CORP)  # signed for an app, not the AI bot
                forged = app_crypto.encrypt(json.dumps(message))
                params_app = {"msg_signature": signature(TOKEN, ts, "n", forged), "timestamp": ts, "nonce": "n"}
                wrong = await client.post("/wecom/aibot/callback", params=params_app,
                                          data=json.dumps({"encrypt": forged}))
                assert wrong.status == 403
                await h.app.tick()
                await h.app.tick()
        answers = [r["markdown"]["content"] for r in replies]
        assert any(a.startswith("答·运费：测试订单满 99 元包邮") for a in answers)
        assert sum(1 for a in answers if a.startswith("答·运费：测试订单满 99 元包邮")) == 1
    finally:
        await h.close()
        await fake.close()
