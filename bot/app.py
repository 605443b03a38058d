"""The composition root: reads settings, wires storage, scripts, engine and transports together.

This is the only module in `bot/` that imports `adapters/`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.transport import Transport
from adapters.console import ConsoleChat, stdin_line
from adapters.telegram import TelegramAdapter
from adapters.wecom.aibot import AiBotConnection
from adapters.wecom.adapter import CHANNEL as WECOM
from adapters.wecom.adapter import KF_CHANNEL, WeComAdapter, WeComCallback, WeComKf
from adapters.wecom.api import WeComClient
from adapters.wecom.crypto import WeComCrypto
from adapters.webchat import WebChat
from adapters.webchat.server import CHANNEL as WEBCHAT, HistoryLine
from bot.clock import Clock, SystemClock
from bot.commands import STAFF_COMMANDS
from bot.config import Settings
from bot.delivery import Dispatcher
from bot.durations import parse_duration
from bot.inbox import InboxProcessor
from bot.engine import Engine
from bot.events import ChatType, Event
from bot.enrolment import JourneyRunner
from bot.library import ScriptLibrary
from bot.problems import Problem
from bot.scheduler import Scheduler, TouchOutcome
from storage import repo
from storage.db import Database

log = logging.getLogger(__name__)


class App:
    """One running siyu: database, scripts, engine, scheduler and delivery, on one clock."""

    def __init__(self, settings: Settings, scripts: Path, clock: Clock | None = None,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.library = ScriptLibrary(scripts, settings.brand)
        self.runner = JourneyRunner(settings.policy.timezone)
        self.engine = Engine(self.db, self.library, settings, self.runner, self.conversation_link)
        worker = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.scheduler = Scheduler(self.db, self.library, settings, self.clock, self.runner, worker,
                                   lambda channel: getattr(self.transports.get(channel), "limits", None))
        self.transports: dict[str, Transport] = {}
        self.dispatcher = Dispatcher(self.db, self.clock, self.transports, settings.delivery_rate)
        self.inbox = InboxProcessor(self.db, self.clock, self.engine.handle)
        self.closers: list[Callable[[], Awaitable[None]]] = []  # transports' own connections

    def conversation_link(self, channel: str, chat_id: str) -> str:
        """Where a guide opens the conversation: the platform's own link when the transport has one."""
        link = getattr(self.transports.get(channel), "conversation_link", None)
        if link is not None:
            return str(link(chat_id))
        return f"{self.settings.adapters.webchat.public_url}/#chat={channel}:{chat_id}"

    def add_transport(self, transport: Transport) -> None:
        self.transports[transport.channel] = transport
        self.dispatcher.transports[transport.channel] = transport

    async def start(self, migrate: bool = True) -> list[Problem]:
        """Migrate, load scripts, register staff. Returns script problems (the rest still runs)."""
        if migrate:
            await self.db.upgrade()
        problems = await asyncio.to_thread(self.library.reload)
        for problem in problems:
            log.error("%s", problem)
        await self.engine.refresh_understanding()
        await self.engine.sync_staff()
        return problems

    async def handle(self, event: Event) -> None:
        """What adapters call: apply the event, then send what it made due (the greeting before the next line)."""
        await self.engine.handle(event)
        await self.tick()

    async def tick(self) -> list[TouchOutcome]:
        """One pass: stored callbacks, due touches, then delivery of what is queued."""
        await self.inbox.process()
        outcomes = await self.scheduler.run_due()
        await self.dispatcher.flush()
        await self.dispatcher.confirm_pending()
        return outcomes

    async def run_forever(self, reload_every: float = 2.0) -> None:
        """Serve loop: tick when woken or every poll interval; pick up edited scripts."""
        loop = asyncio.get_running_loop()
        next_reload = loop.time() + reload_every
        while True:
            self.engine.work_ready.clear()  # before the pass, so a wake-up during it is not lost
            try:
                await self.tick()
            except Exception:  # keep serving; the outbox keeps the work for the next pass
                log.exception("scheduler pass failed")
            if loop.time() >= next_reload:
                for problem in await asyncio.to_thread(self.library.reload):
                    log.error("%s (still running the last good version)", problem)
                await self.engine.refresh_understanding()
                next_reload = loop.time() + reload_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.work_ready.wait(), self.settings.scheduler.poll_seconds)

    async def close(self) -> None:
        for close in self.closers:
            await close()
        await self.db.close()


# --- transports -----------------------------------------------------------------------------

async def _history(app: App, chat_type: ChatType, chat_id: str) -> list[HistoryLine]:
    async with app.db.session() as session:
        rows = await repo.conversation(session, WEBCHAT, chat_type.value, chat_id)
    return [HistoryLine(ref=str(m.id) if m.direction == "out" else f"in:{m.id}",
                        sender="bot" if m.sender_role == "bot" else m.sender_id, text=m.text, at=m.created_at)
            for m in rows]


def enable_webchat(app: App) -> WebChat:
    async def is_staff(name: str) -> bool:
        async with app.db.session() as session:
            return await repo.staff_by_identity(session, WEBCHAT, name) is not None

    async def history(chat_type: ChatType, chat_id: str) -> list[HistoryLine]:
        return await _history(app, chat_type, chat_id)

    webchat = WebChat(app.handle, history, is_staff, app.clock, app.settings.adapters.webchat.demo_group)
    app.add_transport(webchat)
    return webchat


