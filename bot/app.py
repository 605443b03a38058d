"""The composition root: reads settings, wires storage, scripts, engine and the enabled adapters together.

This is the only module in `bot/` that imports `adapters/`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import text

from adapters.registry import ADAPTERS
from bot.adapter_store import AdapterStorage
from bot.clock import Clock, SystemClock
from bot.commands import STAFF_COMMANDS
from bot.config import Settings
from bot.contacts import DormantSweep
from bot.durations import parse_duration
from bot.delivery import Dispatcher, action_of
from bot.engine import Engine
from bot.enrolment import JourneyRunner
from bot.events import Action, Event
from bot.inbox import InboxProcessor
from bot.library import ScriptLibrary
from bot.loyalty import LeaderboardPoster
from bot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bot.metrics import Metrics
from bot.plugin import Adapter, AdapterContext, AdapterSpec
from bot.problems import Problem
from bot.relay import Relay
from bot.scheduler import Scheduler, TouchOutcome
from bot.transfers import poll_transfers
from bot.transport import ChannelLimits, Limited, LinksConversations, Transport
from bot.turns import conversation_key
from console import install as install_console
from storage.db import Database
from storage.models import Message

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 256 * 1024  # platform callbacks and updates are a few KiB; nothing siyu serves takes more

DB_CHECK_SECONDS = 2.0      # /readyz: the database must answer `SELECT 1` within this
STALE_AFTER_POLLS = 3       # /readyz: a finished pass no older than this many poll intervals
DRAIN_SECONDS = 4.0         # on SIGTERM: the scheduler/delivery pass in progress may finish within this
ADAPTER_STOP_SECONDS = 2.0  # then the platforms' connections close within this
HTTP_CLOSE_SECONDS = 1.5    # then open HTTP connections (web chat sockets) get this long
TICK_BATCHES = 20          # scheduler batches per pass: bounds a pass's memory and the wait for its deliveries


@dataclass
class LoopHeartbeat:
    """When the serve loop last began and finished a pass, on the event loop's monotonic clock."""

    started: float | None = None   # the pass in progress began then; None between passes
    finished: float | None = None  # the last pass ended then

    def problem(self, now: float, poll_seconds: float, stuck_after: float) -> str | None:
        """Why the loop does not look alive, or None."""
        if self.finished is None:
            return "the scheduler loop has not completed a pass yet"
        if self.started is not None:  # a long pass (a platform retrying) is alive until it looks stuck
            running = now - self.started
            return f"a scheduler pass has been running for {running:.0f}s" if running > stuck_after else None
        idle = now - self.finished
        if idle > STALE_AFTER_POLLS * poll_seconds:
            return f"no scheduler pass for {idle:.0f}s (poll interval {poll_seconds:g}s)"
        return None


