"""Two `siyu serve` processes on one PostgreSQL: a web chat socket held by one gets what the other delivers.

Process A holds the customer's socket. While A is frozen (SIGSTOP), process B delivers the customer's
messages: B has no socket for that chat, so it tells the others through PostgreSQL's NOTIFY in the
transaction that records the delivery, and A shows them when it wakes. Then B is SIGKILLed in the
middle of a batch: what it had claimed but not delivered is taken over once its claim runs out, and
the customer's page shows every message exactly once.

The web chat group is the one platform siyu is itself: members connected to different processes see
each other's messages once and in the order committed, the guard's deletions everywhere, and a mute
delivered by one process holds when the member comes back through another.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bench.e2e import _free_port, _wait_http
from bot.conversation_log import store_inbound
from bot.events import Action, ActionKind, Address, ChatType, Event, EventKind, Profile
from bot.moderation import mute_notice, queue_action
from bot.relay import Relay
from bot.transport import MemberMessage
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


async def _member(http: aiohttp.ClientSession, serve: Serve, name: str,
                  session: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A group member's page joined through `serve`; returns the socket and the session the page keeps."""
    ws = await http.ws_connect(f"http://127.0.0.1:{serve.port}/ws")
    await ws.send_json({"type": "join", "role": "member", "name": name, **({"session": session} if session else {})})
    return ws, (await _next(ws, lambda f: f["type"] == "joined"))["session"]


