"""Web chat over a real HTTP server and WebSocket: a customer, a group member and a logged-in guide.

The helpers here (`site`, `client`, `join`, `log_in`, `next_of`) are shared with tests/test_webchat_identity.py.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_web_app
from bot.staff_accounts import StaffAccounts
from tests.harness import CHANNEL, SCRIPTS, Harness

GUIDE_PASSWORD = "correct horse battery"


@dataclass
class Site:
    """`siyu serve` on a test database: the harness (clock, database) and an HTTP client for it."""

    harness: Harness
    client: TestClient


@pytest.fixture
async def site(db_url: str, start) -> AsyncIterator[Site]:  # type: ignore[no-untyped-def]
    # the guide also has a web chat identity in config.yaml, and a password set as `siyu staff password` does
    h = await Harness.create(db_url, start, SCRIPTS, staff=(
        {"id": "xiaomei", "name": "小美", "identities": {CHANNEL: "guide-xiaomei", "webchat": "xiaomei"}},))
    await StaffAccounts(h.app.db, h.clock, known={"xiaomei"}).set_password("xiaomei", GUIDE_PASSWORD)
    web_app = build_web_app(h.app)
    loop_task = asyncio.create_task(h.app.run_forever())
    async with TestClient(TestServer(web_app, host="127.0.0.1")) as test_client:
        yield Site(h, test_client)
    h.app.request_stop()  # as SIGTERM does: the pass in progress finishes, no transaction is cut off
    await asyncio.wait_for(loop_task, timeout=60)
    await h.close()


@pytest.fixture
def client(site: Site) -> TestClient:
    return site.client


async def join(client: TestClient, role: str, name: str = "", session: str | None = None
               ) -> ClientWebSocketResponse:
    """Open the page's WebSocket and join as `role` (customer, member or guide), as the page does:
    with the session this browser kept, if any (a guide is who the login cookie says)."""
    ws = await client.ws_connect("/ws")
    frame: dict[str, Any] = {"type": "join", "role": role, "name": name}
    if session is not None:
        frame["session"] = session
    await ws.send_json(frame)
    return ws


async def log_in(client: TestClient, staff: str = "xiaomei", password: str = GUIDE_PASSWORD) -> int:
    """Log in on the page's login endpoint; the client keeps the cookie. Returns the HTTP status."""
    response = await client.post("/webchat/login", json={"staff": staff, "password": password})
    return response.status


async def next_of(ws: ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), timeout=5)
        if frame["type"] == kind:
            return frame


async def test_health_check(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["ok"] is True and "new_customer" in body["journeys"]


async def test_page_is_served(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert "siyu" in await response.text()


async def test_customer_is_greeted_and_gets_answers(client: TestClient) -> None:
    ws = await join(client, "customer", "林小姐")
    joined = await next_of(ws, "joined")
    assert joined["name"] == "林小姐"
    session = joined["session"]  # the page keeps it
    greeting = await next_of(ws, "message")
    assert greeting["from"] == "bot" and greeting["text"].startswith("问候：林小姐您好，我是测试品牌的小美")

    await ws.send_json({"type": "say", "id": "u1", "text": "包邮吗"})
    answer = await next_of(ws, "message")
    assert answer["text"].startswith("答·运费：测试订单满 99 元包邮")
    await ws.close()

    # reconnecting with the kept session shows the conversation so far, and does not greet twice
    ws = await join(client, "customer", "林小姐", session)
    history = (await next_of(ws, "joined"))["history"]
    assert [m["from"] for m in history] == ["bot", "林小姐", "bot"]
    await ws.close()


async def test_guide_gets_handoffs_and_runs_commands(client: TestClient) -> None:
    assert await log_in(client) == 200
    guide = await join(client, "guide")
    assert (await next_of(guide, "joined"))["name"] == "小美"
    customer = await join(client, "customer", "webchat-guest")
    await next_of(customer, "message")  # greeting

    await customer.send_json({"type": "say", "id": "q1", "text": "你们和别家的面霜比哪个好"})
    assert (await next_of(customer, "message"))["text"] == "转人工：这个问题请测试顾问来回答"
    note = await next_of(guide, "message")
    assert note["text"].startswith("【转人工】webchat-guest")

    await guide.send_json({"type": "say", "id": "c1", "text": "/sop new_customer.day3_followup webchat-guest"})
    assert (await next_of(guide, "message"))["text"].startswith("已安排 new_customer.day3_followup")
    assert (await next_of(customer, "message"))["text"] in ("见面礼A：webchat-guest，送您「测试礼A」，回复「领取」领取",
                                                          "见面礼B：webchat-guest，送您「测试礼B」，回复「领取」领取")
    await guide.close()
    await customer.close()


async def test_strangers_cannot_join_as_guide(client: TestClient) -> None:
    assert await log_in(client, "mallory", "whatever123") == 401
    ws = await join(client, "guide", "mallory")
    error = await next_of(ws, "error")
    assert "导购需要先登录" in error["text"]
    await ws.send_json({"type": "say", "text": "/optout 1"})
    assert (await next_of(ws, "error"))["text"].startswith("请先进入聊天")
    await ws.close()


async def test_group_members_see_each_other_and_the_bot_answers_mentions(client: TestClient) -> None:
    a = await join(client, "member", "阿May")
    await next_of(a, "joined")
    b = await join(client, "member", "Kiki")
    await next_of(b, "joined")

    await a.send_json({"type": "say", "id": "g1", "text": "大家好"})
    seen = await next_of(b, "message")
    assert (seen["from"], seen["text"]) == ("阿May", "大家好")

    await b.send_json({"type": "say", "id": "g2", "text": "@bot 什么时候发货"})
    while (frame := await next_of(a, "message"))["from"] != "bot":
        pass
    assert frame["text"].startswith("答·发货：测试订单下单后 1 天内发货")
    await a.close()
    await b.close()


async def test_group_spam_is_deleted_and_the_spammer_warned(client: TestClient) -> None:
    a = await join(client, "member", "安分")
    await next_of(a, "joined")
    spammer = await join(client, "member", "卖包")
    await next_of(spammer, "joined")
    await spammer.send_json({"type": "say", "id": "s1", "text": "高仿大牌包包 一手货源"})
    spam = await next_of(a, "message")
    assert (spam["from"], spam["text"]) == ("卖包", "高仿大牌包包 一手货源")
    assert spam["id"].startswith("in:c_") and spam["id"].endswith(":s1")  # the page's id, scoped to its sender
    assert (await next_of(a, "deleted"))["id"] == spam["id"]
    await a.close()
    await spammer.close()