class App:
    """One running siyu: database, scripts, engine, scheduler and delivery, on one clock."""

    def __init__(self, settings: Settings, scripts: Path, clock: Clock | None = None,
                 worker_id: str | None = None, adapters: Sequence[AdapterSpec[Any]] = ADAPTERS) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()  # this App's own registry: several Apps in one process never collide
        self.db = Database(settings.database_url)
        self.library = ScriptLibrary(scripts, settings.brand)
        self.runner = JourneyRunner(settings.policy.timezone)
        worker = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.transports: dict[str, Transport] = {}  # the one registry; the dispatcher reads it live
        self.relay = Relay(self.db, worker, self.transports, self._stored_action)
        self.engine = Engine(self.db, self.library, settings, self.runner, self.conversation_link, self.metrics,
                             publisher=self.relay)
        self.scheduler = Scheduler(self.db, self.library, settings, self.clock, self.runner, worker, self.limits_for,
                                   self.metrics)
        self.dispatcher = Dispatcher(self.db, self.clock, self.transports, settings.delivery_rate,
                                     metrics=self.metrics, default_guide=settings.default_guide,
                                     publisher=self.relay)
        self.inbox = InboxProcessor(self.db, self.clock, self.engine.handle)
        self.dormancy = DormantSweep(self.db, self.engine.contacts, self.clock,
                                     parse_duration(settings.policy.dormant_after))
        self.leaderboard = LeaderboardPoster(self.db, self.library, self.clock, settings.policy)
        self.specs = tuple(adapters)
        self.adapters: list[Adapter] | None = None  # built on first use
        self._to_stop: list[Adapter] = []  # built adapters hold clients even before they start
        self.heartbeat = LoopHeartbeat()
        self._stopping = asyncio.Event()

    # --- what the engine asks of transports ---

    def limits_for(self, channel: str) -> ChannelLimits | None:
        transport = self.transports.get(channel)
        return transport.limits if isinstance(transport, Limited) else None

    def conversation_link(self, channel: str, chat_id: str, contact_id: int) -> str:
        """Where a guide opens the conversation: the platform's own link when the transport has one, else
        the console's page of that customer (console/static/js/inbox.js: `#/inbox/<contact id>`)."""
        transport = self.transports.get(channel)
        if isinstance(transport, LinksConversations):
            return transport.conversation_link(chat_id)
        return f"{self.settings.server.public_url}/console#/inbox/{contact_id}"

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

    def _context(self, spec: AdapterSpec[Any]) -> AdapterContext[Any]:
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
        """Apply the event and deliver what it made due before the conversation's next event (`handle_now`).

        The lean path: the conversation's turn, one transaction (dedupe, remember, decide, queue and claim
        the replies), then this event's own replies are handed over at once. A greeting or a guide's
        /sop it scheduled runs for those customers only. Everything else — other customers' touches,
        platform confirmations, script reloads — stays on the serve loop.
        """
        async with self.engine.turns.turn(conversation_key(event)):
            claimed_until = self.clock.now() + self.dispatcher.lease
            applied = await self.engine.apply(event, self.transports.keys(), claimed_until)
            await self.dispatcher.deliver_now(applied.queued)
            if applied.scheduled_for:  # a greeting due now goes out before the conversation's next event
                outcomes = await self.scheduler.run_due(applied.scheduled_for, self.transports.keys(),
                                                        claimed_until)
                await self.dispatcher.deliver_now([m for outcome in outcomes for m in outcome.queued])

    async def tick(self) -> list[TouchOutcome]:
        """One pass: stored callbacks, due touches, then delivery of what is queued."""
        await self.inbox.process()
        await poll_transfers(self)  # hand-overs the platform has not settled yet (bot/transfers.py)
        await self.dormancy.run()  # at most hourly: silent customers enter the `dormant` journeys
        await self.leaderboard.run()  # monthly: last month's points leaderboard in each group
        # a backlog (a million customers due after downtime) is worked off pass by pass: what one pass decided
        # goes out before the next begins, and no pass holds more than TICK_BATCHES batches in memory
        outcomes, more = await self.scheduler.run_some(TICK_BATCHES)
        await self.dispatcher.flush()
        await self.dispatcher.confirm_pending()
        if more:
            self.engine.work_ready.set()  # the serve loop starts the next pass at once
        return outcomes

    async def _stored_action(self, message_id: int) -> Action | None:
        """A relayed message too long for a notification, read back from the outbox."""
        async with self.db.session() as session:
            message = await session.get(Message, message_id)
        return action_of(message) if message is not None else None

    async def run_forever(self, reload_every: float = 2.0) -> None:
        """Serve loop: tick when woken or every poll interval; pick up edited scripts.

        Returns after `request_stop()`, once the pass in progress has finished.
        """
        loop = asyncio.get_running_loop()
        next_reload = loop.time() + reload_every
        while not self._stopping.is_set():
            self.heartbeat.started = loop.time()
            self.engine.work_ready.clear()  # before the pass, so a wake-up during it is not lost
            try:
                await self.tick()
                if loop.time() >= next_reload and not self._stopping.is_set():
                    next_reload = loop.time() + reload_every
                    for problem in await asyncio.to_thread(self.library.reload):
                        log.error("%s (still running the last good version)", problem)
                    await self.engine.answers.refresh()
            except Exception:  # keep serving; the outbox keeps the work for the next pass
                self.metrics.scheduler_failures.inc()
                log.exception("scheduler pass failed")
            self.heartbeat.started, self.heartbeat.finished = None, loop.time()
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.work_ready.wait(), self.settings.scheduler.poll_seconds)

    def request_stop(self) -> None:
        """Ask the serve loop to return after the pass in progress (it wakes at once if idle)."""
        self._stopping.set()
        self.engine.work_ready.set()

    # --- what operators ask ---

    async def readiness(self) -> list[str]:
        """Why this process should not get traffic now (empty: ready). Details go to the log only."""
        problems: list[str] = []
        try:
            async with asyncio.timeout(DB_CHECK_SECONDS):
                async with self.db.session() as session:
                    await session.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to answer is the same answer: not ready
            log.warning("readiness: the database did not answer: %s: %s", type(exc).__name__, exc)
            problems.append(f"the database did not answer ({type(exc).__name__})")
        scheduler = self.settings.scheduler
        loop_problem = self.heartbeat.problem(asyncio.get_running_loop().time(), scheduler.poll_seconds,
                                              stuck_after=float(scheduler.lease_seconds))
        if loop_problem is not None:
            problems.append(loop_problem)
        return problems

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition, with queue depths counted now."""
        try:
            async with asyncio.timeout(DB_CHECK_SECONDS):
                async with self.db.session() as session:
                    await self.metrics.refresh_queue_depths(session, self.clock.now())
        except Exception as exc:  # the counters are still worth a scrape; the depths keep their last values
            log.warning("metrics: could not count the queues: %s: %s", type(exc).__name__, exc)
        return self.metrics.render()

    async def close(self) -> None:
        await self.stop_adapters()
        await self.relay.close()
        await self.db.close()


def build_web_app(app: App) -> web.Application:
    """The aiohttp application `siyu serve` runs: health check plus every enabled adapter's routes."""
    web_app = web.Application(client_max_size=MAX_REQUEST_BYTES)  # a bigger body gets 413, unread

    async def healthz(_request: web.Request) -> web.Response:
        """Liveness: the process answers HTTP."""
        return web.json_response({"ok": True, "journeys": sorted(app.library.journeys),
                                  "scripts_version": app.library.version})

    async def readyz(_request: web.Request) -> web.Response:
        """Readiness: the database answers and the scheduler loop keeps passing."""
        problems = await app.readiness()
        if problems:
            return web.json_response({"ready": False, "reasons": problems}, status=503)
        return web.json_response({"ready": True})

    async def metrics(_request: web.Request) -> web.Response:
        body = await app.metrics_text()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    for adapter in app.plug_in():
        if adapter.routes is not None:
            adapter.routes(web_app)
    install_console(web_app, app)  # /console and its /api: staff are one more way in
    return web_app


