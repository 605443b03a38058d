"""The console's lifecycle views: hand customers over between guides, and see the 渠道活码 at work.

`POST /api/customers/transfer` runs the same hand-over as `siyu customers transfer` (bot/transfers.py);
`GET /api/transfers` lists recent transfers and what the platform made of them; `GET /api/channel-codes`
is `siyu channel-code list` as JSON; `GET /api/guides` fills the page's pickers. All are the operator's:
a guide gets 403.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from bot.app import App
from bot.channel_codes import code_stats
from bot.transfers import TransferError, transfer_customers
from console.auth import Refused, require_operator, staffer_of
from storage.models import Contact, Transfer

TransferStatus = Literal["waiting", "accepted", "refused", "failed"]
RECENT_TRANSFERS = 100
MAX_CUSTOMERS = 1000
BAD_BODY = "请求格式不对：请用 JSON 发送 {\"from\", \"to\", \"customers\"?, \"departed\"?}，见 README「Console API」"


class TransferRequest(BaseModel):
    """Hand `from`'s customers (all of them, or those listed by id, platform id or name) to `to`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_guide: str = Field(alias="from", min_length=1, max_length=64)
    to_guide: str = Field(alias="to", min_length=1, max_length=64)
    customers: list[str] | None = Field(default=None, max_length=MAX_CUSTOMERS)
    departed: bool = False  # 离职继承: the old guide has left


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class TransferRowInfo(_Response):
    contact_id: int
    name: str
    channel: str
    status: TransferStatus
    detail: str


class TransferReportInfo(_Response):
    """What one hand-over did, customer by customer, with the counts the page shows."""

    from_guide: str
    to_guide: str
    departed: bool
    rows: list[TransferRowInfo]
    counts: dict[TransferStatus, int]
    summary: str


class TransferInfo(_Response):
    """One customer's transfer as recorded: `status` stays waiting until the platform settles it."""

    id: int
    contact_id: int
    name: str
    channel: str
    from_guide: str
    to_guide: str
    departed: bool
    status: TransferStatus
    detail: str
    requested_at: datetime
    settled_at: datetime | None


class GuideInfo(_Response):
    """A guide the operator can hand customers from or to, with how many customers they have now."""

    id: str
    name: str
    customers: int


class ChannelCodeInfo(_Response):
    """A 渠道活码 and what it brought: customers added, who replied, who bought."""

    name: str
    channel: str
    state: str
    guides: list[str]
    tags: list[str]
    link: str  # the QR code's address on WeCom, the start link elsewhere
    adds: int
    replies: int
    purchases: int


def _json(data: BaseModel | list[BaseModel]) -> web.Response:
    body = [m.model_dump(mode="json") for m in data] if isinstance(data, list) else data.model_dump(mode="json")
    return web.json_response(body, dumps=lambda value: json.dumps(value, ensure_ascii=False))


async def _transfer_request(request: web.Request) -> TransferRequest:
    if request.content_type != "application/json":
        raise Refused(415, BAD_BODY)
    try:
        return TransferRequest.model_validate(await request.json())
    except (ValueError, LookupError, RecursionError, ValidationError):
        raise Refused(400, BAD_BODY) from None


class Lifecycle:
    """The routes' services: what the operator asked for, done by the engine, in the console's shapes."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def transfer(self, body: TransferRequest) -> TransferReportInfo:
        try:
            report = await transfer_customers(self.app, body.from_guide, body.to_guide, body.customers,
                                              departed=body.departed)
        except TransferError as refused:  # bot/transfers.py words every refusal for the operator
            raise Refused(404 if refused.unknown else 400, str(refused)) from None
        rows = [TransferRowInfo(contact_id=r.contact_id, name=r.name, channel=r.channel, status=r.status,
                                detail=r.detail) for r in report.rows]
        counts: dict[TransferStatus, int] = {s: report.count(s) for s in ("accepted", "waiting", "refused", "failed")}
        return TransferReportInfo(from_guide=report.from_guide, to_guide=report.to_guide, departed=report.departed,
                                  rows=rows, counts=counts, summary=report.lines()[-1])

    async def recent(self, limit: int = RECENT_TRANSFERS) -> list[TransferInfo]:
        async with self.app.db.session() as session:
            rows = (await session.execute(
                select(Transfer, Contact.name).join(Contact, Contact.id == Transfer.contact_id)
                .order_by(Transfer.requested_at.desc(), Transfer.id.desc()).limit(limit))).all()
        return [TransferInfo(id=t.id, contact_id=t.contact_id, name=name, channel=t.channel, from_guide=t.from_guide,
                             to_guide=t.to_guide, departed=t.departed, status=t.status, detail=t.detail,
                             requested_at=t.requested_at, settled_at=t.settled_at) for t, name in rows]

    async def guides(self) -> list[GuideInfo]:
        settings = self.app.settings
        async with self.app.db.session() as session:
            counts: dict[str | None, int] = {guide: count for guide, count in (await session.execute(
                select(Contact.guide_key, func.count()).where(Contact.churned.is_(False))
                .group_by(Contact.guide_key))).all()}
        return [GuideInfo(id=m.id, name=m.name, customers=int(counts.get(m.id, 0))
                          + (int(counts.get(None, 0)) if m.id == settings.default_guide else 0))
                for m in settings.staff if m.role == "guide"]

    async def channel_codes(self) -> list[ChannelCodeInfo]:
        return [ChannelCodeInfo(name=c.name, channel=c.channel, state=c.state, guides=list(c.guides), tags=list(c.tags),
                                link=c.link, adds=c.adds, replies=c.replies, purchases=c.purchases)
                for c in await code_stats(self.app)]


def add_lifecycle_routes(api: web.Application, app: App) -> None:
    """Mount the hand-over and channel-code routes on the console's `/api` sub-application."""
    lifecycle = Lifecycle(app)

    def operator_only(handler: Callable[[web.Request], Awaitable[web.Response]]
                      ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            require_operator(staffer_of(request))
            return await handler(request)
        return guarded

    async def transfer(request: web.Request) -> web.Response:
        return _json(await lifecycle.transfer(await _transfer_request(request)))

    async def transfers(request: web.Request) -> web.Response:
        return _json(await lifecycle.recent())

    async def channel_codes(request: web.Request) -> web.Response:
        return _json(await lifecycle.channel_codes())

    async def guides(request: web.Request) -> web.Response:
        return _json(await lifecycle.guides())

    api.router.add_post("/customers/transfer", operator_only(transfer))
    api.router.add_get("/transfers", operator_only(transfers))
    api.router.add_get("/channel-codes", operator_only(channel_codes))
    api.router.add_get("/guides", operator_only(guides))
