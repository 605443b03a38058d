"""WeCom against a fake qyapi on 127.0.0.1: callback crypto, customer contact, assisted sends, 微信客服."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from adapters.wecom.api import WeComClient, WeComError
from adapters.wecom.crypto import WeComCrypto, signature
from bot.app import build_web_app
from storage.models import Contact, InboxItem, Message, Touch
from tests.conftest import ROOT
from tests.fakes import FakeQyapi
from tests.harness import SCRIPTS, Harness

AES_KEY = base64.b64encode(bytes(range(32))).decode()[:43]
TOKEN = "callbacktoken"
CORP = "wwcorp0001"
GUIDE = "guide01"
STAFF = ({"id": "xiaomei", "name": "小美", "identities": {"wecom": GUIDE}},)


def add_contact_xml(customer: str, welcome: str = "WELCOMECODE", state: str = "store-qr-01", guide: str = GUIDE) -> str:
    """WeCom's add_external_contact callback: `guide` is the member the customer added."""
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]>"
            f"</ChangeType><UserID><![CDATA[{guide}]]></UserID><ExternalUserID><![CDATA[{customer}]]>"
            f"</ExternalUserID><State><![CDATA[{state}]]></State><WelcomeCode><![CDATA[{welcome}]]></WelcomeCode>"
            f"</xml>")


class WeComWorld:
    def __init__(self, h: Harness, fake: FakeQyapi, client: TestClient) -> None:
        self.h, self.fake, self.client = h, fake, client
        self.crypto = WeComCrypto(TOKEN, AES_KEY, CORP)

    def query(self, encrypt: str, timestamp: int | None = None, forge: bool = False) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(self.h.clock.now().timestamp()))
        sig = signature(TOKEN, ts, "nonce1", encrypt)
        return {"msg_signature": "0" * 40 if forge else sig, "timestamp": ts, "nonce": "nonce1"}

    async def post(self, inner: str, crypto: WeComCrypto | None = None, **kwargs: Any) -> int:
        encrypt = (crypto or self.crypto).encrypt(inner)
        body = f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        response = await self.client.post("/wecom/callback", params=self.query(encrypt, **kwargs), data=body)
        return response.status

    async def stored(self) -> int:
        async with self.h.app.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(InboxItem)) or 0)


@contextlib.asynccontextmanager
async def wecom_world(db_url: str, start: datetime, scripts: Path = SCRIPTS, wecom_extra: dict[str, Any] | None = None,
                      staff: Sequence[dict[str, Any]] = STAFF, **overrides: Any) -> AsyncIterator[WeComWorld]:
    """siyu configured for a WeCom corp whose qyapi is a fake server, with its callback served."""
    fake = FakeQyapi()
    api = await fake.start()
    wecom = {"corp_id": CORP, "token": TOKEN, "encoding_aes_key": AES_KEY, "secret": fake.secret,
             "agent_id": "1000002", "api_base": api, "timestamp_window": 300, **(wecom_extra or {})}
    h = await Harness.create(db_url, start, scripts, staff=staff,
                             adapters={"webchat": {"enabled": False}, "wecom": wecom}, **overrides)
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            yield WeComWorld(h, fake, client)
    finally:
        await h.close()
        await fake.close()


@pytest.fixture
async def world(db_url: str, start: datetime) -> AsyncIterator[WeComWorld]:
    # guides may bypass siyu's own caps here, so the platform's 5-message rule is what is tested
    async with wecom_world(db_url, start, policy={"guides_may_bypass_caps": True}) as world:
        yield world


async def test_url_verification_echoes_the_decrypted_echostr(world: WeComWorld) -> None:
    echostr = world.crypto.encrypt("1616140317555161061")
    response = await world.client.get("/wecom/callback", params={**world.query(echostr), "echostr": echostr})
    assert response.status == 200 and await response.text() == "1616140317555161061"
    forged = await world.client.get("/wecom/callback", params={**world.query(echostr, forge=True),
                                                                "echostr": echostr})
    assert forged.status == 403


