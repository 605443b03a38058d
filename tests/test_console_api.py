"""The console's JSON API as guides and operators use it, over a real HTTP server (issue 11).

Who may do what (401, 403, CSRF, bearer tokens), the hand-off inbox, a guide's reply reaching a web
chat customer live, release, teaching the bot, and the operator's funnel — on SQLite and PostgreSQL.
"""
from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import build_web_app
from bot.events import Event, EventKind
from bot.plugin import LoginResult
from bot.staff_accounts import MAX_FAILURES_PER_STAFF, StaffAccounts
from storage.llm_calls import record_llm_call
from storage.models import Contact, LlmCall, Message
from tests.harness import SCRIPTS, Harness

PASSWORDS = {"xiaomei": "xiaomei-password", "xiaoli": "xiaoli-password", "aqing": "aqing-password"}
STAFF = (
    {"id": "xiaomei", "name": "小美", "identities": {"test": "guide-xiaomei", "webchat": "xiaomei"}},
    {"id": "xiaoli", "name": "小丽", "identities": {"test": "guide-xiaoli"}},
    {"id": "aqing", "name": "阿青", "role": "operator"},
)
UNKNOWN_QUESTION = "你们和别家的面霜比哪个好"
HANDOFF_REPLY = "转人工：这个问题请测试顾问来回答"


@dataclass
class Console:
    harness: Harness
    client: TestClient

    async def log_in(self, staff: str = "xiaomei") -> dict[str, str]:
        """Log in as the page does; returns the headers a state-changing request then needs."""
        response = await self.client.post("/api/session", json={"staff": staff, "password": PASSWORDS[staff]})
        assert response.status == 200, await response.text()
        return {"X-CSRF-Token": (await response.json())["csrf_token"]}

    async def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.client.get(path, **kwargs)
        assert response.status == status, await response.text()
        return await response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None, status: int = 200, **kwargs: Any) -> Any:
        response = await self.client.post(path, json=body or {}, **kwargs)
        assert response.status == status, await response.text()
        return await response.json()


async def console_for(db_url: str, start, scripts: Path = SCRIPTS,  # type: ignore[no-untyped-def]
                      serve_loop: bool = True) -> AsyncIterator[Console]:
    """`siyu serve` on a test database; without `serve_loop` the test drives the clock and delivery itself."""
    h = await Harness.create(db_url, start, scripts, staff=STAFF)
    accounts = StaffAccounts(h.app.db, h.clock, known=PASSWORDS)
    for staff, password in PASSWORDS.items():
        await accounts.set_password(staff, password)
    loop_task = asyncio.create_task(h.app.run_forever()) if serve_loop else None
    async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
        yield Console(h, client)
    if loop_task is not None:
        h.app.request_stop()
        await asyncio.wait_for(loop_task, timeout=60)
    await h.close()


@pytest.fixture
async def console(db_url: str, start) -> AsyncIterator[Console]:  # type: ignore[no-untyped-def]
    async for c in console_for(db_url, start):
        yield c


async def customer_of(h: Harness, external_id: str, name: str, guide: str | None = None) -> int:
    await h.customer_adds_guide(external_id, name, guide_id=guide)
    async with h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == external_id))
    assert contact is not None
    return contact.id


# --- who may do what ---------------------------------------------------------------------------

async def test_nobody_gets_in_without_a_login_or_a_token(console: Console) -> None:
    for path in ("/api/conversations", "/api/session", "/api/faq/intents", "/api/journeys/new_customer/funnel"):
        body = await console.get(path, status=401)
        assert "请先登录" in body["error"]
    assert "令牌无效" in (await console.get("/api/conversations", status=401,
                                        headers={"Authorization": "Bearer siyu_made-up"}))["error"]
    await console.post("/api/conversations/1/release", status=401)
    wrong = await console.client.post("/api/session", json={"staff": "xiaomei", "password": "nope-nope"})
    assert wrong.status == 401 and (await wrong.json())["error"] == "工号或密码不对"


