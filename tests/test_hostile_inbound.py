"""Hostile inbound input against the real routes: bad bodies, dirty text, huge texts, floods, forged updates.

Each test reproduces an attack from issue 14 ("Bad inbound input", the Telegram webhook) and asserts the
safe outcome: 400 or 413 and nothing stored, never a 500; clean text in storage on SQLite and PostgreSQL;
one length cap; one note per flood; no update without the webhook secret.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from adapters.telegram.adapter import TelegramAdapter
from adapters.wecom import AIBOT_CALLBACK
from adapters.wecom.crypto import WeComCrypto
from bot.app import MAX_REQUEST_BYTES, build_web_app
from bot.clock import VirtualClock
from bot.config_loader import load_config
from bot.events import Event
from bot.inbound import clean, cut_note
from bot.problems import ScriptError
from storage import repo
from storage.models import Contact, InboxItem, Message
from tests.conftest import ROOT
from tests.fakes import FakeTelegram, tg_private
from tests.harness import CONFIG, SCRIPTS, Harness
from tests.test_wecom import AES_KEY, TOKEN, wecom_world
from tests.test_wecom import WeComWorld as BaseWeComWorld

TG_GUIDE = 500
HOOK_SECRET = "hook_s3cret-0123456789"
WEBHOOK_URL = "https://bot.example.com/telegram/webhook"
FLOOD_LIMIT = 5  # a low limit shows in 300 messages what 10,000 showed

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_XML = b"<a>" * 30_000 + b"</a>" * 30_000  # as deep as fits under the size limit
OVERSIZED = b"x" * (MAX_REQUEST_BYTES + 1)
# (name, body, content type): every one of these got a 500 before, or could
BAD_BODIES = [
    ("not UTF-8", b"<xml><Encrypt>\xff\xfe\xfa</Encrypt></xml>", "text/xml; charset=utf-8"),
    ("unknown charset", b"<xml><Encrypt>abc</Encrypt></xml>", "text/xml; charset=x-klingon"),
    ("JSON 100,000 deep", DEEP_JSON, "application/json"),
    ("XML 30,000 deep", DEEP_XML, "text/xml"),
    ("empty", b"", "text/xml"),
    ("not base64", b'<xml><Encrypt>\xe4\xbd\xa0\xe5\xa5\xbd</Encrypt></xml>', "text/xml"),
    ("encrypt is an object", b'{"encrypt": {"a": 1}}', "application/json"),
    ("a JSON list", b"[1, 2, 3]", "application/json"),
]


# --- WeCom: the app callback and the AI bot callback --------------------------------------------

class WeComWorld(BaseWeComWorld):
    """The WeCom world of test_wecom, plus raw bodies and the AI bot's JSON callback."""

    def __init__(self, base: BaseWeComWorld) -> None:
        super().__init__(base.h, base.fake, base.client)
        self.bot_crypto = WeComCrypto(TOKEN, AES_KEY, "")  # the AI bot signs with an empty receive id

    async def post_raw(self, path: str, body: bytes, content_type: str,
                       params: dict[str, str] | None = None) -> int:
        response = await self.client.post(path, params=self.query("abc") if params is None else params, data=body,
                                          headers={"Content-Type": content_type})
        return response.status

    async def post_bot_message(self, message: dict[str, Any]) -> int:
        encrypt = self.bot_crypto.encrypt(json.dumps(message))
        response = await self.client.post("/wecom/aibot/callback", params=self.query(encrypt),
                                          data=json.dumps({"encrypt": encrypt}),
                                          headers={"Content-Type": "application/json"})
        return response.status

    async def inbox_rows(self) -> list[InboxItem]:
        async with self.h.app.db.session() as session:
            return list((await session.scalars(select(InboxItem).order_by(InboxItem.id))).all())


@pytest.fixture
async def wecom(db_url: str, start) -> AsyncIterator[WeComWorld]:  # type: ignore[no-untyped-def]
    async with wecom_world(db_url, start, wecom_extra={"aibot_id": "aibot001"}) as base:
        yield WeComWorld(base)