async def serve(app: App, host: str, port: int, on_stop: Callable[[], None] | None = None) -> None:
    """Run the web server, the adapters and the scheduler loop until SIGTERM or SIGINT (or cancelled).

    Then drain, each step bounded: stop accepting connections, let the pass in progress finish,
    stop the adapters, close open HTTP connections. `on_stop` hears the signal first (the CLI arms
    a last-resort exit with it). The caller closes the database.
    """
    runner = web.AppRunner(build_web_app(app), shutdown_timeout=HTTP_CLOSE_SECONDS)
    await runner.setup()
    await app.relay.listen()  # replies for this process's sockets delivered by the others
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("siyu is listening on http://%s:%s/", host, port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            return
        log.info("%s: finishing the current pass, then stopping", signum.name)
        if on_stop is not None:
            on_stop()
        stop.set()
        app.request_stop()

    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
    starting = asyncio.create_task(app.start_adapters())
    worker: asyncio.Task[None] | None = None
    try:
        await _until(stop, starting)
        if starting.done():  # (a signal while platforms were still connecting skips the loop)
            worker = asyncio.create_task(app.run_forever())
            await _until(stop, worker)
    finally:
        for signum in handled:  # a second signal from here on acts at once
            loop.remove_signal_handler(signum)
        await site.stop()  # no new connections from here on
        app.request_stop()  # however we got here (a signal, a cancel, an error), the loop ends its pass
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        if worker is not None:
            await _drain(worker)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ADAPTER_STOP_SECONDS):
                await app.stop_adapters()
        await runner.cleanup()
        await app.relay.close()
        log.info("siyu stopped")


async def _until(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait for `task` to end or `stop` to be set, whichever comes first; the task's error surfaces."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()


async def _drain(worker: asyncio.Task[None]) -> None:
    """Let the serve loop finish its pass (it was asked to stop); cancel it if that takes too long."""
    if not worker.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker), DRAIN_SECONDS)
    if not worker.done():
        log.warning("the scheduler pass did not finish within %.0fs; cancelling it", DRAIN_SECONDS)
        worker.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await worker


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
