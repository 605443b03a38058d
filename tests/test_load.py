"""A busy campaign: hundreds of web chat customers asking at the same moment.

Each customer joins, is greeted, and asks a few FAQ questions without waiting for the answers (as a
person typing fast does). Every question gets exactly one answer, in the order asked, on SQLite and
on PostgreSQL — no "database is locked", no lost message, no reply twice.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from bot.app import build_web_app
from storage.models import Message, ProcessedInbound
from tests.harness import SCRIPTS, Harness

QUESTIONS = (("包邮吗", "答·运费"), ("什么时候发货", "答·发货"), ("可以退货吗", "答·退货"),
             ("门店在哪里", "答·门店"), ("优惠券怎么用", "答·优惠券"))
GREETING = "问候："


@dataclass
class Served:
    harness: Harness
    url: str


@dataclass
class Seen:
    """What one customer's page showed: bot messages by id, in arrival order."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


@pytest.fixture
async def served(db_url: str, start) -> AsyncIterator[Served]:  # type: ignore[no-untyped-def]
    h = await Harness.create(db_url, start, SCRIPTS)
    server = TestServer(build_web_app(h.app), host="127.0.0.1")
    await server.start_server()
    loop_task = asyncio.create_task(h.app.run_forever())
    try:
        yield Served(h, str(server.make_url("/ws")))
    finally:
        h.app.request_stop()
        await asyncio.wait_for(loop_task, timeout=300)
        await server.close()
        await h.close()


async def _customer(http: aiohttp.ClientSession, url: str, n: int) -> Seen:
    seen = Seen()
    async with http.ws_connect(url) as ws:
        await ws.send_json({"type": "join", "role": "customer", "name": f"顾客{n:03d}"})
        for i, (question, _) in enumerate(QUESTIONS):
            await ws.send_json({"type": "say", "id": f"q{i}", "text": question})
        while len(seen.ids) < 1 + len(QUESTIONS):
            frame = await asyncio.wait_for(ws.receive_json(), timeout=300)  # a loaded CI box is slow, not wrong
            assert frame["type"] != "error", frame
            if frame["type"] == "message" and frame["from"] == "bot":
                seen.ids.append(frame["id"])
                seen.texts.append(frame["text"])
    return seen


async def _undelivered(served: Served) -> int:
    """Outbound messages not yet marked delivered, once the last marks (written after the page got the
    message) have landed."""
    for _ in range(100):
        async with served.harness.app.db.session() as session:
            left = int(await session.scalar(select(func.count()).select_from(Message).where(
                Message.direction == "out", Message.delivered_at.is_(None))) or 0)
        if left == 0:
            break
        await asyncio.sleep(0.1)
    return left


@pytest.mark.timeout(600)
@pytest.mark.parametrize("customers", [32, 256])
async def test_every_customer_is_answered_once_and_in_order(served: Served, customers: int,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    connector = aiohttp.TCPConnector(limit=0)  # every customer at once, as in a campaign
    async with aiohttp.ClientSession(connector=connector) as http:
        pages = await asyncio.gather(*(_customer(http, served.url, n) for n in range(customers)))

    for page in pages:
        assert len(set(page.ids)) == len(page.ids)  # nothing shown twice
        answers = [t for t in page.texts if not t.startswith(GREETING)]
        assert [a.split("：")[0] for a in answers] == [prefix for _, prefix in QUESTIONS]  # in the order asked
        assert sum(t.startswith(GREETING) for t in page.texts) == 1
    async with served.harness.app.db.session() as session:
        stored = await session.scalar(select(func.count()).select_from(ProcessedInbound))
        replies = await session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.intent.isnot(None)))
    assert stored == replies == customers * len(QUESTIONS)
    assert await _undelivered(served) == 0
    problems = [r.getMessage() for r in caplog.records if "locked" in r.getMessage() or r.levelno >= logging.ERROR]
    assert problems == []
