"""No secret in any log line or repr (issue 14, "Secrets in logs").

Every adapter runs its flows, error paths included, against fake platform servers on 127.0.0.1,
with the real logging setup (`bot.logging_setup.configure`, as `siyu serve` installs it) at DEBUG.
Everything any logger emitted is then searched for every secret value.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.wecom.aibot import AiBotConnection
from adapters.wecom.api import WeComClient, WeComError
from adapters.wecom.crypto import WeComCrypto, signature
from bot.app import build_web_app
from bot.clock import VirtualClock
from bot.config_loader import load_config
from bot.logging_setup import (
    QUIET_LOGGERS,
    REDACTED,
    configure,
    redact_secrets,
    reset,
    secrets_of,
)
from tests.conftest import ROOT
from tests.fakes import (
    FakeAiBotGateway,
    FakeQyapi,
    FakeTelegram,
    LocalServer,
    tg_private,
)
from tests.harness import CONFIG, SCRIPTS, Harness

TG_TOKEN = "7654321098:AAFsiyu-Telegram-T0ken-Secret-Value"
TG_WEBHOOK_SECRET = "tgHookS3cret-Value-31337"
WECOM_TOKEN = "wecomCallbackT0kenValue"
AES_KEY = base64.b64encode(b"siyu-secret-aes-key-32-bytes!!!!").decode()[:43]
WECOM_SECRET = "wecomCorpS3cretValue-0001"
AIBOT_SECRET = "aibotS3cretValue-9999"
ACCESS_TOKEN = "accessT0kenValue-from-gettoken-42"
LLM_KEY = "sk-llmS3cretKeyValue-123456"
WEBCHAT_SECRET = "webchatSessionSigningS3cret-0123456789abcdef"
DB_PASSWORD = "pgPassw0rd-Value-777"
SECRETS = (TG_TOKEN, TG_WEBHOOK_SECRET, WECOM_TOKEN, AES_KEY, WECOM_SECRET, AIBOT_SECRET, ACCESS_TOKEN, LLM_KEY,
           DB_PASSWORD, WEBCHAT_SECRET)
CORP = "wwcorpSECRETS01"
GUIDE_TG = 424242
STAFF = ({"id": "xiaomei", "name": "小美", "identities": {"telegram": str(GUIDE_TG), "wecom": "guide01"}},)


# --- capturing everything ---------------------------------------------------------------------

@dataclass
class Captured:
    """What the real handler wrote, plus every record pytest saw (formatted, tracebacks included)."""

    stream: io.StringIO
    caplog: pytest.LogCaptureFixture

    def text(self) -> str:
        records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}"
                            for r in self.caplog.records)
        return "\n".join((self.stream.getvalue(), self.caplog.text, records))

    def assert_clean(self) -> str:
        text = self.text()
        for secret in SECRETS:
            assert secret not in text, f"a secret ({secret[:4]}…) is in the log"
        for shown in re.finditer(r"(?:access_token|corpsecret|secret_token)=(?!\[REDACTED\])\S+", text):
            raise AssertionError(f"a query parameter kept its value: {shown.group(0)[:40]}")
        return text


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Captured]:
    """`configure` as `siyu serve` calls it, but at DEBUG and into a buffer; undone afterwards."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure(logging.DEBUG, stream=stream)
    caplog.set_level(logging.DEBUG)
    try:
        yield Captured(stream, caplog)
    finally:
        reset()
        root.setLevel(level)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def register_secrets(h: Harness) -> None:
    """What `siyu`'s CLI does once the settings are loaded."""
    redact_secrets(secrets_of(h.app.settings, env={"SIYU_LLM_API_KEY": LLM_KEY}))


async def until(h: Harness, condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await h.app.tick()
        await asyncio.sleep(0.05)


# --- Telegram ---------------------------------------------------------------------------------

async def telegram_app(tmp_path: Path, start: datetime, fake: FakeTelegram, api_base: str,
                       **telegram: Any) -> Harness:
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}", start, SCRIPTS, staff=STAFF,
                             adapters={"telegram": {"token": TG_TOKEN, "api_base": api_base, **telegram}})
    register_secrets(h)
    h.app.plug_in()
    await h.app.start_adapters()
    return h