@pytest.mark.parametrize("path", ["/wecom/callback", "/wecom/aibot/callback"])
@pytest.mark.parametrize("name, body, content_type", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_wecom_bodies_get_400_and_nothing_is_stored(wecom: WeComWorld, path: str, name: str,
                                                               body: bytes, content_type: str) -> None:
    assert await wecom.post_raw(path, body, content_type) == 400
    assert await wecom.inbox_rows() == []


@pytest.mark.parametrize("path", ["/wecom/callback", "/wecom/aibot/callback"])
async def test_oversized_wecom_bodies_get_413(wecom: WeComWorld, path: str) -> None:
    assert await wecom.post_raw(path, OVERSIZED, "text/xml") == 413
    assert await wecom.inbox_rows() == []


async def test_the_ai_bot_route_authenticates_before_it_reads_a_body(wecom: WeComWorld) -> None:
    now = str(int(wecom.h.clock.now().timestamp()))
    stale = str(int(wecom.h.clock.now().timestamp()) - 3600)
    for params in ({}, {"timestamp": now, "nonce": "n1"},  # no signature at all
                   {"msg_signature": "not-a-sha1", "timestamp": now, "nonce": "n1"},
                   {"msg_signature": "0" * 40, "nonce": "n1"},  # no timestamp
                   {"msg_signature": "0" * 40, "timestamp": now, "nonce": "\u4e00" * 3},  # a nonce SHA1 cannot take
                   {"msg_signature": "0" * 40, "timestamp": stale, "nonce": "n1"}):
        for body in (DEEP_JSON, b"\xff\xfe", b'{"encrypt": {"a": 1}}'):
            status = await wecom.post_raw("/wecom/aibot/callback", body, "application/json", params=params)
            assert status == 403, (params, body[:10])
    assert await wecom.inbox_rows() == []


async def test_an_object_where_a_msgid_belongs_is_a_400(wecom: WeComWorld) -> None:
    message = {"msgid": {"$gt": ""}, "chattype": "single", "from": {"userid": "qian"}, "msgtype": "text",
               "text": {"content": "包邮吗"}}
    assert await wecom.post_bot_message(message) == 400
    assert await wecom.post_bot_message({**message, "msgid": "m" * 500}) == 400
    assert await wecom.post_bot_message({**message, "msgid": "m\u0000\ud800"}) == 400  # PostgreSQL refuses NUL
    long_id = ("<xml><ToUserName>wwcorp0001</ToUserName><FromUserName>guide01</FromUserName><MsgType>text</MsgType>"
               f"<Content>/help</Content><MsgId>{'9' * 500}</MsgId></xml>")
    assert await wecom.post(long_id) == 400
    assert await wecom.inbox_rows() == []
    assert await wecom.post_bot_message({**message, "msgid": "ok-1"}) == 200  # the same message, well formed


async def test_the_url_check_never_500s_on_odd_parameters(wecom: WeComWorld) -> None:
    now = str(int(wecom.h.clock.now().timestamp()))
    for query in ({"msg_signature": "0" * 40, "timestamp": now, "nonce": "n1", "echostr": "\u4f60\u597d"},
                  {"msg_signature": "0" * 40, "timestamp": "\uff11\uff12", "nonce": "n1", "echostr": "abc"},
                  {"msg_signature": "0" * 40, "timestamp": now, "nonce": "n\u00e9", "echostr": "abc"}):
        response = await wecom.client.get("/wecom/callback", params=query)
        assert response.status in (400, 403)


async def test_nul_and_surrogates_through_the_ai_bot_callback_are_stored_clean(wecom: WeComWorld) -> None:
    """A NUL broke PostgreSQL writes; a lone surrogate cannot be encoded at all."""
    message = {"msgid": "dirty-1", "chattype": "single", "from": {"userid": "qian"}, "msgtype": "text",
               "text": {"content": "包\u0000邮\ud800吗\u001b\u0007\r\n谢谢\t！"}}
    assert await wecom.post_bot_message(message) == 200
    # an id that cannot be stored as it is cannot be a real one: the event is dropped, nothing breaks
    assert await wecom.post_bot_message({**message, "msgid": "dirty-2", "from": {"userid": "q\u0000ian"}}) == 200
    await wecom.h.app.tick()
    async with wecom.h.app.db.session() as session:
        texts = (await session.scalars(select(Message.text).where(
            Message.channel == "wecom_aibot", Message.direction == "in"))).all()
        answer = await session.scalar(select(Message.text).where(
            Message.channel == "wecom_aibot", Message.direction == "out", Message.chat_id == "qian"))
    assert texts == ["包邮吗\n谢谢\t！"]
    assert answer is not None and answer.startswith("答·运费")  # cleaned before matching, too
    assert all(row.processed_at is not None for row in await wecom.inbox_rows())


async def test_stored_callbacks_of_the_wrong_shape_are_skipped_once(wecom: WeComWorld) -> None:
    """Each used to fail five times over in the inbox, with a traceback each time."""
    app_payloads = ["not xml at all", "<xml><MsgType>text</MsgType><FromUserName>guide01</FromUserName>"]
    bot_payloads = ["[1, 2]", '{"from": "qian", "msgtype": "text"}', '{"msgid": {"a": 1}, "msgtype": "text"}',
                    '{"from": {"userid": "qian"}, "msgtype": "text", "text": {"content": 42}}',
                    '{"from": {"userid": ["qian"]}, "msgtype": "text"}', "[" * 5000 + "]" * 5000]
    async with wecom.h.app.db.session() as session, session.begin():
        for n, payload in enumerate(app_payloads):
            await repo.remember_inbound(session, "wecom", f"bad-app-{n}", payload, wecom.h.clock.now())
        for n, payload in enumerate(bot_payloads):
            await repo.remember_inbound(session, AIBOT_CALLBACK, f"bad-bot-{n}", payload, wecom.h.clock.now())
        good = {"msgid": "good-1", "chattype": "single", "from": {"userid": "zhou"}, "msgtype": "text",
                "text": {"content": "包邮吗"}}
        await repo.remember_inbound(session, AIBOT_CALLBACK, "good-1", json.dumps(good), wecom.h.clock.now())
    await wecom.h.app.inbox.process()
    rows = await wecom.inbox_rows()
    assert [(r.processed_at is not None, r.attempts, r.error) for r in rows] == [(True, 1, None)] * len(rows)
    async with wecom.h.app.db.session() as session:
        assert await session.scalar(select(Message.text).where(Message.chat_id == "zhou")) == "包邮吗"


# --- Telegram -----------------------------------------------------------------------------------

@dataclass
class TelegramHook:
    h: Harness
    fake: FakeTelegram
    client: TestClient
    _next: int = 1000

    async def post(self, update: dict[str, Any], secret: str | None = HOOK_SECRET) -> int:
        self._next += 1
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        response = await self.client.post("/telegram/webhook", json={"update_id": self._next, **update},
                                          headers=headers)
        return response.status

    async def says(self, user: int, name: str, text: str) -> None:
        self._next += 1
        assert await self.post(tg_private(user, name, text, self._next)) == 200

    def texts_to(self, chat_id: int) -> list[str]:
        return [p["text"] for p in self.fake.sent() if int(p["chat_id"]) == chat_id]

    async def inbound(self, user: int) -> list[str]:
        async with self.h.app.db.session() as session:
            return list((await session.scalars(select(Message.text).where(
                Message.channel == "telegram", Message.chat_id == str(user), Message.direction == "in")
                .order_by(Message.id))).all())


@pytest.fixture
async def hook(db_url: str, start) -> AsyncIterator[TelegramHook]:  # type: ignore[no-untyped-def]
    fake = FakeTelegram()
    api = await fake.start()
    telegram = {"token": fake.token, "api_base": api, "mode": "webhook", "webhook_url": WEBHOOK_URL,
                "webhook_secret": HOOK_SECRET}
    h = await Harness.create(db_url, start, SCRIPTS,
                             staff=({"id": "xiaomei", "name": "小美", "identities": {"telegram": str(TG_GUIDE)}},),
                             inbound={"flood": {"messages": FLOOD_LIMIT, "window": "1m"}},
                             adapters={"webchat": {"enabled": False}, "telegram": telegram})
    h.app.plug_in()
    await h.app.start_adapters()
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            yield TelegramHook(h, fake, client)
    finally:
        await h.close()
        await fake.close()


TG_BAD_BODIES = [
    ("not UTF-8", b'{"update_id": 1, "x": "\xff\xfe"}', "application/json"),
    ("unknown charset", b'{"update_id": 1}', "application/json; charset=x-klingon"),
    ("JSON 100,000 deep", DEEP_JSON, "application/json"),
    ("an object 100 deep", b'{"a":' * 100 + b"1" + b"}" * 100, "application/json"),
    ("not JSON", b"update please", "application/json"),
    ("a list", b"[1]", "application/json"),
    ("no update_id", b'{"message": {}}', "application/json"),
    ("message is a string", b'{"update_id": 5, "message": "hi"}', "application/json"),
    ("from is a list", (b'{"update_id": 6, "message": {"message_id": 1, "date": 1, "chat": {"id": 1, "type": '
                        b'"private"}, "from": [1]}}'), "application/json"),
]


@pytest.mark.parametrize("name, body, content_type", TG_BAD_BODIES, ids=[b[0] for b in TG_BAD_BODIES])
async def test_bad_telegram_bodies_get_400(hook: TelegramHook, name: str, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type, "X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
    response = await hook.client.post("/telegram/webhook", data=body, headers=headers)
    assert response.status == 400
    unsigned = await hook.client.post("/telegram/webhook", data=body, headers={"Content-Type": content_type})
    assert unsigned.status == 403  # the secret is checked before the body is read


async def test_an_oversized_telegram_body_gets_413(hook: TelegramHook) -> None:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
    assert (await hook.client.post("/telegram/webhook", data=OVERSIZED, headers=headers)).status == 413


async def test_a_forged_guide_update_cannot_run_optout(hook: TelegramHook) -> None:
    await hook.says(1001, "Lin", "/start")
    guide_update = tg_private(TG_GUIDE, "小美", "/optout 1001", 99)
    assert await hook.post(guide_update, secret=None) == 403           # no secret: refused
    assert await hook.post(guide_update, secret="guess") == 403        # a wrong one: refused
    assert await hook.post(guide_update, secret="\u00e9" * 5) == 403    # not even comparable: refused, no 500
    # a real update from someone who is not a configured guide, using the guide's name
    await hook.says(777, "小美", "/optout 1001")
    await hook.h.app.tick()
    async with hook.h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "1001"))
    assert contact is not None and not contact.opted_out
    assert "抱歉，这个命令仅供导购使用～有问题直接发消息问我就好。" in hook.texts_to(777)