def test_encrypt_decrypt_round_trip_and_layout() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    encrypted = crypto.encrypt("<xml>你好</xml>", random16=b"r" * 16)
    assert crypto.decrypt(encrypted) == "<xml>你好</xml>"
    raw = base64.b64decode(encrypted)
    assert len(raw) % 32 == 0  # PKCS#7 to a 32-byte block
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    key = base64.b64decode(AES_KEY + "=")
    plain = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor().update(raw)
    body = "<xml>你好</xml>".encode()
    assert plain[:16] == b"r" * 16 and int.from_bytes(plain[16:20], "big") == len(body)
    assert plain[20:20 + len(body)] == body and plain[20 + len(body):].startswith(CORP.encode())


async def test_a_guide_text_message_runs_a_command(world: WeComWorld) -> None:
    inner = (f"<xml><ToUserName>{CORP}</ToUserName><FromUserName>{GUIDE}</FromUserName><CreateTime>1</CreateTime>"
             "<MsgType>text</MsgType><Content>/help</Content><MsgId>1234567890</MsgId><AgentID>1000002</AgentID></xml>")
    assert await world.post(inner) == 200
    await world.h.app.tick()
    (reply,) = world.fake.called("/message/send")
    assert reply["touser"] == GUIDE and reply["text"]["content"].startswith("可用命令")


@pytest.mark.parametrize("case, status", [
    ("forged signature", 403), ("stale timestamp", 403), ("wrong receive id", 403),
    ("broken padding", 400), ("xml bomb", 400), ("not xml", 400),
])
async def test_bad_callbacks_are_refused_with_nothing_stored(world: WeComWorld, case: str, status: int) -> None:
    inner = add_contact_xml("wmEVIL")
    if case == "forged signature":
        got = await world.post(inner, forge=True)
    elif case == "stale timestamp":
        got = await world.post(inner, timestamp=int(world.h.clock.now().timestamp()) - 3600)
    elif case == "wrong receive id":
        got = await world.post(inner, crypto=WeComCrypto(TOKEN, AES_KEY, "wwOTHERCORP"))
    elif case in ("broken padding", "xml bomb", "not xml"):
        if case == "broken padding":
            good = base64.b64decode(world.crypto.encrypt(inner))
            encrypt = base64.b64encode(good[:-16] + bytes(16)).decode()  # last block garbled
            body = f"<xml><Encrypt>{encrypt}</Encrypt></xml>"
        elif case == "xml bomb":
            encrypt = world.crypto.encrypt(inner)
            body = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                    f"<xml><Encrypt>{encrypt}</Encrypt><X>&lol2;</X></xml>")
        else:
            encrypt = world.crypto.encrypt(inner)
            body = "this is not xml"
        response = await world.client.post("/wecom/callback", params=world.query(encrypt), data=body)
        got = response.status
    assert got == status
    await world.h.app.tick()
    assert await world.stored() == 0
    assert world.fake.calls == []


async def test_the_same_add_event_three_times_gives_one_welcome(world: WeComWorld) -> None:
    for _ in range(3):  # WeCom retries after 5 s, three times
        assert await world.post(add_contact_xml("wmLIN0001")) == 200
    await world.h.app.tick()
    (welcome,) = world.fake.called("/externalcontact/send_welcome_msg")
    assert welcome["welcome_code"] == "WELCOMECODE"
    assert welcome["text"]["content"].startswith("问候：客户0001您好，我是测试品牌的小美")
    assert "感谢您在store-qr-01添加我" in welcome["text"]["content"]
    async with world.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "wmLIN0001"))
    assert (contact.source, contact.tags, contact.guide_key) == ("store-qr-01", ["high_value"], "xiaomei")