async def test_telegram_polling_sends_and_failures_log_no_token(tmp_path: Path, start: datetime,
                                                                logs: Captured) -> None:
    fake = FakeTelegram(token=TG_TOKEN)
    api_base = await fake.start()
    h = await telegram_app(tmp_path, start, fake, api_base)
    try:
        fake.push(tg_private(1001, "Wang", "/start", 1))
        await until(h, lambda: any(p["chat_id"] == 1001 for p in fake.sent()))
        fake.fail_next("sendMessage", 400, "Bad Request: chat not found")
        fake.push(tg_private(1001, "Wang", "包邮吗", 2))
        await until(h, lambda: len(fake.refused) >= 1)
        fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
        fake.push(tg_private(1003, "Zhao", "/start", 3))
        await until(h, lambda: len(fake.refused) >= 2)
        fake.push(tg_private(GUIDE_TG, "小美", "/help", 4))
        await until(h, lambda: any(p["chat_id"] == GUIDE_TG for p in fake.sent()))
        fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
        fake.push(tg_private(1002, "Li", "/start", 5))  # the channel pauses; the greeting waits
        await until(h, lambda: len(fake.refused) >= 3)
    finally:
        await h.close()
        await fake.close()
    text = logs.assert_clean()
    assert f"/bot{REDACTED}" in text  # python-telegram-bot logged its API URL at DEBUG: the token was in it
    assert "giving up on message" in text  # the failures were logged too
    # httpx prints every request URL at INFO; it is kept at WARNING
    assert not [r for r in logs.caplog.records if r.name.startswith(("httpx", "httpcore"))]


async def test_telegram_webhook_forged_update_logs_no_secret(tmp_path: Path, start: datetime,
                                                             logs: Captured) -> None:
    fake = FakeTelegram(token=TG_TOKEN)
    api_base = await fake.start()
    h = await telegram_app(tmp_path, start, fake, api_base, mode="webhook",
                           webhook_url="https://bot.example.com/telegram/webhook", webhook_secret=TG_WEBHOOK_SECRET)
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            update = {"update_id": 1, **tg_private(3001, "Hook", "/start", 1)}
            forged = await client.post("/telegram/webhook", json=update,
                                       headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert forged.status == 403
            real = await client.post("/telegram/webhook", json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": TG_WEBHOOK_SECRET})
            assert real.status == 200
        await until(h, lambda: any(p["chat_id"] == 3001 for p in fake.sent()))
    finally:
        await h.close()
        await fake.close()
    logs.assert_clean()
    assert any(r.levelno == logging.WARNING and "telegram webhook" in r.getMessage()
               for r in logs.caplog.records)  # the forged update was refused, and logged


async def test_siyu_serve_with_a_rejected_token_exits_without_printing_it(tmp_path: Path) -> None:
    """python-telegram-bot quotes the token in InvalidToken; serve's last words go through the log."""
    fake = FakeTelegram(token="1:the-token-the-platform-knows")
    api_base = await fake.start()
    env = {**os.environ, "SIYU_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
           "SIYU_TELEGRAM_TOKEN": TG_TOKEN, "SIYU_TELEGRAM_API_BASE": api_base}
    try:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(_free_port()),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(server.communicate(), 120)
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
    finally:
        await fake.close()
    text = out.decode() + err.decode()
    assert server.returncode == 1, text
    assert "was rejected by the server" in text and "siyu serve stopped on an error" in text
    assert TG_TOKEN not in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- WeCom ------------------------------------------------------------------------------------

def add_contact_xml(customer: str) -> str:
    return (f"<xml><ToUserName>{CORP}</ToUserName><FromUserName>sys</FromUserName><CreateTime>1403610513"
            "</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event>"
            "<ChangeType>add_external_contact</ChangeType><UserID>guide01</UserID>"
            f"<ExternalUserID>{customer}</ExternalUserID><WelcomeCode>WELCOME</WelcomeCode></xml>")


async def post_callback(client: TestClient, h: Harness, inner: str, forge: bool = False) -> int:
    crypto = WeComCrypto(WECOM_TOKEN, AES_KEY, CORP)
    encrypt = crypto.encrypt(inner)
    ts = str(int(h.clock.now().timestamp()))
    sig = "0" * 40 if forge else signature(WECOM_TOKEN, ts, "nonce1", encrypt)
    body = f"<xml><ToUserName>{CORP}</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    response = await client.post("/wecom/callback", data=body,
                                 params={"msg_signature": sig, "timestamp": ts, "nonce": "nonce1"})
    return response.status


async def test_wecom_callbacks_and_a_failing_gettoken_log_no_secret(tmp_path: Path, start: datetime,
                                                                    logs: Captured) -> None:
    fake = FakeQyapi(corp_id=CORP, secret="the-secret-the-platform-expects")  # ours is refused: 40001
    api = await fake.start()
    wecom = {"corp_id": CORP, "token": WECOM_TOKEN, "encoding_aes_key": AES_KEY, "secret": WECOM_SECRET,
             "agent_id": "1000002", "api_base": api}
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'wc.db'}", start, SCRIPTS, staff=STAFF,
                             adapters={"webchat": {"enabled": False}, "wecom": wecom})
    register_secrets(h)
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            assert await post_callback(client, h, add_contact_xml("wmBAD0001"), forge=True) == 403
            assert await post_callback(client, h, add_contact_xml("wmGOOD001")) == 200
            for _ in range(3):
                await h.app.tick()
    finally:
        await h.close()
        await fake.close()
    text = logs.assert_clean()
    assert "wecom callback refused" in text and "40001" in text  # both paths were taken and logged


