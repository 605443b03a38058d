"""The composition root: reads settings, wires storage, scripts, engine and the enabled adapters together.

This is the only module in `bot/` that imports `adapters/`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from adapters.registry import ADAPTERS
from bot.adapter_store import AdapterStorage
from bot.clock import Clock, SystemClock
from bot.commands import STAFF_COMMANDS
from bot.config import Settings
from bot.delivery import Dispatcher
from bot.engine import Engine
from bot.enrolment import JourneyRunner
from bot.events import Event
from bot.inbox import InboxProcessor
from bot.library import ScriptLibrary
from bot.plugin import Adapter, AdapterContext, AdapterSpec
from bot.problems import Problem
from bot.scheduler import Scheduler, TouchOutcome
from bot.transport import ChannelLimits, Limited, LinksConversations, Transport
from storage.db import Database

log = logging.getLogger(__name__)


class App:
    """One running siyu: database, scripts, engine, scheduler and delivery, on one clock."""

    def __init__(self, settings: Settings, scripts: Path, clock: Clock | None = None,
                 worker_id: str | None = None, adapters: Sequence[AdapterSpec] = ADAPTERS) -> None:  # type: ignore[type-arg]
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.library = ScriptLibrary(scripts, settings.brand)
        self.runner = JourneyRunner(settings.policy.timezone)
        self.engine = Engine(self.db, self.library, settings, self.runner, self.conversation_link)
        worker = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.scheduler = Scheduler(self.db, self.library, settings, self.clock, self.runner, worker, self.limits_for)
        self.transports: dict[str, Transport] = {}  # the one registry; the dispatcher reads it live
        self.dispatcher = Dispatcher(self.db, self.clock, self.transports, settings.delivery_rate)
        self.inbox = InboxProcessor(self.db, self.clock, self.engine.handle)
        self.specs = tuple(adapters)
        self.adapters: list[Adapter] | None = None  # built on first use
        self._to_stop: list[Adapter] = []  # built adapters hold clients even before they start

    # --- what the engine asks of transports ---

    def limits_for(self, channel: str) -> ChannelLimits | None:
        transport = self.transports.get(channel)
        return transport.limits if isinstance(transport, Limited) else None

    def conversation_link(self, channel: str, chat_id: str) -> str:
        """Where a guide opens the conversation: the platform's own link when the transport has one."""
        transport = self.transports.get(channel)
        if isinstance(transport, LinksConversations):
            return transport.conversation_link(chat_id)
        return f"{self.settings.server.public_url}/#chat={channel}:{chat_id}"

    # --- adapters ---

    def add_transport(self, transport: Transport) -> None:
        self.transports[transport.channel] = transport

    def add_adapter(self, adapter: Adapter) -> None:
        for transport in adapter.transports:
            self.add_transport(transport)
        self.inbox.translators.update(adapter.translators)

    def plug_in(self) -> list[Adapter]:
        """Build every configured adapter once (a spec returns None when its platform is not set up)."""
        if self.adapters is None:
            self.adapters = []
            for spec in self.specs:
                adapter = spec.build(self._context(spec))
                if adapter is not None:
                    self.add_adapter(adapter)
                    self.adapters.append(adapter)
                    self._to_stop.append(adapter)
        return self.adapters

    def _context(self, spec: AdapterSpec) -> AdapterContext:  # type: ignore[type-arg]
        channels = {channel for member in self.settings.staff for channel in member.identities}
        return AdapterContext(
            settings=self.settings.adapter_settings(spec.name, spec.settings), handle=self.engine.handle,
            handle_now=self.handle, clock=self.clock, store=AdapterStorage(self.db, self.clock),
            wake=self.engine.work_ready.set, zone=ZoneInfo(self.settings.policy.timezone),
            staff={channel: self.settings.staff_ids(channel) for channel in channels},
            staff_commands=STAFF_COMMANDS)

    async def start_adapters(self) -> None:
        """Open the platforms' own connections (polling, long connections)."""
        for adapter in self.plug_in():
            if adapter.start is not None:
                await adapter.start()

    async def stop_adapters(self) -> None:
        """Close what the adapters opened, newest first; safe to call twice."""
        while self._to_stop:
            adapter = self._to_stop.pop()
            if adapter.stop is not None:
                try:
                    await adapter.stop()
                except Exception:  # one platform failing to close must not keep the others open
                    log.exception("stopping an adapter failed")

    # --- running ---

    async def start(self, migrate: bool = True) -> list[Problem]:
        """Migrate, load scripts, register staff. Returns script problems (the rest still runs)."""
        if migrate:
            await self.db.upgrade()
        problems = await asyncio.to_thread(self.library.reload)
        for problem in problems:
            log.error("%s", problem)
        await self.engine.answers.refresh()
        await self.engine.sync_staff()
        return problems

    async def handle(self, event: Event) -> None:
        """Apply the event, then send what it made due (the greeting before the next line)."""
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
                await self.engine.answers.refresh()
                next_reload = loop.time() + reload_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.work_ready.wait(), self.settings.scheduler.poll_seconds)

    async def close(self) -> None:
        await self.stop_adapters()
        await self.db.close()


def build_web_app(app: App) -> web.Application:
    """The aiohttp application `siyu serve` runs: health check plus every enabled adapter's routes."""
    web_app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "journeys": sorted(app.library.journeys),
                                  "scripts_version": app.library.version})

    web_app.router.add_get("/healthz", healthz)
    for adapter in app.plug_in():
        if adapter.routes is not None:
            adapter.routes(web_app)
    return web_app


async def serve(app: App, host: str, port: int) -> None:
    """Run the web server, the adapters and the scheduler loop until cancelled."""
    runner = web.AppRunner(build_web_app(app))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("siyu is listening on http://%s:%s/", host, port)
    try:
        await app.start_adapters()
        await app.run_forever()
    finally:
        await app.stop_adapters()
        await runner.cleanup()


async def chat_in_console(app: App) -> None:
    """`siyu chat`: the console REPL, with the scheduler running beside it."""
    from adapters.console import ConsoleChat, stdin_line

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