async def test_the_webhook_refuses_everything_when_no_secret_is_set(start) -> None:  # type: ignore[no-untyped-def]
    """Configuration refuses webhook mode without a secret; the route refuses too, should one be built anyway."""
    fake = FakeTelegram()
    api = await fake.start()
    handled: list[Event] = []

    async def handle(event: Event) -> None:
        handled.append(event)

    adapter = TelegramAdapter(fake.token, api, handle, VirtualClock(start), [str(TG_GUIDE)], {}, "webhook",
                              WEBHOOK_URL, None)
    web_app = web.Application()
    adapter.install(web_app)
    try:
        async with TestClient(TestServer(web_app, host="127.0.0.1")) as client:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": ""}):
                response = await client.post("/telegram/webhook", json={"update_id": 1, **tg_private(
                    TG_GUIDE, "小美", "/optout 1001", 1)}, headers=headers)
                assert response.status == 403
    finally:
        await fake.close()
    assert handled == []


async def test_nul_and_surrogates_through_the_webhook_are_stored_clean(hook: TelegramHook) -> None:
    await hook.says(2001, "Lin\u0000\ud800", "/start")
    await hook.says(2001, "Lin", "包\u0000邮\ud800吗\u001b\u0085")
    await hook.h.app.tick()
    assert await hook.inbound(2001) == ["包邮吗"]
    assert any(t.startswith("答·运费") for t in hook.texts_to(2001))
    async with hook.h.app.db.session() as session:
        assert await session.scalar(select(Contact.name).where(Contact.external_id == "2001")) == "Lin"