async def _next(ws: aiohttp.ClientWebSocketResponse, last: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return (await _until(ws, last))[-1]


async def _until(ws: aiohttp.ClientWebSocketResponse, last: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The frames the page gets up to and including the first that is `last`."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while not frames or not last(frames[-1]):
            frames.append(await ws.receive_json())
    return frames


def _said(frames: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """What members said, as the page shows it: (page's message id, who, text, whether it is mine)."""
    return [(f["id"].rsplit(":", 1)[-1], f["from"], f["text"], f["mine"]) for f in frames
            if f["type"] == "message" and f["from"] != "bot"]


def _answer(frame: dict[str, Any]) -> bool:
    return frame["type"] == "message" and frame["from"] == "bot" and frame["text"].startswith("答·发货")


@pytest.mark.timeout(180)
async def test_group_members_on_two_processes_see_each_other_once_in_order(
        two: tuple[Serve, Serve, Database]) -> None:
    a, b, _ = two
    async with aiohttp.ClientSession() as http:
        may, _ = await _member(http, a, "阿May")
        kiki, _ = await _member(http, b, "Kiki")

        await may.send_json({"type": "say", "id": "g1", "text": "大家好"})
        greeting = await _next(kiki, lambda f: f["type"] == "message" and f["from"] != "bot")
        assert _said([greeting]) == [("g1", "阿May", "大家好", False)]  # through A's transaction, shown by B

        await kiki.send_json({"type": "say", "id": "g2", "text": "@bot 什么时候发货"})
        # B answers; A shows Kiki's question and then B's answer, each once, in the order B committed them
        assert _said(await _until(may, _answer)) == [("g1", "阿May", "大家好", True),
                                                     ("g2", "Kiki", "什么时候发货", False)]
        assert _said(await _until(kiki, _answer)) == [("g2", "Kiki", "@bot 什么时候发货", True)]

        spammer, session = await _member(http, a, "卖包")  # new to the group, so an ad removes her at once
        await spammer.send_json({"type": "say", "id": "s1", "text": "高仿大牌包包 一手货源"})
        ad, deleted = [f for f in await _until(kiki, lambda f: f["type"] == "deleted") if f.get("from") != "bot"]
        assert _said([ad]) == [("s1", "卖包", "高仿大牌包包 一手货源", False)]
        assert deleted["id"] == ad["id"]  # the guard's delete, delivered by A, names the id B showed
        notice = await _next(kiki, lambda f: f["type"] == "system")
        assert notice["text"] == "卖包 违反群规，已被移出群聊"

        again = await http.ws_connect(f"http://127.0.0.1:{b.port}/ws")  # she tries again through B
        await again.send_json({"type": "join", "role": "member", "name": "卖包", "session": session})
        assert (await _next(again, lambda f: f["type"] in ("joined", "error")))["text"] == "你已被移出本群"
        for ws in (may, kiki, spammer, again):
            await ws.close()


@pytest.mark.timeout(180)
async def test_a_mute_delivered_by_one_process_holds_in_the_other(two: tuple[Serve, Serve, Database]) -> None:
    a, b, db = two
    async with aiohttp.ClientSession() as http:
        quiet, session = await _member(http, a, "小静")
        await quiet.send_json({"type": "say", "id": "q1", "text": "大家好"})
        await quiet.send_json({"type": "join", "role": "member", "name": "小静", "session": session})
        await _next(quiet, lambda f: f["type"] == "joined")  # a socket's frames are handled in turn
        async with db.session() as s:
            member = await s.scalar(select(Message.sender_id).where(Message.text == "大家好"))
        assert member is not None

        b.signal(signal.SIGSTOP)  # A delivers the mute, while B has no socket of the group to show it on
        try:
            now = datetime.now(timezone.utc)
            async with db.session() as s, s.begin():
                queue_action(s, "webchat", "demo", member, "q1", ActionKind.MUTE, now,
                             mute_notice("小静", 2, timedelta(hours=1)), now + timedelta(hours=1))
            await _next(quiet, lambda f: f["type"] == "system")
        finally:
            b.signal(signal.SIGCONT)
        await quiet.close()

        again, _ = await _member(http, b, "小静", session)  # she comes back through B
        await again.send_json({"type": "say", "id": "q2", "text": "我还能说话吗"})
        await again.send_json({"type": "join", "role": "member", "name": "小静", "session": session})
        shown = await _until(again, lambda f: f["type"] == "joined")
        await again.close()
    assert _said(shown) == []  # B swallowed it, as A would have: not even her own page shows it
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Message).where(Message.text == "我还能说话吗")) == 0


class _Page:
    """A web chat page's transport as the relay sees it: the group is open here."""

    channel = "webchat"

    def __init__(self) -> None:
        self.shown: asyncio.Queue[MemberMessage] = asyncio.Queue()

    def connected_here(self, address: Address) -> bool:
        return True

    async def deliver(self, action: Action) -> None:
        raise AssertionError(f"only member messages were published, not {action}")

    async def show(self, message: MemberMessage) -> None:
        self.shown.put_nowait(message)


async def test_a_member_message_too_long_for_a_notification_is_read_back(postgres_url: str) -> None:
    db = Database(postgres_url)
    await db.upgrade()
    page = _Page()
    here, there = Relay(db, "a", {"webchat": page}, _no_action), Relay(db, "b", {"webchat": page}, _no_action)
    await there.listen()
    try:
        now = datetime.now(timezone.utc)
        for ref, text in (("c_1:short", "大家好"), ("c_1:long", "🌸" * 2000)):  # 8000 bytes: over the limit
            event = Event(EventKind.MESSAGE, "webchat", "c_1", now, ChatType.GROUP, "demo", text, ref,
                          profile=Profile(name="阿May"))
            async with db.session() as session, session.begin():
                stored = store_inbound(session, event, None, "customer")
                stored.platform_ref = ref
                await session.flush()
                await here.publish_message(session, event, stored.id)
        shown = [await asyncio.wait_for(page.shown.get(), 30) for _ in range(2)]
    finally:
        await there.close()
        await db.close()
    assert [(m.ref, m.sender_id, m.text, m.name) for m in shown] == [
        ("c_1:short", "c_1", "大家好", "阿May"), ("c_1:long", "c_1", "🌸" * 2000, "阿May")]


async def _no_action(_message_id: int) -> None:
    return None