async def test_welcome_after_20_seconds_is_not_attempted(world: WeComWorld) -> None:
    assert await world.post(add_contact_xml("wmSLOW001")) == 200
    await world.h.app.inbox.process()  # the event is handled…
    world.h.clock.advance(timedelta(seconds=21))  # …but delivery only gets to it 21 s later
    await world.h.app.tick()
    assert world.fake.called("/externalcontact/send_welcome_msg") == []
    (assisted,) = world.fake.called("/externalcontact/add_msg_template")
    assert assisted["external_userid"] == ["wmSLOW001"] and assisted["sender"] == GUIDE


async def test_41051_is_recorded_and_not_retried(world: WeComWorld) -> None:
    world.fake.fail("/externalcontact/send_welcome_msg", 41051)
    assert await world.post(add_contact_xml("wmTAKEN01")) == 200
    await world.h.app.tick()
    await world.h.app.tick()
    async with world.h.app.db.session() as session:
        message = await session.scalar(select(Message).where(Message.chat_id == "wmTAKEN01"))
    assert "41051" in message.delivery_error


async def test_assisted_touch_waits_for_the_guide_and_completes(world: WeComWorld) -> None:
    assert await world.post(add_contact_xml("wmCARE001")) == 200
    await world.h.app.tick()
    await world.h.run_for(timedelta(days=1, minutes=1))  # day-1 care is proactive: only a guide may send it
    (template,) = world.fake.called("/externalcontact/add_msg_template")
    assert template["text"]["content"].startswith("第1天关怀：客户E001，加上您的第一天")
    reminder = world.fake.called("/message/send")[-1]
    assert reminder["touser"] == GUIDE and "待确认发送" in reminder["text"]["content"]
    async with world.h.app.db.session() as session:
        touch = await session.scalar(select(Touch).where(Touch.step_id == "day1_care"))
    assert touch.status == "awaiting_guide"

    world.fake.send_status[("msgGROUPSEND_1", "wmCARE001")] = 1  # the guide pressed send
    await world.h.run_for(timedelta(minutes=1))
    async with world.h.app.db.session() as session:
        touch = await session.scalar(select(Touch).where(Touch.step_id == "day1_care"))
        message = await session.scalar(select(Message).where(Message.touch_id == touch.id))
    assert touch.status == "sent" and message.delivered_at is not None


async def test_deleted_contact_is_churned_and_the_guide_told(world: WeComWorld) -> None:
    assert await world.post(add_contact_xml("wmBYE0001")) == 200
    await world.h.app.tick()
    gone = add_contact_xml("wmBYE0001").replace("add_external_contact", "del_follow_user")
    assert await world.post(gone) == 200
    await world.h.app.tick()
    async with world.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "wmBYE0001"))
    assert contact.churned
    assert world.fake.called("/message/send")[-1]["text"]["content"].startswith("【流失提醒】")


async def test_token_expiry_mid_run_is_refreshed_once(start) -> None:  # type: ignore[no-untyped-def]
    from bot.clock import VirtualClock

    fake = FakeQyapi()
    api = await fake.start()
    client = WeComClient(fake.corp_id, fake.secret, VirtualClock(start), api)
    try:
        await client.call("/message/send", {"touser": GUIDE})
        fake.expire_token()  # revoked on the platform side, long before our cached expiry
        await client.call("/message/send", {"touser": GUIDE})
        assert fake.token_number == 2 and len(fake.called("/message/send")) == 2
        fake.fail("/gettoken", 40001)
    finally:
        await client.close()
        await fake.close()


async def test_45009_backs_off_with_jitter_then_succeeds(start) -> None:  # type: ignore[no-untyped-def]
    from bot.clock import VirtualClock

    fake = FakeQyapi()
    api = await fake.start()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = WeComClient(fake.corp_id, fake.secret, VirtualClock(start), api, sleep=sleep)
    try:
        fake.fail("/message/send", 45009, 45009)
        await client.call("/message/send", {"touser": GUIDE})
        assert len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0
        fake.fail("/message/send", 45009, 45009, 45009, 45009)
        with pytest.raises(WeComError) as raised:
            await client.call("/message/send", {"touser": GUIDE})
        assert raised.value.errcode == 45009
        fake.fail("/message/send", 60011)
        with pytest.raises(WeComError):  # not retryable: fails at once
            await client.call("/message/send", {"touser": GUIDE})
        assert len(waits) == 5
    finally:
        await client.close()
        await fake.close()