async def test_a_huge_start_payload_fits_the_contact(hook: TelegramHook) -> None:
    """`/start <channel>` became the contact's source, a 128-character column."""
    await hook.says(2002, "Wu", "/start " + "q" * 5000)
    async with hook.h.app.db.session() as session:
        source = await session.scalar(select(Contact.source).where(Contact.external_id == "2002"))
    assert source == "q" * 128


async def test_a_flood_is_noticed_once_and_nothing_is_dropped(hook: TelegramHook) -> None:
    """10,000 frames produced 6,378 「转人工·续」 notes and lost the rest; now: one note, all stored."""
    customer, flood = 3001, 300
    await hook.says(customer, "Flo", "/start")
    await hook.says(customer, "Flo", "你们和隔壁那家比哪个好用")  # handed to the guide
    hook.h.clock.advance(timedelta(minutes=2))
    for n in range(flood):
        await hook.says(customer, "Flo", f"在吗{n}")
    await hook.h.app.tick()
    to_guide = hook.texts_to(TG_GUIDE)
    assert sum("【刷屏提醒】" in t for t in to_guide) == 1
    assert sum("【转人工·续】" in t for t in to_guide) == FLOOD_LIMIT  # passed on until the flood was clear
    note = next(t for t in to_guide if "【刷屏提醒】" in t)
    assert "Flo" in note and "1 分钟内发来超过 5 条消息" in note and "tg://user?id=3001" in note
    assert len(await hook.inbound(customer)) == 1 + flood  # every message stored (/start is not a message)

    hook.h.clock.advance(timedelta(minutes=2))  # the flood has stopped: messages are passed on again
    await hook.says(customer, "Flo", "还在吗")
    await hook.h.app.tick()
    assert hook.texts_to(TG_GUIDE)[-1] == "【转人工·续】Flo：还在吗"

    for n in range(FLOOD_LIMIT + 3):  # a second flood later is a second notice, once
        await hook.says(customer, "Flo", f"又来了{n}")
    await hook.h.app.tick()
    assert sum("【刷屏提醒】" in t for t in hook.texts_to(TG_GUIDE)) == 2


