"""The `/api` routes: each parses its request, checks the role, calls the console's services, answers JSON.

The contract (request and response bodies) is console/models.py; README "Console API" lists the routes.
"""
from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.app import App
from console.auth import ConsoleAuth, Refused, Staffer, require_operator, staffer_of
from console.dashboard import (
    Dashboard,
    DateRange,
    churn_csv,
    decisions_csv,
    faq_csv,
    funnel_csv,
    guard_csv,
    parse_range,
)
from console.guard_review import GuardReview
from console.lifecycle_api import add_lifecycle_routes
from console.models import (
    FaqExampleRequest,
    FaqIntentRequest,
    JourneyInfo,
    JourneyStepInfo,
    PreviewRequest,
    ReplyRequest,
    TagRequest,
    TriggerRequest,
)
from console.preview import JourneyPreview
from console.teaching import FaqTeacher
from console.workspace import Workspace

log = logging.getLogger(__name__)
Body = TypeVar("Body", bound=BaseModel)
R = TypeVar("R")
Handler = Callable[[web.Request], Awaitable[web.Response]]
BAD_BODY = "请求格式不对：请用 JSON 发送，字段见 README「Console API」"
BAD_ID = "会话编号不对"
MAX_BODY = 64 * 1024


def _json(model: BaseModel | list[BaseModel], status: int = 200) -> web.Response:
    data = [m.model_dump(mode="json") for m in model] if isinstance(model, list) else model.model_dump(mode="json")
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _csv(text: str, name: str) -> web.Response:
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


async def _body(request: web.Request, model: type[Body]) -> Body:
    if request.content_type != "application/json":
        raise Refused(415, BAD_BODY)
    try:
        return model.model_validate(await request.json())
    except (ValueError, LookupError, RecursionError, ValidationError):
        raise Refused(400, BAD_BODY) from None


def _id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 12:
        raise Refused(404, BAD_ID)
    return int(raw)


def _wants_csv(request: web.Request) -> bool:
    return request.query.get("format", "json").lower() == "csv"