async def test_login_cookie_is_strict_and_every_change_needs_the_csrf_token(console: Console) -> None:
    customer = await customer_of(console.harness, "lin", "林小姐")
    response = await console.client.post("/api/session", json={"staff": "xiaomei", "password": PASSWORDS["xiaomei"]})
    me = await response.json()
    assert (me["staff"], me["name"], me["role"]) == ("xiaomei", "小美", "guide")
    cookies = response.headers.getall("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("siyu_console="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Secure" not in session_cookie
    assert PASSWORDS["xiaomei"] not in " ".join(cookies)
    headers = {"X-CSRF-Token": me["csrf_token"]}

    assert (await console.get("/api/session"))["staff"] == "xiaomei"  # reading needs only the cookie
    refused = await console.post(f"/api/conversations/{customer}/takeover", status=403)
    assert "CSRF" in refused["error"]
    await console.post(f"/api/conversations/{customer}/takeover", status=403, headers={"X-CSRF-Token": "guess"})
    cross = await console.post(f"/api/conversations/{customer}/takeover", status=403,
                               headers={**headers, "Origin": "https://evil.example"})
    assert "其他网站" in cross["error"]
    taken = await console.post(f"/api/conversations/{customer}/takeover", headers=headers)
    assert taken["state"] == "human"

    # logging out ends the session on the server, not only in this browser
    out = await console.client.delete("/api/session", headers=headers)
    assert out.status == 204
    await console.get("/api/conversations", status=401)


async def test_https_login_cookie_is_secure(console: Console) -> None:
    response = await console.client.post("/api/session", json={"staff": "aqing", "password": PASSWORDS["aqing"]},
                                         headers={"X-Forwarded-Proto": "https"})
    assert all("Secure" in c for c in response.headers.getall("Set-Cookie"))


async def test_bearer_token_needs_no_cookie_or_csrf(console: Console) -> None:
    customer = await customer_of(console.harness, "lin", "林小姐")
    token = await StaffAccounts(console.harness.app.db, console.harness.clock).create_token("xiaomei")
    auth = {"Authorization": f"Bearer {token}"}
    listed = await console.get("/api/conversations", headers=auth)
    assert [c["customer"] for c in listed] == ["林小姐"]
    released = await console.post(f"/api/conversations/{customer}/release", headers=auth)
    assert released["state"] == "bot"


async def test_a_guide_sees_only_her_own_customers_and_no_dashboard(console: Console) -> None:
    h = console.harness
    mine = await customer_of(h, "lin", "林小姐")
    theirs = await customer_of(h, "wu", "吴先生", guide="guide-xiaoli")
    headers = await console.log_in("xiaomei")
    assert [c["id"] for c in await console.get("/api/conversations")] == [mine]
    for path in (f"/api/conversations/{theirs}/messages", f"/api/conversations/{theirs}/timeline"):
        assert "其他导购" in (await console.get(path, status=403))["error"]
    await console.post(f"/api/conversations/{theirs}/messages", {"text": "你好"}, status=403, headers=headers)
    await console.post(f"/api/conversations/{theirs}/takeover", status=403, headers=headers)
    assert "运营" in (await console.get("/api/journeys/new_customer/funnel", status=403))["error"]
    await console.get("/api/guard/events", status=403)

    await console.log_in("aqing")  # an operator sees everyone
    assert {c["id"] for c in await console.get("/api/conversations")} == {mine, theirs}
    assert (await console.get(f"/api/conversations/{theirs}/messages"))["conversation"]["guide"] == "xiaoli"


async def test_failed_logins_elsewhere_never_lock_a_guide_out(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    h = await Harness.create(db_url, start, SCRIPTS, staff=STAFF)
    try:
        accounts = StaffAccounts(h.app.db, h.clock, known=PASSWORDS)
        await accounts.set_password("xiaomei", PASSWORDS["xiaomei"])
        for _ in range(MAX_FAILURES_PER_STAFF + 3):
            await accounts.login("xiaomei", "guess-guess", "203.0.113.9")
        assert await accounts.login("xiaomei", PASSWORDS["xiaomei"], "203.0.113.9") is LoginResult.THROTTLED
        assert await accounts.login("xiaomei", PASSWORDS["xiaomei"], "198.51.100.7") is LoginResult.OK
        h.clock.advance(timedelta(minutes=16))  # and the guesser's own lockout ends by itself
        assert await accounts.login("xiaomei", PASSWORDS["xiaomei"], "203.0.113.9") is LoginResult.OK
    finally:
        await h.close()


# --- the guide's workspace --------------------------------------------------------------------

async def frames_of(ws: ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next `count` chat messages this page shows."""
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        frame = await asyncio.wait_for(ws.receive_json(), timeout=10)
        if frame["type"] == "message":
            seen.append(frame)
    return seen


async def test_hand_off_inbox_reply_reaches_a_web_chat_customer_live_and_release(console: Console) -> None:
    customer = await console.client.ws_connect("/ws")
    await customer.send_json({"type": "join", "role": "customer", "name": "林小姐"})
    page_session = (await asyncio.wait_for(customer.receive_json(), timeout=10))["session"]
    await frames_of(customer, 1)  # the greeting
    await customer.send_json({"type": "say", "id": "q1", "text": UNKNOWN_QUESTION})
    assert (await frames_of(customer, 1))[0]["text"] == HANDOFF_REPLY

    headers = await console.log_in("xiaomei")
    inbox = await console.get("/api/conversations")
    first = inbox[0]
    assert (first["customer"], first["channel"], first["state"]) == ("林小姐", "webchat", "handoff")
    assert first["waiting_since"] is not None and first["last_message_at"] is not None
    assert [c["id"] for c in await console.get("/api/conversations?state=handoff")] == [first["id"]]

    # while she waits for a person, the bot still answers what it is sure of
    await customer.send_json({"type": "say", "id": "q2", "text": "包邮吗"})
    assert (await frames_of(customer, 1))[0]["text"].startswith("答·运费")

    history = await console.get(f"/api/conversations/{first['id']}/messages")
    said = {item["text"]: item for item in history["items"] if item["kind"] == "message"}
    assert said[UNKNOWN_QUESTION]["handed_off"] and said[UNKNOWN_QUESTION]["reason"]["tier"] == "handoff"
    answer = next(i for t, i in said.items() if t.startswith("答·运费"))
    assert answer["reason"]["kind"] == "faq" and answer["reason"]["intent"] == "shipping_fee"
    assert answer["reason"]["tier"] == "fuzzy" and answer["reason"]["confidence"] >= 0.9
    greeting = next(i for t, i in said.items() if t.startswith("问候"))
    assert (greeting["reason"]["kind"], greeting["reason"]["journey"], greeting["reason"]["step"]) == (
        "journey", "new_customer", "greeting")
    assert answer["local_time"].count(":") == 1  # 「2026-03-02 10:15」, local

    sent = await console.post(f"/api/conversations/{first['id']}/messages", {"text": "林小姐您好，我是小美，我来帮您对比"},
                              status=201, headers=headers)
    assert sent["conversation"]["state"] == "human"
    joined, reply = await frames_of(customer, 2)  # live, on her open page
    assert joined["text"].startswith("导购小美已加入对话") and joined["from"] == "bot"
    assert (reply["from"], reply["name"], reply["text"]) == ("guide", "小美", "林小姐您好，我是小美，我来帮您对比")
    again = await console.client.ws_connect("/ws")  # she reloads the page: still the guide's words, not the bot's
    await again.send_json({"type": "join", "role": "customer", "name": "林小姐", "session": page_session})
    history = (await asyncio.wait_for(again.receive_json(), timeout=10))["history"]
    said = {h["text"]: h for h in history}
    assert (said[reply["text"]]["from"], said[reply["text"]]["name"]) == ("guide", "小美")
    assert said[joined["text"]]["from"] == "bot" and "name" not in said[joined["text"]]
    await again.close()

    # a guide has the chat: the bot stays quiet, even for what it knows
    await customer.send_json({"type": "say", "id": "q3", "text": "包邮吗"})
    await wait_for_message(console.harness, "包邮吗", count=2)
    await console.harness.app.tick()
    async with console.harness.app.db.session() as session:
        answers = (await session.scalars(select(Message.text).where(
            Message.contact_id == first["id"], Message.direction == "out", Message.intent.isnot(None)))).all()
    assert answers == ["答·运费：测试订单满 99 元包邮"]  # only the one from before the guide joined

    released = await console.post(f"/api/conversations/{first['id']}/release", headers=headers)
    assert released["state"] == "bot"
    assert (await frames_of(customer, 1))[0]["text"].startswith("导购小美已离开对话")
    await customer.send_json({"type": "say", "id": "q4", "text": "包邮吗"})
    assert (await frames_of(customer, 1))[0]["text"].startswith("答·运费")
    await customer.close()


async def wait_for_message(h: Harness, text: str, count: int) -> None:
    """Until the engine has stored `count` inbound messages with this text."""
    for _ in range(500):
        async with h.app.db.session() as session:
            found = (await session.scalars(select(Message).where(Message.text == text,
                                                                  Message.direction == "in"))).all()
        if len(found) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never arrived {count} times")


# --- teaching -----------------------------------------------------------------------------------

@pytest.fixture
async def own_scripts_console(db_url: str, start, tmp_path: Path) -> AsyncIterator[Console]:  # type: ignore[no-untyped-def]
    """A console on a copy of the fixture scripts, since teaching rewrites faq.yaml."""
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts)
    async for c in console_for(db_url, start, scripts, serve_loop=False):
        yield c


async def test_teaching_from_a_handed_off_question_changes_the_next_answer(own_scripts_console: Console) -> None:
    console, h = own_scripts_console, own_scripts_console.harness
    faq = h.app.library.root / "faq.yaml"
    await customer_of(h, "gao", "高小姐")
    await h.customer_says("gao", "可以开发票吗")
    assert h.texts("gao")[-1] == HANDOFF_REPLY
    headers = await console.log_in("xiaomei")
    question = next(i for i in (await console.get("/api/conversations/1/messages"))["items"]
                    if i["text"] == "可以开发票吗")
    assert question["handed_off"]
    async with h.app.db.session() as session, session.begin():  # as if the LLM tier had been asked, and shrugged
        asked = await session.get(Message, question["message_id"])
        assert asked is not None
        await record_llm_call(session, asked, "fake-model", 120.0, None, 0.3, None, False, h.clock.now())

    created = await console.post("/api/faq/intents", {
        "id": "invoice", "answer": "答·发票：测试订单可以开电子发票", "examples": ["可以开发票吗", "能开发票吗"],
        "message_id": question["message_id"]}, status=201, headers=headers)
    assert created["created"] and created["examples"] == ["可以开发票吗", "能开发票吗"]
    async with h.app.db.session() as session:  # the guide's answer judges the LLM tier's call about it
        call = await session.scalar(select(LlmCall).where(LlmCall.message_id == question["message_id"]))
    assert call is not None and (call.verdict, call.guide_intent) == ("corrected", "invoice")
    assert call.judged_at is not None
    text = faq.read_text(encoding="utf-8")
    assert text.startswith("# Test fixture: the intents the tests ask about")  # the operator's comments stay
    assert "id: invoice" in text and "examples: [你好, 你好呀, 在吗, 谢谢, 好的谢谢, 哈喽]" in text
    h.clock.advance(timedelta(hours=3))  # after the hand-off has timed out
    await h.customer_says("gao", "可以开发票吗")
    assert h.texts("gao")[-1] == "答·发票：测试订单可以开电子发票"  # answered at once, from the new intent

    await h.customer_says("gao", "快递走哪家啊")
    assert h.texts("gao")[-1] == HANDOFF_REPLY
    example = await console.post("/api/faq/examples", {"intent": "shipping_time", "text": "快递走哪家啊"},
                                 status=201, headers=headers)
    assert example["examples"][-1] == "快递走哪家啊"
    h.clock.advance(timedelta(hours=3))
    await h.customer_says("gao", "快递走哪家啊")
    assert h.texts("gao")[-1].startswith("答·发货")

    # what would break faq.yaml is refused, and the file stays as it was
    before = faq.read_text(encoding="utf-8")
    assert "已经是意图" in (await console.post("/api/faq/examples", {"intent": "shipping_fee", "text": "包邮吗"},
                                            status=409, headers=headers))["error"]
    await console.post("/api/faq/examples", {"intent": "no_such", "text": "随便"}, status=404, headers=headers)
    await console.post("/api/faq/intents", {"id": "invoice", "answer": "x", "examples": ["开票"]}, status=409,
                       headers=headers)
    bad = await console.post("/api/faq/intents", {"id": "blank", "answer": "x", "examples": ["   "]},
                             status=422, headers=headers)
    assert bad["error"].startswith("改动没有通过检查，faq.yaml 保持原样") and "faq.yaml:" in bad["error"]
    assert faq.read_text(encoding="utf-8") == before
    assert not list(faq.parent.glob(".faq-console-*"))  # no draft left behind


# --- tag, trigger with the policy's verdict, timeline ------------------------------------------

async def test_tag_trigger_preview_and_timeline_in_local_time(console: Console) -> None:
    h = console.harness
    customer = await customer_of(h, "zhou", "周小姐")
    headers = await console.log_in("xiaomei")
    tagged = await console.post(f"/api/conversations/{customer}/tags", {"tag": "vip"}, headers=headers)
    assert tagged["added"] and "vip" in tagged["conversation"]["tags"] and tagged["message"] == "已给 周小姐 打上标签 vip"

    preview = await console.post(f"/api/conversations/{customer}/trigger",
                                 {"journey": "new_customer", "step": "day3_followup", "dry_run": True}, headers=headers)
    assert not preview["scheduled"] and preview["text"].startswith("见面礼")
    # the greeting went out a moment ago and she is new: the policy would hold a proactive step back
    assert preview["preview"]["verdict"] in ("send", "defer")
    assert preview["preview"]["reason_text"] and not preview["preview"]["reason_text"].isascii()
    missing = await console.post(f"/api/conversations/{customer}/trigger", {"journey": "nope"}, status=422,
                                 headers=headers)
    assert "没有旅程 'nope'" in missing["error"]
    scheduled = await console.post(f"/api/conversations/{customer}/trigger",
                                   {"journey": "new_customer", "step": "day1_care"}, headers=headers)
    assert scheduled["scheduled"] and scheduled["message"].startswith("已安排 new_customer.day1_care 发给 周小姐")

    await h.run_for(timedelta(days=1, hours=5))
    await console.log_in("xiaomei")  # a day later: the 12-hour session has ended
    timeline = await console.get(f"/api/conversations/{customer}/timeline")
    assert timeline["zone"] == "Asia/Shanghai"
    greeting = timeline["entries"][-1]
    assert (greeting["step"], greeting["decision"], greeting["reason_text"]) == (
        "greeting", "sent", "回应顾客自己的动作，不计入频次")
    assert greeting["local_time"] == "2026-03-02 10:15"  # Shanghai time, as the guide reads it
    assert "已发送" in timeline["text"] and "reply" not in timeline["text"]


# --- a Telegram customer ----------------------------------------------------------------------

async def test_a_guide_reply_reaches_a_telegram_customer_through_the_fake_bot_api(tmp_path: Path, start) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes import FakeTelegram
    from tests.test_telegram import TelegramWorld, telegram_harness

    fake = FakeTelegram()
    api_base = await fake.start()
    h = await telegram_harness(fake, api_base, str(tmp_path / "t.db"), start)
    await StaffAccounts(h.app.db, h.clock).set_password("xiaomei", PASSWORDS["xiaomei"])
    world = TelegramWorld(h, fake, h.app.transports["telegram"])  # type: ignore[arg-type]
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            console = Console(h, client)
            await world.customer(1002, "Wang", "/start")
            await world.customer(1002, "Wang", "你们和隔壁那家比哪个好用")
            await world.until(lambda: HANDOFF_REPLY in world.texts_to(1002), seconds=30)
            headers = await console.log_in("xiaomei")
            waiting = (await console.get("/api/conversations"))[0]
            assert (waiting["channel"], waiting["state"]) == ("telegram", "handoff")
            await console.post(f"/api/conversations/{waiting['id']}/messages", {"text": "王先生您好，我是小美"},
                               status=201, headers=headers)
            await world.until(lambda: "王先生您好，我是小美" in world.texts_to(1002), seconds=30)
            said = world.texts_to(1002)
            assert said[said.index("王先生您好，我是小美") - 1].startswith("导购小美已加入对话")
    finally:
        await h.close()
        await fake.close()


async def test_wecom_customer_contact_replies_happen_in_wecom(console: Console) -> None:
    h = console.harness
    async with h.app.db.session() as session, session.begin():
        session.add(Contact(channel="wecom", external_id="wmABC", name="企微客户", guide_key="xiaomei", tags=[],
                            interests=[], opted_out=False, churned=False, replies=0, added_at=h.clock.now()))
    async with h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "wmABC"))
    assert contact is not None
    headers = await console.log_in("xiaomei")
    summary = await console.get(f"/api/conversations/{contact.id}")
    assert summary["can_reply"] is False and "企业微信" in summary["reply_note"]
    refused = await console.post(f"/api/conversations/{contact.id}/messages", {"text": "您好"}, status=409,
                                 headers=headers)
    assert refused["error"].startswith("企业微信客户联系的会话请导购直接在企业微信里回复")


# --- the operator's dashboard -------------------------------------------------------------------

async def test_funnel_counts_each_step_and_compares_the_variants(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    async for console in console_for(db_url, start, serve_loop=False):
        h = console.harness
        names = {f"c{i}": f"顾客{i}" for i in range(6)}
        for external, name in names.items():
            await h.customer_adds_guide(external, name)
        await h.run_for(timedelta(days=1, hours=1))  # day1_care has gone out to everyone
        await h.customer_says("c0", "谢谢")          # c0 replies within 48 h of day1_care
        await h.run_for(timedelta(days=3))           # c1 replies after the 48 h: not counted for day1_care
        await h.customer_says("c1", "好的谢谢")
        await h.app.handle(Event(EventKind.PURCHASED, "test", "c2", h.clock.now()))
        await console.log_in("aqing")
        funnel = await console.get("/api/journeys/new_customer/funnel?from=2026-03-01&to=2026-03-02")
        steps = {s["step"]: s for s in funnel["steps"]}
        assert [s["step"] for s in funnel["steps"]][:3] == ["greeting", "day1_care", "group_invite"]
        day1 = steps["day1_care"]
        assert (day1["enrolled"], day1["sent"], day1["replied"]) == (6, 6, 1)
        assert day1["purchased"] == 1 and day1["reply_rate"] == round(1 / 6, 4)
        day3 = steps["day3_followup"]
        assert set(day3["variants"]) == {"A", "B"}
        assert sum(v["sent"] for v in day3["variants"].values()) == day3["sent"]
        assert day3["ab_test"]["a"] == "A" and 0 <= day3["ab_test"]["p"] <= 1

        outside = await console.get("/api/journeys/new_customer/funnel?from=2026-04-01&to=2026-04-30")
        assert all(s["enrolled"] == 0 for s in outside["steps"])
        csv = await console.client.get("/api/journeys/new_customer/funnel?from=2026-03-01&to=2026-03-02&format=csv")
        assert csv.status == 200 and csv.headers["Content-Type"].startswith("text/csv")
        lines = (await csv.text()).lstrip("\ufeff").splitlines()
        assert lines[0].startswith("step,variant,enrolled,sent,replied_48h")
        assert "day1_care,全部,6,6,1,1" in lines[2] or any(l.startswith("day1_care,全部,6,6,1,1") for l in lines)
        bad = await console.get("/api/journeys/new_customer/funnel?from=March", status=400)
        assert "YYYY-MM-DD" in bad["error"]
        await console.get("/api/journeys/nope/funnel", status=404)

        decisions = await console.get("/api/dashboard/decisions?from=2026-03-01&to=2026-03-10")
        sent_day1 = [r for r in decisions["rows"] if r["day"] == "2026-03-03" and r["decision"] == "sent"]
        assert sent_day1 and sent_day1[0]["reason_text"] == "符合频次、间隔、免打扰时段和发送窗口"
        faq = await console.get("/api/dashboard/faq?from=2026-03-01&to=2026-03-10")
        assert {s["intent"] for s in faq["shares"]} >= {"hello"}
        await h.customer_removes_guide("c5")
        churn = await console.get("/api/dashboard/churn?from=2026-03-01&to=2026-03-10")
        assert [c["customer"] for c in churn["customers"]] == ["顾客5"]
        assert (await console.get("/api/guard/summary"))["rules"] == []
        assert await console.get("/api/guard/events") == []


async def test_journey_preview_shows_each_message_with_the_policy_decision(console: Console) -> None:
    headers = await console.log_in("aqing")
    preview = await console.post("/api/journeys/new_customer/preview", {
        "name": "预览林", "interests": ["sensitive"], "source": "小红书", "timezone": "Asia/Shanghai", "days": 35,
        "start": "2026-03-02T22:30:00+08:00"}, headers=headers)
    lines = preview["lines"]
    assert lines[0]["kind"] == "enrolled"
    sent = [l for l in lines if l["kind"] == "sent"]
    assert sent[0]["step"] == "greeting" and sent[0]["text"].startswith("问候：预览林您好")
    assert any(l["step"] == "day30_interest" and "敏感肌" in l["text"] for l in sent)
    assert all(l["reason_text"] for l in lines[1:])
    guide = await console.log_in("xiaomei")
    await console.post("/api/journeys/new_customer/preview", {}, status=403, headers=guide)
    await console.post("/api/journeys/nope/preview", {}, status=403, headers=guide)
    await console.log_in("aqing")
    # nothing of the preview reached the brand's own database
    async with console.harness.app.db.session() as session:
        assert (await session.scalar(select(Contact).where(Contact.name == "预览林"))) is None


# --- the guard's log ------------------------------------------------------------------------------

async def test_an_operator_marks_a_guard_action_not_spam_and_a_message_spam(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    async for console in console_for(db_url, start, serve_loop=False):
        h = console.harness
        await customer_of(h, "chatty", "陈小姐")  # a customer who is also in the group
        await h.member_joins_group("chatty", "g1")
        h.clock.advance(timedelta(days=3))
        await h.member_says_in_group("chatty", "g1", "刷单兼职找我")
        await h.member_says_in_group("chatty", "g1", "周末有活动吗")
        headers = await console.log_in("aqing")
        events = await console.get("/api/guard/events")
        assert len(events) == 1 and events[0]["member"] == "chatty" and events[0]["status"] == "acted"
        assert (events[0]["member_name"], events[0]["reason"]) == ("陈小姐", "含违禁词「刷单」")  # as staff read it
        assert (events[0]["rule"], events[0]["rule_names"]) == ("banned_word", ["违禁词"])  # the rule in Chinese too
        summary = await console.get("/api/guard/summary")
        assert sum(r["count"] for r in summary["rules"]) >= 1
        assert {r["name"] for r in summary["rules"]} == {"违禁词"}

        cleared = await console.post(f"/api/guard/events/{events[0]['id']}/not-spam", headers=headers)
        assert cleared["verdict"] == "not_spam" and "撤销" in cleared["message"]
        assert (await console.get("/api/guard/events"))[0]["verdict"] == "not_spam"

        async with h.app.db.session() as session:
            quiet = await session.scalar(select(Message.id).where(Message.text == "周末有活动吗"))
        marked = await console.post(f"/api/guard/messages/{quiet}/spam", headers=headers)
        assert marked["verdict"] == "spam"
        await console.post("/api/guard/events/99999/not-spam", status=404, headers=headers)
        guide = await console.log_in("xiaomei")
        await console.post(f"/api/guard/events/{events[0]['id']}/spam", status=403, headers=guide)

        # a second strike muted a member: "not spam" lifts the mute as well
        headers = await console.log_in("aqing")
        await h.member_joins_group("loud", "g1")
        h.clock.advance(timedelta(hours=1))
        for text in ("代开发票 找我", "兼 职 日 结，一天 500"):  # (staff cleared 「刷单兼职找我」 above)
            await h.member_says_in_group("loud", "g1", text)
        muted = (await console.get("/api/guard/events"))[0]
        assert (muted["member"], muted["action"]) == ("loud", "mute")
        await console.post(f"/api/guard/events/{muted['id']}/not-spam", headers=headers)
        await h.app.tick()
        assert h.group_log("g1")[-1] == "unmute → loud"
