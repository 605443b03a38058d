"""A test harness around the real App: a virtual clock, a recording transport, a transcript."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.app import App
from bot.config_loader import load_config
from bot.clock import VirtualClock
from bot.events import Action, ChatType, Event, EventKind, Profile, Role
from storage import repo
from storage.models import Contact, Touch

ROOT = Path(__file__).resolve().parent.parent
# Tests run on their own scripts and settings, never on the shipped marketing copy (scripts/, config.yaml).
SCRIPTS = ROOT / "tests" / "data" / "scripts"
CONFIG = ROOT / "tests" / "data" / "config.yaml"
CHANNEL = "test"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class Delivered:
    at: datetime
    chat_id: str
    text: str
    ref: str
    kind: str = "say"
    target: str | None = None


@dataclass
class RecordingTransport:
    """A transport that remembers every delivery, like a phone screen."""

    channel: str = CHANNEL
    delivered: list[Delivered] = field(default_factory=list)

    async def deliver(self, action: Action) -> None:
        self.delivered.append(Delivered(action.at, action.address.chat_id, action.text, action.ref,
                                        action.kind.value, action.target_id))


class Harness:
    """Drives the real engine and scheduler as a customer (and a guide) would, on virtual time."""

    def __init__(self, app: App, clock: VirtualClock, transport: RecordingTransport, start: datetime) -> None:
        self.app = app
        self.clock = clock
        self.transport = transport
        self.start = start
        self._ids = itertools.count(1)

    @classmethod
    async def create(cls, db_url: str, start: datetime, scripts: Path, worker_id: str = "test-worker",
                     config: Path | None = None, migrate: bool = True, **overrides: Any) -> "Harness":
        settings = load_config(config or CONFIG, env={})
        staff = ({"id": "xiaomei", "name": "小美", "identities": {CHANNEL: "guide-xiaomei"}},)
        data = {**settings.model_dump(), "database_url": db_url, "staff": staff, **overrides}
        settings = type(settings).model_validate(data)
        clock = VirtualClock(start)
        app = App(settings, scripts, clock, worker_id=worker_id)
        transport = RecordingTransport()
        app.add_transport(transport)
        problems = await app.start(migrate=migrate)
        assert not problems, problems
        return cls(app, clock, transport, start)

    async def close(self) -> None:
        await self.app.close()

    # --- what people do ---

    async def customer_adds_guide(self, customer: str, name: str, **profile: Any) -> None:
        await self.app.engine.handle(Event(EventKind.CONTACT_ADDED, CHANNEL, customer, self.clock.now(),
                                           profile=Profile(name=name, **profile)))
        await self.app.tick()

    async def customer_says(self, customer: str, text: str, message_id: str | None = None) -> None:
        await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, customer, self.clock.now(), text=text,
                                           message_id=message_id or f"m{next(self._ids)}"))
        await self.app.tick()

    async def customer_removes_guide(self, customer: str) -> None:
        await self.app.engine.handle(Event(EventKind.CONTACT_REMOVED, CHANNEL, customer, self.clock.now()))
        await self.app.tick()

    async def guide_says(self, text: str) -> None:
        await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, "guide-xiaomei", self.clock.now(),
                                           text=text, message_id=f"g{next(self._ids)}", sender_role=Role.STAFF))
        await self.app.tick()

    async def guide_says_on(self, channel: str, guide_id: str, text: str) -> None:
        await self.app.engine.handle(Event(EventKind.MESSAGE, channel, guide_id, self.clock.now(), text=text,
                                           message_id=f"g{next(self._ids)}", sender_role=Role.STAFF))
        await self.app.tick()

    async def member_says_in_group(self, member: str, group: str, text: str, mention: bool = False,
                                   content_type: str = "text", role: Role = Role.CUSTOMER) -> None:
        await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, member, self.clock.now(), ChatType.GROUP,
                                           group, text=text, message_id=f"gm{next(self._ids)}",
                                           mentions_bot=mention, content_type=content_type, sender_role=role))
        await self.app.tick()

    async def member_joins_group(self, member: str, group: str) -> None:
        await self.app.engine.handle(Event(EventKind.JOINED_GROUP, CHANNEL, member, self.clock.now(),
                                           ChatType.GROUP, group))
        await self.app.tick()

    async def run_for(self, delta: timedelta) -> None:
        await self.run_until(self.clock.now() + delta)

    async def run_until(self, target: datetime) -> None:
        """Move virtual time forward touch by touch, running whatever falls due on the way."""
        while True:
            async with self.app.db.session() as session:
                due = await repo.next_due_at(session)
            if due is None or due > target:
                break
            self.clock.set(max(due, self.clock.now()))
            await self.app.tick()
        self.clock.set(target)
        await self.app.tick()

    # --- what we look at ---

    def transcript(self, chat_id: str) -> list[str]:
        """What the customer saw: `d<day> HH:MM text` in Shanghai time, first line of each message."""
        lines = []
        for d in self.transport.delivered:
            if d.chat_id == chat_id and d.kind == "say":
                local = d.at.astimezone(SHANGHAI)
                day = (local.date() - self.start.date()).days
                lines.append(f"d{day} {local:%H:%M} {d.text.splitlines()[0]}")
        return lines

    def texts(self, chat_id: str) -> list[str]:
        return [d.text for d in self.transport.delivered if d.chat_id == chat_id and d.kind == "say"]

    def group_log(self, group: str) -> list[str]:
        """What the group saw the bot do: `say: …`, `delete → member`, `mute → member`, …"""
        return [f"{d.kind}: {d.text}" if d.kind == "say" else f"{d.kind} → {d.target}"
                for d in self.transport.delivered if d.chat_id == group]

    async def steps_sent(self, customer: str) -> list[str]:
        """`journey.step` of every touch sent to the customer, in order."""
        async with self.app.db.session() as session:
            contact = await session.scalar(select(Contact).where(Contact.external_id == customer))
            assert contact is not None
            rows = (await session.scalars(select(Touch).where(Touch.contact_id == contact.id,
                                                              Touch.status == "sent")
                                          .order_by(Touch.finished_at, Touch.id))).all()
        return [f"{t.journey_id}.{t.step_id}" for t in rows]
