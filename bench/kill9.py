"""kill -9 during delivery: does any message reach the platform twice, and what is left in doubt?

A real worker process (bench/kill9_worker.py: `siyu serve` with a short lease) delivers N queued
messages to a fake Telegram Bot API server on 127.0.0.1 and is SIGKILLed again and again at random
moments, then restarted, until the outbox is drained. Then the fake server's log is held against
the database:

- `duplicates`: messages the platform received more than once (must be 0);
- `in_doubt`: messages recorded as "may or may not have arrived" (the worker died during the call,
  and sendMessage has no idempotency key, so they are never sent again; the guide is told), split
  by what the fake server really got into `in_doubt_received` and `in_doubt_not_received`;
- `lost`: messages neither delivered nor in doubt (must be 0); `false_delivered`: recorded as
  delivered but never received (must be 0).

    python -m bench kill9                 # SQLite, and PostgreSQL with SIYU_BENCH_DATABASE_URL
    BENCH_KILL9_MESSAGES=2000 BENCH_KILL9_EVERY=1 BENCH_KILL9_KILLS=20 python -m bench kill9

Telegram's own flood limit (30 messages/s, applied by python-telegram-bot) sets the pace, so the
default 12,000 messages with 60 kills take about ten minutes per database.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from sqlalchemy import func, insert, select, text

from bot.clock import SystemClock
from storage import repo
from storage.db import Database
from storage.models import Contact, Message
from tests.fakes import FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "telegram"
GUIDE_CHAT = 777  # the guide's Telegram user id: in-doubt notes go there
TEXT = "kill9 #{}"
NOTE_PREFIX = "【可能未送达】"
CUSTOMERS = 500
LEASE_SECONDS = 2.0  # the worker's delivery lease: how long a killed worker's claims block the outbox


@dataclass
class HoldingTelegram(FakeTelegram):
    """The fake Bot API, able to hold the next sendMessage open with no answer: "taken" (the
    platform has the message) or "lost" (it never got there)."""

    sends: int = 0  # sendMessage calls taken, plus any being held
    hold: str | None = None
    held_text: str | None = None
    lost: list[str] = field(default_factory=list)
    _held: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def arm(self, kind: str) -> None:
        self._held.clear()
        self._release.clear()
        self.held_text, self.hold = None, kind

    async def wait_held(self, seconds: float) -> str:
        await asyncio.wait_for(self._held.wait(), seconds)
        assert self.held_text is not None
        return self.held_text

    def release(self) -> None:
        self._release.set()

    def received(self) -> Counter[str]:
        return Counter(str(params.get("text")) for params in self.sent())

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] != "sendMessage" or self.hold != "lost":
            return await super()._api(request)
        self.hold = None
        form = await request.json() if request.content_type == "application/json" else dict(await request.post())
        self.held_text = str(form.get("text"))
        self.lost.append(self.held_text)
        self._held.set()
        await self._release.wait()
        return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)

    async def _result(self, method: str, params: dict[str, Any]) -> Any:
        self.sends += method == "sendMessage"
        if method == "sendMessage" and self.hold == "taken":
            self.hold = None
            self.held_text = str(params.get("text"))
            self._held.set()
            await self._release.wait()
        return await super()._result(method, params)


@dataclass
class Tally:
    """What the platform saw against what the database says, for the benchmark message ids."""

    database: str
    messages: int
    kills: int = 0
    delivered_once: int = 0
    duplicates: int = 0
    in_doubt: int = 0
    in_doubt_received: int = 0
    in_doubt_not_received: int = 0
    lost: int = 0
    false_delivered: int = 0
    guide_notes_queued: int = 0
    guide_notes_received: int = 0
    seconds: float = 0.0
    in_doubt_texts: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        data = asdict(self)
        del data["in_doubt_texts"]
        return json.dumps({"bench": "kill9", "channel": CHANNEL, **data}, ensure_ascii=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path) -> Path:
    """The shipped config.yaml with Telegram as the only channel, one guide on it, and no FAQ models."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    port = _free_port()
    data["server"] = {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"}
    data["staff"] = [{"id": "xiaomei", "name": "小美", "identities": {CHANNEL: str(GUIDE_CHAT)}}]
    data["default_guide"] = "xiaomei"
    data["faq"] = {**(data.get("faq") or {}), "semantic": "none"}
    data["adapters"] = {"webchat": {"enabled": False}, CHANNEL: {"mode": "polling"}}
    data["delivery"] = {CHANNEL: {"per_second": 1000, "burst": 1000}}  # Telegram's limiter sets the pace
    data["scheduler"] = {**(data.get("scheduler") or {}), "poll_seconds": 0.2}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def reset_postgres(url: str) -> None:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await db.close()


async def prepare(db: Database, messages: int) -> None:
    """Migrate, then queue `messages` outbound Telegram messages to CUSTOMERS customers of one guide."""
    await db.upgrade()
    now = SystemClock().now()
    customers = min(CUSTOMERS, messages)
    async with db.engine.begin() as conn:
        await conn.execute(insert(Contact), [{
            "channel": CHANNEL, "external_id": str(10_000 + k), "name": f"顾客{k}", "guide_key": "xiaomei",
            "tags": [], "interests": [], "opted_out": False, "churned": False, "replies": 0, "added_at": now}
            for k in range(customers)])
        ids = {external: id_ for external, id_ in await conn.execute(select(Contact.external_id, Contact.id))}
        for first in range(0, messages, 2000):
            await conn.execute(insert(Message), [{
                "channel": CHANNEL, "chat_type": "direct", "chat_id": str(10_000 + i % customers), "direction": "out",
                "sender_role": "bot", "sender_id": "bot", "contact_id": ids[str(10_000 + i % customers)],
                "text": TEXT.format(i), "created_at": now} for i in range(first, min(first + 2000, messages))])


async def undelivered(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.delivered_at.is_(None), Message.delivery_error.is_(None),
            Message.awaiting_until.is_(None))) or 0)