class RedirectingQyapi(LocalServer):
    """A qyapi behind a misconfigured proxy: gettoken may work, then every call redirects to itself."""

    def __init__(self, token_works: bool) -> None:
        self.token_works = token_works
        self.server = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path.endswith("/gettoken") and self.token_works:
            return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": ACCESS_TOKEN, "expires_in": 7200})
        raise web.HTTPFound(str(request.url))  # aiohttp gives up: TooManyRedirects, the URL in its text

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/cgi-bin/{path:.*}", self._handle)

    async def start(self) -> str:
        return await super().start() + "/cgi-bin"


@pytest.mark.parametrize("token_works", [False, True], ids=["gettoken fails", "a call fails"])
async def test_wecom_errors_quote_no_query_string(start: datetime, logs: Captured, token_works: bool) -> None:
    server = RedirectingQyapi(token_works)
    api = await server.start()
    redact_secrets([WECOM_SECRET])  # known at start-up; the access token is not

    async def no_wait(_seconds: float) -> None:
        return None

    client = WeComClient(CORP, WECOM_SECRET, VirtualClock(start), api, sleep=no_wait)
    try:
        with pytest.raises(WeComError) as caught:
            await client.call("/message/send", {"touser": "guide01"})
        logging.getLogger("siyu.test").exception("the call failed")  # as the inbox or dispatcher would
    finally:
        await client.close()
        await server.close()
    message = str(caught.value)
    assert "TooManyRedirects" in message
    assert WECOM_SECRET not in message and ACCESS_TOKEN not in message
    assert "corpsecret" not in message and "access_token" not in message
    assert WECOM_SECRET not in repr(client) and ACCESS_TOKEN not in repr(client)
    logs.assert_clean()


async def test_aibot_with_a_wrong_secret_and_a_right_one_logs_no_secret(tmp_path: Path, start: datetime,
                                                                        logs: Captured) -> None:
    refusing = FakeAiBotGateway(secret="the-secret-the-platform-expects")
    url = await refusing.start()
    wecom = {"aibot_id": refusing.bot_id, "aibot_secret": AIBOT_SECRET, "aibot_url": url}
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'ab.db'}", start, SCRIPTS,
                             adapters={"webchat": {"enabled": False}, "wecom": wecom})
    register_secrets(h)
    try:
        h.app.plug_in()
        await h.app.start_adapters()
        await refusing.wait_for(lambda: refusing.subscribes >= 1)
        await asyncio.sleep(0.1)  # the refusal is read and logged
    finally:
        await h.close()
        await refusing.close()

    gateway = FakeAiBotGateway(secret=AIBOT_SECRET)
    url = await gateway.start()
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'ab2.db'}", start, SCRIPTS,
                             adapters={"webchat": {"enabled": False},
                                       "wecom": {**wecom, "aibot_url": url}})
    register_secrets(h)
    try:
        h.app.plug_in()
        await h.app.start_adapters()
        bot = h.app.transports["wecom_aibot"]
        assert isinstance(bot, AiBotConnection)
        await bot.wait_authenticated()
        assert AIBOT_SECRET not in repr(bot)
        await gateway.push("aibot_msg_callback", {"msgid": "m1", "chattype": "single", "from": {"userid": "qian"},
                                                  "msgtype": "text", "text": {"content": "包邮吗"}})
        await until(h, lambda: bool(gateway.received("aibot_respond_msg")))
    finally:
        await h.close()
        await gateway.close()
    text = logs.assert_clean()
    assert "subscribe refused" in text


# --- the LLM ------------------------------------------------------------------------------------

