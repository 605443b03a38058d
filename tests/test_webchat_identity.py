"""Who is who on the web chat, attacked through the real page endpoints (issue 14, "Staff identity is
never proven" and "Bad inbound input"): guides must log in, customers are their signed session and not
their nickname, message ids belong to their sender, and a hostile frame never ends the socket.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.inbound import cut_note
from bot.staff_accounts import MAX_FAILURES_PER_CLIENT, MAX_FAILURES_PER_STAFF, StaffAccounts
from storage.models import Contact, KeyValue, Message, Staff, StaffCredential
from tests.conftest import ROOT
from tests.harness import CONFIG, SCRIPTS
from tests.test_webchat import GUIDE_PASSWORD, Site, client, join, log_in, next_of, site  # noqa: F401

HANDOFF_QUESTION = "你们和别家的面霜比哪个好"  # the test FAQ cannot answer it: a hand-off
HANDOFF_REPLY = "转人工：这个问题请测试顾问来回答"
PII = "我的手机 13800138000，寄到静安区延安西路 1 号"


async def frames_until(ws: ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first of `kind`."""
    seen = []
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), timeout=5)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


async def customer_with_history(client: TestClient, name: str) -> tuple[ClientWebSocketResponse, str]:
    """A customer who gave her phone and address, and asked something only a person can answer."""
    ws = await join(client, "customer", name)
    session = (await next_of(ws, "joined"))["session"]
    await next_of(ws, "message")  # greeting
    await ws.send_json({"type": "say", "id": "1", "text": PII})
    await next_of(ws, "message")
    return ws, session


async def contact(site: Site, name: str) -> Contact:
    async with site.harness.app.db.session() as session:
        found = await session.scalar(select(Contact).where(Contact.name == name))
    assert found is not None
    return found


# --- staff identity is proven ---

async def test_guide_join_by_name_alone_is_refused(site: Site) -> None:
    victim, _ = await customer_with_history(site.client, "林小姐")
    ws = await site.client.ws_connect("/ws")
    await ws.send_json({"type": "join", "role": "guide", "name": "xiaomei"})  # the attack as found
    assert "导购需要先登录" in (await next_of(ws, "error"))["text"]
    for command in ("/why 林小姐", "/optout 林小姐", "/tag 林小姐 vip"):
        await ws.send_json({"type": "say", "id": command, "text": command})
        assert (await next_of(ws, "error"))["text"].startswith("请先进入聊天")
    assert not (await contact(site, "林小姐")).opted_out
    await ws.close()
    await victim.close()


async def test_wrong_password_forged_cookie_and_foreign_origin_are_refused(site: Site) -> None:
    client = site.client
    assert await log_in(client, "xiaomei", "not the password") == 401
    assert await log_in(client, "nobody", GUIDE_PASSWORD) == 401
    ws = await join(client, "guide")
    assert "导购需要先登录" in (await next_of(ws, "error"))["text"]
    await ws.close()

    # a cookie made up by hand, or signed with another secret, proves nothing
    for forged in ("eyJzdGFmZiI6InhpYW9tZWkifQ.AAAA", "x" * 40):
        client.session.cookie_jar.update_cookies({"siyu_staff": forged})
        ws = await join(client, "guide")
        assert "导购需要先登录" in (await next_of(ws, "error"))["text"]
        await ws.close()

    # a real login cookie, but the socket is opened by another site's page (cross-site WebSocket hijacking)
    assert await log_in(client) == 200
    ws = await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    await ws.send_json({"type": "join", "role": "guide"})
    assert "导购需要先登录" in (await next_of(ws, "error"))["text"]
    await ws.close()


