"""Two `siyu serve` processes on one PostgreSQL: a web chat socket held by one gets what the other delivers.

Process A holds the customer's socket. While A is frozen (SIGSTOP), process B delivers the customer's
messages: B has no socket for that chat, so it tells the others through PostgreSQL's NOTIFY in the
transaction that records the delivery, and A shows them when it wakes. Then B is SIGKILLed in the
middle of a batch: what it had claimed but not delivered is taken over once its claim runs out, and
the customer's page shows every message exactly once.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from bench.e2e import _free_port, _wait_http
from storage import repo
from storage.db import Database
from storage.models import Contact, Message
from tests.harness import CONFIG, ROOT, SCRIPTS

BATCH = 120


class Serve:
    """One real `siyu serve` process."""

    def __init__(self, url: str, tmp: Path, name: str) -> None:
        self.url = url
        self.port = _free_port()
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {**os.environ, "SIYU_DATABASE_URL": self.url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "--config", str(CONFIG), "--scripts", str(SCRIPTS), "serve",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        await _wait_http(self.port, self.proc, self.log)

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
async def two(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[Serve, Serve, Database]]:
    db = Database(postgres_url)
    await db.upgrade()
    a, b = Serve(postgres_url, tmp_path, "a"), Serve(postgres_url, tmp_path, "b")
    try:
        await a.start()
        await b.start()
        yield a, b, db
    finally:
        a.stop()
        b.stop()
        await db.close()


async def _queue(db: Database, customer: str, texts: list[str]) -> list[int]:
    """Messages for the customer in the outbox, as a scheduler pass or a guide's reply leaves them."""
    now = datetime.now(timezone.utc)  # the serve processes run on the system clock
    async with db.session() as session, session.begin():
        contact = await session.scalar(select(Contact).where(Contact.external_id == customer))
        assert contact is not None
        messages = [repo.add_message(session, channel="webchat", chat_type="direct", chat_id=customer,
                                     direction="out", sender_role="bot", sender_id="bot", contact_id=contact.id,
                                     text=text, created_at=now) for text in texts]
        await session.flush()
        return [m.id for m in messages]


async def _delivered(db: Database, ids: list[int]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message).where(
            Message.id.in_(ids), Message.delivered_at.isnot(None))) or 0)


async def _join(http: aiohttp.ClientSession, serve: Serve) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(f"http://127.0.0.1:{serve.port}/ws")
    await ws.send_json({"type": "join", "role": "customer", "name": "林小姐"})
    while (frame := await asyncio.wait_for(ws.receive_json(), 30))["type"] != "message":
        pass  # joined, then the greeting
    return ws, frame["text"]


async def _customer_id(db: Database) -> str:
    async with db.session() as session:
        customer = await session.scalar(select(Contact.external_id).where(Contact.name == "林小姐"))
    assert customer is not None
    return customer


async def _shown(ws: aiohttp.ClientWebSocketResponse, count: int, seconds: float) -> list[str]:
    """The ids of the next `count` bot messages the page shows."""
    ids: list[str] = []
    async with asyncio.timeout(seconds):
        while len(ids) < count:
            frame = await ws.receive_json()
            if frame["type"] == "message" and frame["from"] == "bot":
                ids.append(frame["id"])
    return ids


@pytest.mark.timeout(180)
async def test_a_reply_reaches_a_socket_held_by_another_process(two: tuple[Serve, Serve, Database]) -> None:
    a, b, db = two
    async with aiohttp.ClientSession() as http:
        ws, greeting = await _join(http, a)
        assert greeting.startswith("问候：林小姐您好")
        customer = await _customer_id(db)

        a.signal(signal.SIGSTOP)  # only B can deliver now, and B has no socket for this customer
        try:
            (sent,) = await _queue(db, customer, ["见面礼A：林小姐，送您「测试礼A」"])
            async with asyncio.timeout(30):
                while await _delivered(db, [sent]) == 0:
                    await asyncio.sleep(0.1)
        finally:
            a.signal(signal.SIGCONT)
        assert await _shown(ws, 1, 30) == [str(sent)]  # through B's NOTIFY, shown by A
        await ws.close()


@pytest.mark.timeout(240)
async def test_a_process_killed_mid_batch_loses_and_repeats_nothing(two: tuple[Serve, Serve, Database]) -> None:
    a, b, db = two
    async with aiohttp.ClientSession() as http:
        ws, _ = await _join(http, a)
        customer = await _customer_id(db)

        a.signal(signal.SIGSTOP)  # B takes the batch
        try:
            ids = await _queue(db, customer, [f"第{i}条通知" for i in range(BATCH)])
            async with asyncio.timeout(30):
                while await _delivered(db, ids) == 0:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(random.uniform(0.0, 0.2))
            b.signal(signal.SIGKILL)  # in the middle of its batch: some claimed, not delivered
            b.proc.wait(timeout=10)  # type: ignore[union-attr]
        finally:
            a.signal(signal.SIGCONT)
        by_b = await _delivered(db, ids)
        assert 0 < by_b  # B delivered some before it died…
        # …A shows those from B's notifications, then takes over B's claims once they run out (30 s)
        shown = await _shown(ws, BATCH, 90)
        await ws.close()
    assert sorted(shown) == sorted(str(i) for i in ids)  # every message, each exactly once
    async with asyncio.timeout(30):  # the page got the last one just before A recorded it
        while await _delivered(db, ids) < BATCH:
            await asyncio.sleep(0.1)