class Worker:
    """One `siyu serve` process at a time, started and SIGKILLed at will."""

    def __init__(self, config: Path, db_url: str, fake: FakeTelegram, api_base: str, log: Path,
                 lease: float = LEASE_SECONDS) -> None:
        self.args = [sys.executable, "-m", "bench.kill9_worker", str(config), str(ROOT / "scripts"), str(lease)]
        self.env = {**os.environ, "SIYU_DATABASE_URL": db_url, "SIYU_TELEGRAM_TOKEN": fake.token,
                    "SIYU_TELEGRAM_API_BASE": api_base, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(*self.args, env=self.env, cwd=ROOT, stdout=out,
                                                                stderr=out, stdin=asyncio.subprocess.DEVNULL)

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or committed."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None

    def died(self) -> bool:
        return self.process is not None and self.process.returncode is not None


async def tally(db: Database, fake: HoldingTelegram, tally_: Tally) -> Tally:
    """Count, for each benchmark message, what the platform received against what storage records."""
    received = fake.received()
    async with db.session() as session:
        rows = (await session.execute(select(Message.text, Message.delivered_at, Message.delivery_error).where(
            Message.direction == "out", Message.chat_id != str(GUIDE_CHAT)))).all()
        doubtful = await repo.messages_in_doubt(session, CHANNEL)
        notes = int(await session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.text.startswith(NOTE_PREFIX))) or 0)
    in_doubt = {m.text for m in doubtful}
    for body, delivered_at, _error in rows:
        times = received[body]
        tally_.duplicates += max(times - 1, 0)
        if delivered_at is not None:
            tally_.delivered_once += times == 1
            tally_.false_delivered += times == 0
        elif body in in_doubt:
            tally_.in_doubt += 1
            tally_.in_doubt_texts.append(body)
            tally_.in_doubt_received += times >= 1
            tally_.in_doubt_not_received += times == 0
        else:
            tally_.lost += 1
    tally_.guide_notes_queued = notes
    tally_.guide_notes_received = sum(n for body, n in received.items() if body.startswith(NOTE_PREFIX))
    # a note can itself be in doubt (a kill during its call): it counts among the in-doubt notes, not twice
    tally_.duplicates += sum(n - 1 for body, n in received.items() if body.startswith(NOTE_PREFIX) and n > 1)
    return tally_


async def run(db_url: str, name: str, messages: int, every: float, max_kills: int, seed: int = 1) -> Tally:
    """Queue, then kill the worker at random moments until the outbox is empty: each time it has
    started delivering again, after a further 0–2×`every` seconds."""
    rng = random.Random(seed)
    fake = HoldingTelegram()
    api_base = await fake.start()
    db = Database(db_url)
    result = Tally(database=name, messages=messages)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        await prepare(db, messages)
        worker = Worker(write_config(Path(tmp)), db_url, fake, api_base, Path(tmp) / "worker.log")
        try:
            while await undelivered(db):
                await worker.start()
                if result.kills < max_kills:
                    sends = fake.sends
                    # kill mid-delivery, not mid-start-up
                    while fake.sends == sends and not worker.died() and await undelivered(db):
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(rng.uniform(0, 2 * every))
                    if not await undelivered(db):
                        break
                    await worker.kill()
                    result.kills += 1
                    continue
                while await undelivered(db):  # no more kills: let it drain
                    if worker.died():
                        raise RuntimeError(f"the worker exited on its own; see {worker.log}")
                    await asyncio.sleep(0.2)
            await worker.kill()
            result.seconds = round(time.perf_counter() - began, 1)
            return await tally(db, fake, result)
        finally:
            await worker.kill()
            await db.close()
            await fake.close()


async def main() -> None:
    messages = int(os.environ.get("BENCH_KILL9_MESSAGES", "12000"))
    every = float(os.environ.get("BENCH_KILL9_EVERY", "2"))
    kills = int(os.environ.get("BENCH_KILL9_KILLS", "60"))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        runs.append(("sqlite", f"sqlite+aiosqlite:///{tmp}/kill9.db"))
        if os.environ.get("SIYU_BENCH_DATABASE_URL"):
            runs.append(("postgresql", os.environ["SIYU_BENCH_DATABASE_URL"]))
        for name, url in runs:
            if name == "postgresql":
                await reset_postgres(url)
            print((await run(url, name, messages, every, kills)).as_json(), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