async def test_a_flood_stops_answers_but_not_opt_out(hook: TelegramHook) -> None:
    await hook.says(3002, "Ann", "/start")
    for _ in range(FLOOD_LIMIT + 5):
        await hook.says(3002, "Ann", "包邮吗")
    await hook.says(3002, "Ann", "退订")
    await hook.h.app.tick()
    answers = [t for t in hook.texts_to(3002) if t.startswith("答·运费")]
    assert len(answers) == FLOOD_LIMIT
    assert any(t.startswith("已为您退订") for t in hook.texts_to(3002))


# --- Telegram polling: one length cap -------------------------------------------------------------

async def test_a_megabyte_of_text_is_cut_to_the_cap_and_the_cut_noted(tmp_path: Path, start) -> None:  # type: ignore[no-untyped-def]
    fake = FakeTelegram()
    api = await fake.start()
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'big.db'}", start, SCRIPTS,
                             staff=({"id": "xiaomei", "name": "小美", "identities": {"telegram": str(TG_GUIDE)}},),
                             adapters={"webchat": {"enabled": False}, "telegram": {"token": fake.token,
                                                                                   "api_base": api}})
    h.app.plug_in()
    await h.app.start_adapters()
    try:
        fake.push(tg_private(4001, "Big", "/start", 1))
        fake.push(tg_private(4001, "Big", "长" * 1_000_000, 2))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not any("【转人工】" in p["text"] for p in fake.sent() if int(p["chat_id"]) == TG_GUIDE):
            assert loop.time() < deadline, "the hand-off note never came"
            await h.app.tick()
            await asyncio.sleep(0.05)
        async with h.app.db.session() as session:
            (stored,) = (await session.scalars(select(Message.text).where(
                Message.chat_id == "4001", Message.direction == "in"))).all()
        assert stored == "长" * 2000 + "\n" + cut_note(2000)
        note = next(p["text"] for p in fake.sent() if "【转人工】" in p["text"])
        assert "（消息过长，已截取前 2000 字）" in note and len(note) < 2300
    finally:
        await h.close()
        await fake.close()