def enable_telegram(app: App) -> TelegramAdapter | None:
    """The Telegram adapter when SIYU_TELEGRAM_TOKEN is set; guides are staff with a telegram identity."""
    settings = app.settings.adapters.telegram
    if not settings.token:
        return None
    guides = [member.identities["telegram"] for member in app.settings.staff if "telegram" in member.identities]
    telegram = TelegramAdapter(settings.token, settings.api_base, app.engine.handle, app.clock, guides,
                               STAFF_COMMANDS, settings.mode, settings.webhook_url, settings.webhook_secret)
    app.add_transport(telegram)
    return telegram


AIBOT_CALLBACK = "wecom_aibot_callback"   # inbox channel of the AI bot's HTTP callbacks
AIBOT_CALLBACK_PATH = "/wecom/aibot/callback"


def enable_wecom(app: App) -> WeComCallback | None:
    """WeCom callback, customer contact and 微信客服 when the corp id, token and AES key are set."""
    settings = app.settings.adapters.wecom
    if not settings.enabled:
        return None
    assert settings.corp_id and settings.token and settings.encoding_aes_key
    client = WeComClient(settings.corp_id, settings.secret or "", app.clock, settings.api_base)
    app.closers.append(client.close)

    async def get_value(key: str) -> str | None:
        async with app.db.session() as session:
            return await repo.get_value(session, key)

    async def set_value(key: str, value: str) -> None:
        async with app.db.session() as session, session.begin():
            await repo.set_value(session, key, value, app.clock.now())

    async def window(chat_id: str) -> tuple[datetime | None, int]:
        async with app.db.session() as session:
            return await repo.delivery_window(session, KF_CHANNEL, chat_id)

    async def remember(channel: str, key: str, payload: str) -> bool:
        async with app.db.session() as session, session.begin():
            return await repo.remember_inbound(session, channel, key, payload, app.clock.now())

    async def sends_since(customer: str, guide: str | None, since: datetime) -> int:
        async with app.db.session() as session:
            return await repo.assisted_sends_since(session, WECOM, customer, guide, since)

    async def members_of(group: str) -> set[str]:
        async with app.db.session() as session:
            return await repo.current_members(session, WECOM, group)

    kf = WeComKf(client, app.clock, (get_value, set_value), window)
    staff_ids = {m.identities["wecom"] for m in app.settings.staff if "wecom" in m.identities}
    wecom = WeComAdapter(client, settings.agent_id or "", app.clock, staff_ids, kf=kf,
                         assisted_expiry=parse_duration(settings.assisted_expiry), quotas=settings.quotas,
                         sends_since=sends_since, members_of=members_of,
                         zone=ZoneInfo(app.settings.policy.timezone))
    app.add_transport(wecom)
    app.add_transport(kf)
    app.inbox.translators[WECOM] = wecom.translate
    crypto = WeComCrypto(settings.token, settings.encoding_aes_key, settings.corp_id)
    return WeComCallback(crypto, app.clock, remember, app.engine.work_ready.set, settings.timestamp_window)


def enable_wecom_aibot(app: App) -> AiBotConnection | None:
    """The AI bot: a long connection with bot id + secret, and/or its JSON callback (token + AES key)."""
    settings = app.settings.adapters.wecom
    if not settings.aibot_id:
        return None
    bot = AiBotConnection(settings.aibot_id, settings.aibot_secret or "", app.engine.handle, app.clock,
                          url=settings.aibot_url)
    app.add_transport(bot)
    app.inbox.translators[AIBOT_CALLBACK] = bot.translate_callback
    return bot


def build_web_app(app: App, telegram: TelegramAdapter | None = None) -> web.Application:
    """The aiohttp application `siyu serve` runs: health check plus every enabled HTTP adapter."""
    web_app = web.Application()
    wecom = enable_wecom(app)
    if wecom is not None:
        wecom.install(web_app)
        settings = app.settings.adapters.wecom
        aibot = app.transports.get("wecom_aibot")
        if isinstance(aibot, AiBotConnection) and settings.token and settings.encoding_aes_key:
            # the AI bot's own callback: JSON bodies, empty receive id
            WeComCallback(WeComCrypto(settings.token, settings.encoding_aes_key, ""), app.clock, wecom.remember,
                          wecom.wake, settings.timestamp_window, AIBOT_CALLBACK_PATH, AIBOT_CALLBACK,
                          json_bodies=True).install(web_app)
    if telegram is not None and telegram.mode == "webhook":
        telegram.install(web_app)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "journeys": sorted(app.library.journeys),
                                  "scripts_version": app.library.version})

    web_app.router.add_get("/healthz", healthz)
    if app.settings.adapters.webchat.enabled:
        enable_webchat(app).install(web_app)
    return web_app


async def serve(app: App, host: str, port: int) -> None:
    """Run the web server and the scheduler loop until cancelled."""
    telegram = enable_telegram(app)
    aibot = enable_wecom_aibot(app)
    runner = web.AppRunner(build_web_app(app, telegram))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("siyu is listening on http://%s:%s/", host, port)
    if telegram is not None:
        await telegram.start()
    if aibot is not None and app.settings.adapters.wecom.aibot_secret:
        aibot.start()  # the long connection; without a secret the bot runs on its HTTP callback only
    try:
        await app.run_forever()
    finally:
        if aibot is not None:
            await aibot.stop()
        if telegram is not None:
            await telegram.stop()
        await runner.cleanup()


async def chat_in_console(app: App) -> None:
    """`siyu chat`: the console REPL, with the scheduler running beside it."""
    guide = app.settings.guide(None)
    guide_id = guide.identities.get("console", "guide") if guide else "guide"
    console = ConsoleChat(app.handle, app.clock, guide_id)
    app.add_transport(console)
    loop_task = asyncio.create_task(app.run_forever())
    try:
        await console.run(stdin_line)
        await app.tick()  # deliver what the last line caused before leaving
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