async def test_a_send_that_got_no_answer_is_not_repeated_by_the_client(start) -> None:  # type: ignore[no-untyped-def]
    """A timed-out add_msg_template may have queued a task for the guide: asking again would queue a second."""
    from aiohttp import web

    from bot.clock import VirtualClock

    calls: list[str] = []

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"errcode": 0, "access_token": "t", "expires_in": 7200})

    async def slow(request: web.Request) -> web.Response:
        calls.append(request.path)
        await asyncio.sleep(1)  # longer than the client waits
        return web.json_response({"errcode": 0, "msgid": "m1"})

    app = web.Application()
    app.router.add_get("/cgi-bin/gettoken", token)
    app.router.add_post("/cgi-bin/externalcontact/add_msg_template", slow)
    app.router.add_post("/cgi-bin/externalcontact/get_groupmsg_send_result", slow)

    async def no_wait(_seconds: float) -> None:
        return None

    async with TestServer(app, host="127.0.0.1") as server:
        client = WeComClient(CORP, "s", VirtualClock(start), f"http://127.0.0.1:{server.port}/cgi-bin", timeout=0.2,
                             sleep=no_wait)
        try:
            with pytest.raises(WeComError):
                await client.call("/externalcontact/add_msg_template", {"sender": GUIDE}, repeatable=False)
            assert calls == ["/cgi-bin/externalcontact/add_msg_template"]
            with pytest.raises(WeComError):  # a read is safe to repeat
                await client.call("/externalcontact/get_groupmsg_send_result", {"msgid": "m1"})
            assert calls.count("/cgi-bin/externalcontact/get_groupmsg_send_result") == client.attempts
        finally:
            await client.close()


def kf_event(token: str = "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR") -> str:
    return (f"<xml><ToUserName>{CORP}</ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType>event</MsgType><Event>kf_msg_or_event</Event><Token>{token}</Token>"
            "<OpenKfId>wkKF0001</OpenKfId></xml>")


def kf_message(n: int, text: str, customer: str = "wmKFUSER1") -> dict[str, Any]:
    return {"msgid": f"kfm{n}", "open_kfid": "wkKF0001", "external_userid": customer, "send_time": 1_772_000_000,
            "origin": 3, "msgtype": "text", "text": {"content": text}}