class EchoingOpenAI(LocalServer):
    """An OpenAI-compatible endpoint that refuses the key and quotes it back, as real ones half do."""

    def __init__(self) -> None:
        self.server = None
        self.keys: list[str] = []

    async def _completions(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys.append(key)
        return web.json_response({"error": {"message": f"Incorrect API key provided: {key}",
                                            "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)

    async def start(self) -> str:
        return await super().start() + "/v1"


async def test_an_llm_refusing_the_key_and_quoting_it_logs_no_key(tmp_path: Path, start: datetime, logs: Captured,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    llm = EchoingOpenAI()
    base_url = await llm.start()
    monkeypatch.setenv("SIYU_LLM_API_KEY", LLM_KEY)
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'llm.db'}", start, SCRIPTS,
                             llm={"base_url": base_url, "model": "m", "api_key_env": "SIYU_LLM_API_KEY"})
    register_secrets(h)
    try:
        understanding = h.app.engine.answers.understanding
        assert understanding.llm is not None
        fuzzy, _ = understanding.scores("运费怎么算")
        assert await understanding.llm.classify("运费怎么算", fuzzy[:3]) is None
    finally:
        await h.close()
        await llm.close()
    assert llm.keys == [LLM_KEY]  # the key went out, and came back in the error text
    text = logs.assert_clean()
    assert "Incorrect API key provided" in text


# --- redaction itself, where logging is loud on purpose ---------------------------------------------

def test_loud_loggers_and_tracebacks_are_redacted_too(logs: Captured) -> None:
    redact_secrets([WECOM_SECRET, AIBOT_SECRET])
    logging.getLogger("httpx").setLevel(logging.DEBUG)  # someone turned it back on
    logging.getLogger("httpx").info('HTTP Request: POST https://api.telegram.org/bot%s/getMe "HTTP/1.1 200 OK"',
                                    TG_TOKEN)
    logging.getLogger("aiohttp.client").debug("GET %s", f"https://qyapi/cgi-bin/gettoken?corpid=x&corpsecret={WECOM_SECRET}")
    logging.getLogger("siyu.test").info("GET /cgi-bin/message/send?access_token=%s", ACCESS_TOKEN)
    logging.getLogger("siyu.test").info("frame %s", {"cmd": "aibot_subscribe", "body": {"secret": AIBOT_SECRET}})
    logging.getLogger("siyu.test").info("connecting to postgresql+asyncpg://siyu:%s@db/siyu", DB_PASSWORD)
    try:
        raise RuntimeError(f"gettoken failed for corpsecret={WECOM_SECRET}")
    except RuntimeError:
        logging.getLogger("siyu.test").exception("with a traceback")
    logging.getLogger("siyu.test").warning("bad format %s %s", TG_TOKEN)  # one argument short
    text = logs.assert_clean()
    assert text.count(REDACTED) >= 6


def test_reprs_show_no_secret(start: datetime) -> None:
    env = {"SIYU_TELEGRAM_TOKEN": TG_TOKEN, "SIYU_TELEGRAM_WEBHOOK_SECRET": TG_WEBHOOK_SECRET,
           "SIYU_WECOM_CORP_ID": CORP, "SIYU_WECOM_TOKEN": WECOM_TOKEN, "SIYU_WECOM_ENCODING_AES_KEY": AES_KEY,
           "SIYU_WECOM_SECRET": WECOM_SECRET, "SIYU_WECOM_AIBOT_ID": "aibot001",
           "SIYU_WECOM_AIBOT_SECRET": AIBOT_SECRET,
           "SIYU_WEBCHAT_SECRET": WEBCHAT_SECRET,
           "SIYU_DATABASE_URL": f"postgresql+asyncpg://siyu:{DB_PASSWORD}@db/siyu", "SIYU_LLM_API_KEY": LLM_KEY}
    settings = load_config(CONFIG, env=env)
    shown = " ".join((repr(settings), str(settings), repr(settings.adapters), settings.model_dump_json(),
                      repr(settings.adapters.telegram), repr(settings.adapters.wecom), str(settings.model_dump())))
    # (the database password is part of database_url, a plain setting; only the log redacts it)
    for secret in (TG_TOKEN, TG_WEBHOOK_SECRET, WECOM_TOKEN, AES_KEY, WECOM_SECRET, AIBOT_SECRET, WEBCHAT_SECRET):
        assert secret not in shown
    assert settings.adapters.telegram.token is not None
    assert settings.adapters.telegram.token.get_secret_value() == TG_TOKEN  # still there for the factory

    client = WeComClient(CORP, WECOM_SECRET, VirtualClock(start))
    client._token = ACCESS_TOKEN  # as after a gettoken
    assert WECOM_SECRET not in repr(client) and ACCESS_TOKEN not in repr(client)
    assert CORP in repr(client)  # the rest still shows, for debugging

    async def handle(_event: object) -> None:
        return None

    bot = AiBotConnection("aibot001", AIBOT_SECRET, handle, VirtualClock(start))
    assert AIBOT_SECRET not in repr(bot)

    found = secrets_of(settings, env)
    assert {TG_TOKEN, TG_WEBHOOK_SECRET, WECOM_TOKEN, AES_KEY, WECOM_SECRET, AIBOT_SECRET, DB_PASSWORD,
            LLM_KEY, WEBCHAT_SECRET} <= found