async def test_login_cookie_is_http_only_strict_and_dies_with_the_password(site: Site) -> None:
    response = await site.client.post("/webchat/login", json={"staff": "xiaomei", "password": GUIDE_PASSWORD})
    assert response.status == 200 and (await response.json())["name"] == "小美"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert GUIDE_PASSWORD not in cookie
    assert "Secure" not in cookie  # plain http here

    # a new password ends the sessions of the old one
    await StaffAccounts(site.harness.app.db, site.harness.clock).set_password("xiaomei", "a brand new one")
    ws = await join(site.client, "guide")
    assert "登录已失效" in (await next_of(ws, "error"))["text"]
    await ws.close()

    # a login only takes JSON (a cross-site form cannot post it), and garbage gets 400, never 500
    form = await site.client.post("/webchat/login", data={"staff": "xiaomei", "password": GUIDE_PASSWORD})
    assert form.status == 415
    for body in (b"\xff\xfe", b"[" * 100_000, b'{"staff": {"a": 1}, "password": "x"}',
                 b'{"staff": "xiaomei", "password": "\\ud800"}'):
        bad = await site.client.post("/webchat/login", data=body, headers={"Content-Type": "application/json"})
        assert bad.status == 400, body[:20]

    # behind an HTTPS proxy the cookie is Secure (last: the test client then keeps it off plain http)
    behind_https = await site.client.post("/webchat/login", json={"staff": "xiaomei", "password": "a brand new one"},
                                          headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in behind_https.headers["Set-Cookie"]


async def test_logged_in_guide_gets_the_handoff_note_and_runs_why(site: Site) -> None:
    assert await log_in(site.client) == 200
    guide = await join(site.client, "guide", "anything typed here is ignored")
    joined = await next_of(guide, "joined")
    assert (joined["role"], joined["name"]) == ("guide", "小美")

    customer = await join(site.client, "customer", "王女士")
    await next_of(customer, "message")  # greeting
    await customer.send_json({"type": "say", "id": "q1", "text": HANDOFF_QUESTION})
    assert (await next_of(customer, "message"))["text"] == HANDOFF_REPLY
    note = await next_of(guide, "message")
    assert note["text"].startswith("【转人工】王女士")

    await guide.send_json({"type": "say", "id": "w1", "text": "/why 王女士"})
    why = (await next_of(guide, "message"))["text"]
    assert why.startswith("王女士（#")
    await guide.close()
    await customer.close()


async def test_failed_logins_are_throttled_per_staff_id_and_per_address(site: Site) -> None:
    client, clock = site.client, site.harness.clock
    # guesses sent all at once are counted before they are checked: no more than the limit get checked
    statuses = await asyncio.gather(*(log_in(client, "xiaomei", f"guess-{n}") for n in range(8)))
    assert statuses.count(401) <= MAX_FAILURES_PER_STAFF and set(statuses) <= {401, 429}
    clock.advance(timedelta(minutes=16))

    for _ in range(MAX_FAILURES_PER_STAFF):
        assert await log_in(client, "xiaomei", "guess-guess") == 401
    # even the right password is refused now: a guesser learns nothing more
    response = await client.post("/webchat/login", json={"staff": "xiaomei", "password": GUIDE_PASSWORD})
    assert response.status == 429 and "15 分钟" in (await response.json())["error"]

    clock.advance(timedelta(minutes=16))
    assert await log_in(client) == 200

    # one address trying many staff ids is slowed as well (the test client is always 127.0.0.1)
    for n in range(MAX_FAILURES_PER_CLIENT):
        assert await log_in(client, f"guess{n}", "guess-guess") == 401
    assert await log_in(client) == 429

    # the counts live in the database, so every process sharing it enforces them; no raw address is kept
    async with site.harness.app.db.session() as session:
        keys = (await session.scalars(select(KeyValue.key))).all()
    assert not [k for k in keys if "127.0.0.1" in k or "guess" in k]


# --- a customer is who her session proves, never her nickname ---

async def test_customer_with_a_staff_name_is_a_customer(site: Site) -> None:
    victim, _ = await customer_with_history(site.client, "林小姐")
    impostor = await join(site.client, "customer", "xiaomei")
    await next_of(impostor, "joined")
    await next_of(impostor, "message")  # greeted like any customer
    await impostor.send_json({"type": "say", "id": "c1", "text": "/optout 林小姐"})
    await impostor.send_json({"type": "say", "id": "c2", "text": "/why 林小姐"})
    replies = [f["text"] for f in await frames_until(impostor, "message") + await frames_until(impostor, "message")
               if f["type"] == "message"]
    assert not any("13800138000" in text or "触达" in text for text in replies)
    assert not (await contact(site, "林小姐")).opted_out
    async with site.harness.app.db.session() as session:
        roles = set((await session.scalars(select(Message.sender_role).where(
            Message.text.in_(["/optout 林小姐", "/why 林小姐"])))).all())
    assert roles == {"customer"}
    await impostor.close()
    await victim.close()


async def test_member_with_a_staff_name_is_still_guarded(site: Site) -> None:
    bystander = await join(site.client, "member", "安分")
    await next_of(bystander, "joined")
    impostor = await join(site.client, "member", "xiaomei")
    await next_of(impostor, "joined")
    await impostor.send_json({"type": "say", "id": "s1", "text": "高仿大牌包包 一手货源"})
    spam = await next_of(bystander, "message")
    assert spam["from"] == "xiaomei" and spam["mine"] is False
    assert (await next_of(bystander, "deleted"))["id"] == spam["id"]
    await impostor.close()
    await bystander.close()


async def test_same_nickname_in_another_browser_gets_none_of_her_history(site: Site) -> None:
    victim, session = await customer_with_history(site.client, "林小姐")
    await victim.close()

    # another browser, same nickname: a different customer with an empty history
    other = await join(site.client, "customer", "林小姐")
    joined = await next_of(other, "joined")
    assert joined["history"] == [] and joined["session"] != session
    await other.close()

    # her id with a made-up signature, or a bare id, proves nothing either
    customer_id = session.split(".")[0]
    for forged in (f"{customer_id}.{'A' * 43}", customer_id, f"{customer_id}.", "c_x.y"):
        ws = await join(site.client, "customer", "林小姐", forged)
        joined = await next_of(ws, "joined")
        assert joined["history"] == [] and not joined["session"].startswith(customer_id)
        await ws.close()

    # she, with the session her page kept, sees all of it
    ws = await join(site.client, "customer", "林小姐", session)
    history = (await next_of(ws, "joined"))["history"]
    assert PII in [m["text"] for m in history]
    assert [m["mine"] for m in history if m["text"] == PII] == [True]
    await ws.close()


async def test_customer_ids_are_never_staff_identities(site: Site) -> None:
    ws = await join(site.client, "customer", "xiaomei")
    await next_of(ws, "joined")
    await ws.close()
    async with site.harness.app.db.session() as session:
        ids = (await session.scalars(select(Contact.external_id).where(Contact.channel == "webchat"))).all()
    assert ids and all(i.startswith("c_") and len(i) >= 20 for i in ids)


# --- message ids belong to their sender ---

async def test_two_customers_choosing_the_same_message_id_both_get_answers(site: Site) -> None:
    first = await join(site.client, "customer", "甲")
    second = await join(site.client, "customer", "乙")
    for ws in (first, second):
        await next_of(ws, "message")  # greeting
    for ws in (first, second):
        await ws.send_json({"type": "say", "id": "1", "text": "包邮吗"})
        assert (await next_of(ws, "message"))["text"].startswith("答·运费")
    await first.close()
    await second.close()


async def test_two_members_choosing_the_same_message_id_both_get_through(site: Site) -> None:
    a = await join(site.client, "member", "阿May")
    await next_of(a, "joined")
    b = await join(site.client, "member", "Kiki")
    await next_of(b, "joined")
    await a.send_json({"type": "say", "id": "same", "text": "@bot 什么时候发货"})
    await b.send_json({"type": "say", "id": "same", "text": "@bot 包邮吗"})
    answers = []
    while len(answers) < 2:
        frame = await next_of(a, "message")
        if frame["from"] == "bot":
            answers.append(frame["text"])
    assert any(t.startswith("答·发货") for t in answers) and any(t.startswith("答·运费") for t in answers)
    await a.close()
    await b.close()


# --- hostile frames get a Chinese error; the socket lives on ---

async def test_hostile_frames_get_an_error_and_the_socket_stays_open(site: Site) -> None:
    ws = await site.client.ws_connect("/ws")
    await ws.send_str('{"type": "join", "role": "customer", "name": "\\ud800"}')
    assert "无法识别的字符" in (await next_of(ws, "error"))["text"]
    await ws.send_json({"type": "join", "role": "customer", "name": "周女士"})
    await next_of(ws, "joined")
    await next_of(ws, "message")  # greeting

    hostile = [
        '{"type": "say", "id": "x1", "text": "\\ud800"}',   # the lone surrogate as found
        '{"type": "say", "id": "\\udfff", "text": "hi"}',
        "not json at all",
        "[" * 60_000,                                          # deeper than Python recurses
        '{"type": "say", "text": "' + "长" * 70_000 + '"}',     # past the frame cap, under the protocol's
        '{"type": "say", "text": {"nested": "object"}}',
        '{"type": "say", "text": "hi", "id": 7}',
        '{"type": "say", "text": "hi", "id": "a\\u0000b"}',             # an id no database keeps
        '{"type": "say", "text": "hi", "id": "' + "x" * 65 + '"}',
        '{"type": "say", "text": "hi", "mention": "yes"}',
        '{"type": "join", "role": "admin", "name": "x"}',
        '{"type": "join", "role": "customer", "name": "x", "session": 12345}',
        '{"type": 5}',
        '{"type": "shout"}',
        '["type", "say"]',
        "null",
    ]
    for raw in hostile:
        await ws.send_str(raw)
        error = await next_of(ws, "error")
        assert any("\u4e00" <= ch <= "\u9fff" for ch in error["text"]), raw[:30]  # said in Chinese

    # the socket still works: it answers
    await ws.send_json({"type": "say", "id": "ok", "text": "包邮吗"})
    assert (await next_of(ws, "message"))["text"].startswith("答·运费")

    # a NUL is stored cleanly or refused, never the end of the socket
    await ws.send_json({"type": "say", "id": "nul", "text": "a\u0000b"})
    await ws.send_json({"type": "join", "role": "customer", "name": "周女士"})
    await next_of(ws, "joined")
    assert not ws.closed
    await ws.close()


# --- the CLI ---

def siyu(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIYU_DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args, "--config", str(CONFIG), "--scripts", str(SCRIPTS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, input=stdin, env=env)


async def test_cli_sets_the_password_the_login_checks(site: Site, db_url: str) -> None:
    result = await asyncio.to_thread(siyu, db_url, "staff", "password", "xiaomei", "--password-stdin",
                                     stdin="set by the operator\n")
    assert result.returncode == 0, result.stderr
    assert await log_in(site.client, "xiaomei", GUIDE_PASSWORD) == 401  # the old one is gone
    assert await log_in(site.client, "xiaomei", "set by the operator") == 200
    async with site.harness.app.db.session() as session:
        stored = (await session.scalars(select(StaffCredential.secret_hash))).all()
    assert stored and all(h.startswith("$argon2") and "set by the operator" not in h for h in stored)

    unknown = await asyncio.to_thread(siyu, db_url, "staff", "password", "mallory", "--password-stdin",
                                      stdin="whatever-long\n")
    assert unknown.returncode == 1 and "no staff member with id 'mallory'" in unknown.stderr
    short = await asyncio.to_thread(siyu, db_url, "staff", "password", "xiaomei", "--password-stdin", stdin="abc\n")
    assert short.returncode == 1 and "too short" in short.stderr


async def test_cli_token_is_printed_last_stored_hashed_and_revoked(site: Site, db_url: str) -> None:
    accounts = StaffAccounts(site.harness.app.db, site.harness.clock)
    result = await asyncio.to_thread(siyu, db_url, "staff", "token", "xiaomei")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("siyu_") and len(token) > 40
    assert await accounts.staff_for_token(token) == "xiaomei"
    async with site.harness.app.db.session() as session:
        stored = (await session.scalars(select(StaffCredential.secret_hash).where(
            StaffCredential.kind == "token"))).all()
    assert len(stored) == 1 and token not in stored[0]

    revoked = await asyncio.to_thread(siyu, db_url, "staff", "token", "xiaomei", "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert "removed 1" in revoked.stdout
    assert await accounts.staff_for_token(token) is None


async def test_a_long_message_is_cut_by_the_one_cap_with_its_note(site: Site) -> None:
    ws = await join(site.client, "customer", "话多")
    await next_of(ws, "message")  # greeting
    await ws.send_json({"type": "say", "id": "long", "text": "长" * 2500})
    await next_of(ws, "message")
    limit = site.harness.app.settings.inbound.max_chars
    async with site.harness.app.db.session() as session:
        stored = await session.scalar(select(Message.text).where(Message.direction == "in",
                                                                 Message.text.startswith("长")))
    assert stored == "长" * limit + "\n" + cut_note(limit)  # cut once, where every channel is cut, and said so
    await ws.close()


async def test_a_guide_without_a_web_chat_identity_cannot_log_in_to_the_page(site: Site) -> None:
    """The engine knows staff by their configured identities, so a login as anyone else would be a customer."""
    async with site.harness.app.db.session() as session, session.begin():
        session.add(Staff(key="ahua", channel="test", external_id="guide-ahua", name="阿华"))  # no webchat id
    await StaffAccounts(site.harness.app.db, site.harness.clock, known={"ahua"}).set_password("ahua", GUIDE_PASSWORD)
    assert await log_in(site.client, "ahua", GUIDE_PASSWORD) == 401
    assert await log_in(site.client, "xiaomei", GUIDE_PASSWORD) == 200


async def test_one_socket_cannot_become_many_customers(site: Site) -> None:
    """Joining again and again without a session on one connection is one customer, not a flood of them."""
    ws = await site.client.ws_connect("/ws")
    sessions = set()
    for n in range(5):
        await ws.send_json({"type": "join", "role": "customer", "name": f"刷屏{n}"})
        sessions.add((await next_of(ws, "joined"))["session"])
    assert len(sessions) == 1
    async with site.harness.app.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Contact))
    assert count == 1
    await ws.close()