async def test_kf_cursor_survives_a_restart(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    fake = FakeQyapi()
    api = await fake.start()
    wecom = {"corp_id": CORP, "token": TOKEN, "encoding_aes_key": AES_KEY, "secret": fake.secret,
             "api_base": api, "timestamp_window": 0}
    fake.kf_messages = [kf_message(1, "包邮吗"), kf_message(2, "什么时候发货"), kf_message(3, "谢谢")]
    try:
        for round_ in range(2):
            h = await Harness.create(db_url, start, SCRIPTS, staff=STAFF,
                                     adapters={"webchat": {"enabled": False}, "wecom": wecom})
            async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
                w = WeComWorld(h, fake, client)
                assert await w.post(kf_event(token=f"synctoken{round_}")) == 200
                await h.app.tick()
            await h.close()
            if round_ == 0:
                fake.kf_messages.append(kf_message(4, "门店在哪里"))  # arrives while we are down
        cursors = [body.get("cursor") for body in fake.called("/kf/sync_msg")]
        assert cursors == [None, "2", "3"]  # the second process resumed, nothing read twice
        answers = [b["text"]["content"][:8] for b in fake.called("/kf/send_msg")]
        # each question answered once; the first message made them a customer, so they are greeted once
        assert sorted(answers) == sorted(["答·运费：测试订", "问候：微信用户1", "答·发货：测试订", "答·打招呼：你好",
                                          "答·门店：测试门"])
    finally:
        await fake.close()


async def test_kf_window_and_five_message_rule(world: WeComWorld) -> None:
    world.fake.kf_messages = [kf_message(1, "包邮吗")]
    assert await world.post(kf_event()) == 200
    await world.h.app.tick()
    assert len(world.fake.called("/kf/send_msg")) == 2  # greeting and answer
    chat = "wkKF0001:wmKFUSER1"
    for _ in range(6):  # a guide pushes six scripts in a row (the same second would count as a double click)
        world.h.clock.advance(timedelta(minutes=1))
        await world.h.guide_says_on("wecom", GUIDE, f"/sop new_customer.day1_care {chat}")
    assert len(world.fake.called("/kf/send_msg")) == 5  # the platform allows 5 per 48 h window
    async with world.h.app.db.session() as session:
        reasons = (await session.scalars(select(Touch.reason).where(Touch.status == "dropped"))).all()
    assert reasons == ["channel_window_full"] * 3  # the policy knew before anything was sent

    world.h.clock.advance(timedelta(hours=49))
    await world.h.guide_says_on("wecom", GUIDE, f"/sop new_customer.day3_followup {chat}")
    assert len(world.fake.called("/kf/send_msg")) == 5
    async with world.h.app.db.session() as session:
        last = await session.scalar(select(Touch.reason).where(Touch.status == "dropped").order_by(Touch.id.desc()))
    assert last == "channel_window_closed"


async def test_platform_quota_defers_a_second_assisted_send_the_same_day(world: WeComWorld) -> None:
    assert await world.post(add_contact_xml("wmQUOTA01")) == 200
    await world.h.app.tick()
    world.h.clock.advance(timedelta(minutes=1))
    await world.h.guide_says_on("wecom", GUIDE, "/sop new_customer.day1_care wmQUOTA01")
    world.h.clock.advance(timedelta(minutes=1))
    await world.h.guide_says_on("wecom", GUIDE, "/sop new_customer.day3_followup wmQUOTA01")
    assert len(world.fake.called("/externalcontact/add_msg_template")) == 1  # one per member per customer per day
    async with world.h.app.db.session() as session:
        waiting = await session.scalar(select(Touch).where(Touch.step_id == "day3_followup",
                                                           Touch.triggered_by.isnot(None)))
    assert (waiting.status, waiting.reason) == ("pending", "channel_quota_day")  # planned, not refused
    await world.h.run_for(timedelta(hours=24))  # the next morning it goes; the journey's own step waits a day
    assert len(world.fake.called("/externalcontact/add_msg_template")) == 2


def test_siyu_serve_answers_the_platform_url_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SIYU_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
           "SIYU_WECOM_CORP_ID": CORP, "SIYU_WECOM_TOKEN": TOKEN, "SIYU_WECOM_ENCODING_AES_KEY": AES_KEY,
           "SIYU_WECOM_API_BASE": "http://127.0.0.1:9/cgi-bin"}
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
        echostr = crypto.encrypt("echo-20261122")
        ts = str(int(time.time()))
        query = f"msg_signature={signature(TOKEN, ts, 'n', echostr)}&timestamp={ts}&nonce=n&echostr="
        from urllib.parse import quote
        url = f"http://127.0.0.1:{port}/wecom/callback?{query}{quote(echostr)}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.read().decode() == "echo-20261122"
                    break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "siyu serve did not come up"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=20)


def chat_change_xml(chat: str, change: str, detail: str = "", quit_scene: str = "") -> str:
    quit = f"<QuitScene>{quit_scene}</QuitScene>" if quit_scene else ""
    return (f"<xml><ToUserName>{CORP}</ToUserName><FromUserName>sys</FromUserName><CreateTime>{time.time_ns()}"
            f"</CreateTime><MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>{chat}</ChatId>"
            f"<ChangeType>{change}</ChangeType><UpdateDetail>{detail}</UpdateDetail>{quit}</xml>")