def build_api(app: App) -> web.Application:
    """The `/api` sub-application; its middleware authenticates every route but the login."""
    auth = ConsoleAuth(app.db, app.clock, app.settings)
    desk = Workspace(app)
    teacher = FaqTeacher(app)
    dashboard = Dashboard(app)
    preview = JourneyPreview(app)
    guard = GuardReview(app)
    api = web.Application(middlewares=[auth.middleware], client_max_size=MAX_BODY)

    # --- session ---
    api.router.add_post("/session", auth.login)
    api.router.add_get("/session", auth.me)
    api.router.add_delete("/session", auth.logout)

    # --- the guide's workspace ---
    async def conversations(request: web.Request) -> web.Response:
        state = request.query.get("state")
        return _json(await desk.conversations(staffer_of(request), state if state in ("bot", "handoff", "human")
                                              else None))

    def about(action: Callable[[Staffer, int], Awaitable[BaseModel | list[BaseModel]]]) -> Handler:
        """A route that runs one workspace action on the conversation named in the path."""
        async def handler(request: web.Request) -> web.Response:
            return _json(await action(staffer_of(request), _id(request)))
        return handler

    async def reply(request: web.Request) -> web.Response:
        body = await _body(request, ReplyRequest)
        return _json(await desk.reply(staffer_of(request), _id(request), body.text), status=201)

    async def tag(request: web.Request) -> web.Response:
        body = await _body(request, TagRequest)
        return _json(await desk.tag(staffer_of(request), _id(request), body.tag))

    async def trigger(request: web.Request) -> web.Response:
        body = await _body(request, TriggerRequest)
        return _json(await desk.trigger(staffer_of(request), _id(request), body.journey, body.step, body.dry_run))

    api.router.add_get("/conversations", conversations)
    api.router.add_get("/conversations/{id}", about(desk.conversation))
    api.router.add_get("/conversations/{id}/messages", about(desk.history))
    api.router.add_post("/conversations/{id}/messages", reply)
    api.router.add_post("/conversations/{id}/takeover", about(desk.take_over))
    api.router.add_post("/conversations/{id}/release", about(desk.release))
    api.router.add_post("/conversations/{id}/tags", tag)
    api.router.add_post("/conversations/{id}/trigger", trigger)
    api.router.add_get("/conversations/{id}/timeline", about(desk.timeline))

    # --- teaching ---
    async def intents(request: web.Request) -> web.Response:
        return _json(teacher.intents())

    async def teach(request: web.Request, intent: str, message_id: int | None,
                    change: Callable[[], Awaitable[BaseModel]]) -> web.Response:
        """Teach from a customer's message (when one is named) only if this staffer may see it."""
        staffer = staffer_of(request)
        if message_id is not None:
            await desk.may_teach_from(staffer, message_id)
        done = await change()
        await desk.teach_verdict(staffer, message_id, intent)
        return _json(done, status=201)

    async def add_example(request: web.Request) -> web.Response:
        body = await _body(request, FaqExampleRequest)
        return await teach(request, body.intent, body.message_id,
                           lambda: teacher.add_example(body.intent, body.text))

    async def add_intent(request: web.Request) -> web.Response:
        body = await _body(request, FaqIntentRequest)
        return await teach(request, body.id, body.message_id,
                           lambda: teacher.add_intent(body.id, body.answer, body.examples, body.description))

    api.router.add_get("/faq/intents", intents)
    api.router.add_post("/faq/examples", add_example)
    api.router.add_post("/faq/intents", add_intent)

    # --- journeys ---
    async def journeys(request: web.Request) -> web.Response:
        return _json([JourneyInfo(id=j.id, title=j.title, steps=[
            JourneyStepInfo(id=s.id, variants=[v.name for v in s.variants]) for s in j.steps])
            for j in sorted(app.library.journeys.values(), key=lambda j: j.id)])

    async def run_preview(request: web.Request) -> web.Response:
        require_operator(staffer_of(request))
        body = await _body(request, PreviewRequest)
        return _json(await preview.run(request.match_info["journey"], body))

    api.router.add_get("/journeys", journeys)
    api.router.add_post("/journeys/{journey}/preview", run_preview)

    # --- the operator's dashboard ---
    def span(request: web.Request) -> DateRange:
        require_operator(staffer_of(request))
        return parse_range(request.query.get("from"), request.query.get("to"), dashboard.today())

    def report(fetch: Callable[[web.Request], Awaitable[R]], to_csv: Callable[[R], str],
               file_name: Callable[[R], str]) -> Handler:
        """A dashboard route: the report as JSON, or as a CSV download with `?format=csv`."""
        async def handler(request: web.Request) -> web.Response:
            result = await fetch(request)
            return _csv(to_csv(result), file_name(result)) if _wants_csv(request) else _json(result)
        return handler

    def mark(spam: bool) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            require_operator(staffer_of(request))
            return _json(await guard.mark(staffer_of(request), _id(request), spam=spam))
        return handler

    api.router.add_get("/journeys/{journey}/funnel", report(
        lambda r: dashboard.funnel(r.match_info["journey"], span(r)), funnel_csv, lambda f: f"funnel-{f.journey}"))
    api.router.add_get("/dashboard/decisions", report(
        lambda r: dashboard.decisions(span(r)), decisions_csv, lambda _: "decisions"))
    api.router.add_get("/dashboard/faq", report(lambda r: dashboard.faq(span(r)), faq_csv, lambda _: "faq"))
    api.router.add_get("/dashboard/churn", report(lambda r: dashboard.churn(span(r)), churn_csv, lambda _: "churn"))
    api.router.add_get("/guard/summary", report(lambda r: dashboard.guard(span(r)), guard_csv, lambda _: "guard"))
    api.router.add_get("/guard/events", report(
        lambda r: guard.events(span(r)), guard.csv, lambda _: "guard-events"))
    api.router.add_post("/guard/events/{id}/not-spam", mark(spam=False))
    api.router.add_post("/guard/events/{id}/spam", mark(spam=True))

    async def spam_message(request: web.Request) -> web.Response:
        require_operator(staffer_of(request))
        return _json(await guard.mark_message(staffer_of(request), _id(request)))

    api.router.add_post("/guard/messages/{id}/spam", spam_message)
    add_lifecycle_routes(api, app)  # hand-over between guides, 渠道活码
    return api
