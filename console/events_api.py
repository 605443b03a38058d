"""`POST /api/events`: business events from the brand's systems (see bot/business_events.py).

Authenticated by the console's own check (console/auth.py): an integration sends a staff member's
API token (`siyu staff token <staff-id>`) as `Authorization: Bearer <token>`; a logged-in console page
may post too, with its CSRF token. A new event answers 202, a replay 200 with no effect, a bad event
400 with one sentence naming the field, a missing or unknown token 401.
"""
from __future__ import annotations

import json
import logging

from aiohttp import web

from bot.app import App
from bot.business_events import BusinessEvents, EventRejected, Outcome
from console.auth import ConsoleAuth, Refused

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 64 * 1024  # one event is a few hundred bytes; an order with many items a few KiB


def install(web_app: web.Application, app: App) -> None:
    """Mount `POST /api/events` on the web app `siyu serve` runs."""
    events = BusinessEvents(app.db, app.engine.contacts, app.clock, app.engine.work_ready.set)
    auth = ConsoleAuth(app.db, app.clock, app.settings)

    async def post_event(request: web.Request) -> web.Response:
        try:
            staff = (await auth.identify(request)).key
        except Refused as refused:
            refused.headers["WWW-Authenticate"] = "Bearer"
            raise
        if request.content_length is not None and request.content_length > MAX_EVENT_BYTES:
            return web.json_response({"error": f"事件太大：一条事件最多 {MAX_EVENT_BYTES // 1024} KiB"}, status=413)
        try:
            raw = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "事件必须是 JSON 对象 — the body is not JSON", "field": None},
                                     status=400)
        try:
            outcome = await events.receive(raw, source="api")
        except EventRejected as exc:
            return web.json_response({"error": f"事件有误：{exc}", "field": exc.field}, status=400)
        log.info("business event %s by staff %s", outcome.value, staff)
        status = 202 if outcome is Outcome.ACCEPTED else 200
        return web.json_response({"status": outcome.value, "event_id": raw.get("event_id")}, status=status)

    web_app.router.add_post("/api/events", post_event)