async def test_group_changes_keep_memberships(world: WeComWorld) -> None:
    from storage import repo

    assert await world.post(add_contact_xml("wmGRP0001")) == 200
    member = lambda uid: {"userid": uid, "type": 2, "join_time": 1, "name": uid}  # noqa: E731
    world.fake.group_members["wrCHAT1"] = [member("wmGRP0001"), member("wmGRP0002"),
                                           {"userid": GUIDE, "type": 1, "join_time": 1}]
    assert await world.post(chat_change_xml("wrCHAT1", "create")) == 200
    await world.h.app.tick()

    async def members() -> set[str]:
        async with world.h.app.db.session() as session:
            return await repo.current_members(session, "wecom", "wrCHAT1")

    assert await members() == {"wmGRP0001", "wmGRP0002"}  # staff are not counted as customers
    world.fake.group_members["wrCHAT1"] = [member("wmGRP0002"), member("wmGRP0003")]
    assert await world.post(chat_change_xml("wrCHAT1", "update", "del_member")) == 200
    await world.h.app.tick()
    assert await members() == {"wmGRP0002", "wmGRP0003"}
    assert await world.post(chat_change_xml("wrCHAT1", "dismiss")) == 200
    await world.h.app.tick()
    assert await members() == set()


async def test_a_member_the_group_owner_removes_teaches_the_guard(world: WeComWorld) -> None:
    from bot.events import ChatType, Event, EventKind
    from storage.models import GuardSample

    member = lambda uid: {"userid": uid, "type": 2, "join_time": 1, "name": uid}  # noqa: E731
    world.fake.group_members["wrCHAT2"] = [member("wmSELL0001"), member("wmQUIT0001")]
    assert await world.post(chat_change_xml("wrCHAT2", "create")) == 200
    await world.h.app.tick()
    world.h.clock.advance(timedelta(hours=1))
    for who, text in [("wmSELL0001", "姐妹们我这有便宜的面膜"), ("wmQUIT0001", "我先退群啦大家再见")]:
        await world.h.app.engine.handle(Event(EventKind.MESSAGE, "wecom", who, world.h.clock.now(), ChatType.GROUP,
                                              "wrCHAT2", text=text, message_id=f"msg-{who}"))
    world.fake.group_members["wrCHAT2"] = [member("wmQUIT0001")]
    # QuitScene 1: the owner (guide01, 小美) took the seller out
    assert await world.post(chat_change_xml("wrCHAT2", "update", "del_member", quit_scene="1")) == 200
    await world.h.app.tick()
    world.fake.group_members["wrCHAT2"] = []
    assert await world.post(chat_change_xml("wrCHAT2", "update", "del_member", quit_scene="0")) == 200  # left
    await world.h.app.tick()
    async with world.h.app.db.session() as session:
        samples = (await session.execute(select(GuardSample.text, GuardSample.spam, GuardSample.staff_key))).all()
    assert [tuple(s) for s in samples] == [("姐妹们我这有便宜的面膜", True, "xiaomei")]


async def test_tags_a_journey_adds_are_written_to_wecom(world: WeComWorld) -> None:
    assert await world.post(add_contact_xml("wmTAG0001")) == 200
    await world.h.app.tick()
    world.fake.fail("/externalcontact/mark_tag", 45033)  # concurrency limit: retried by the client
    await world.h.run_for(timedelta(days=3, hours=1))
    (marked,) = world.fake.called("/externalcontact/mark_tag")
    assert marked == {"userid": GUIDE, "external_userid": "wmTAG0001", "add_tag": ["etGIFT0001"]}
    async with world.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "wmTAG0001"))
    assert "测试礼已发" in contact.tags