# --- configuration ------------------------------------------------------------------------------

def _webhook_config(tmp_path: Path) -> Path:
    text = CONFIG.read_text(encoding="utf-8").replace(
        "    demo_group: demo\n",
        f"    demo_group: demo\n  telegram:\n    mode: webhook\n    webhook_url: {WEBHOOK_URL}\n")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_webhook_mode_without_a_secret_does_not_load(tmp_path: Path) -> None:
    path = _webhook_config(tmp_path)
    line = next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "mode: webhook" in text)
    with pytest.raises(ScriptError) as caught:
        load_config(path, env={"SIYU_TELEGRAM_TOKEN": "123:abc"})
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{path}:{line}: adapters.telegram.mode: webhook needs "
                                   "SIYU_TELEGRAM_WEBHOOK_SECRET — ")
    with pytest.raises(ScriptError) as odd:
        load_config(path, env={"SIYU_TELEGRAM_TOKEN": "123:abc", "SIYU_TELEGRAM_WEBHOOK_SECRET": "has spaces!"})
    assert "letters, digits, _ and -" in str(odd.value.problems[0]) and "has spaces" not in str(odd.value.problems[0])
    settings = load_config(path, env={"SIYU_TELEGRAM_TOKEN": "123:abc", "SIYU_TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET})
    assert settings.adapters.telegram.mode == "webhook"  # type: ignore[attr-defined]


def test_siyu_check_names_the_missing_webhook_secret(tmp_path: Path) -> None:
    path = _webhook_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(path), "--scripts",
                             str(SCRIPTS)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**env, "SIYU_TELEGRAM_TOKEN": "123:abc"})
    assert result.returncode == 1
    assert "adapters.telegram.mode: webhook needs SIYU_TELEGRAM_WEBHOOK_SECRET — " in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_inbound_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("brand: {name: x}\ninbound:\n  max_chars: 0\n  flood: {messages: 5, window: 0m}\n",
                    encoding="utf-8")
    with pytest.raises(ScriptError) as caught:
        load_config(path, env={})
    problems = [str(p) for p in caught.value.problems]
    assert any(":3: inbound.max_chars: must be a whole number ≥ 1" in p for p in problems), problems
    assert any(":4: inbound.flood.window: window must be longer than 0" in p for p in problems), problems


# --- the cleaning itself --------------------------------------------------------------------------

@pytest.mark.parametrize("dirty, cleaned", [
    ("a\ud800b\udfffc", "abc"),
    ("a\x00b", "ab"),
    ("line\r\nnext\rlast", "line\nnext\nlast"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("\x1b[31mred\x7f\x85", "[31mred"),
    ("emoji 👍🏽 and 中文 and \u200d zwj", "emoji 👍🏽 and 中文 and \u200d zwj"),
])
def test_clean(dirty: str, cleaned: str) -> None:
    assert clean(dirty) == cleaned


async def test_engine_entry_cleans_every_channel(harness: Harness) -> None:
    """The one place: an event from any channel (here the test channel) is cleaned and capped on entry."""
    await harness.customer_says("c-clean", "x\u0000" * 3000)
    async with harness.app.db.session() as session:
        (text,) = (await session.scalars(select(Message.text).where(
            Message.chat_id == "c-clean", Message.direction == "in"))).all()
        count = await session.scalar(select(func.count()).select_from(Message).where(Message.chat_id == "c-clean"))
    assert text == "x" * 2000 + "\n" + cut_note(2000)
    assert count and count >= 2
