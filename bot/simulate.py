"""`siyu simulate`: the real engine on a virtual clock, with synthetic customers of a few kinds."""
from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from bot.app import App
from bot.clock import VirtualClock
from bot.config import Settings, StaffMember
from bot.events import Action, Event, EventKind, Profile
from bot.scheduler import TouchOutcome
from bot.transport import FOREVER, DedupesRepeats
from storage.sqlite_driver import plain_connection
from storage.touch_status import TouchStatus

CHANNEL = "sim"
# buys: tagged vip, then two orders (points, and a level-up); transferred: handed to a colleague on day 4
KINDS = ("silent", "engaged", "opts_out", "churns", "birthday", "buys", "transferred")
_SURNAMES = "林王陈张李刘杨黄赵吴周徐孙马朱胡郭何高罗"
_TITLES = ("小姐", "女士", "先生", "同学")
_FAQ_QUESTIONS = ("包邮吗", "敏感肌能用吗", "什么时候发货", "优惠券怎么用", "门店在哪里", "可以退货吗")
_UNKNOWN_QUESTIONS = ("你们和某某牌子比哪个好用", "我上次买的面霜有点搓泥是什么原因")
_SOURCES = ("门店扫码", "小红书", "直播间", "朋友推荐")


@dataclass(frozen=True)
class ScriptedAct:
    """A scripted customer action at a virtual time."""

    at: datetime
    customer: int
    kind: str  # add | say | remove | tag | buy | transfer
    text: str = ""


@dataclass
class SimCustomer:
    index: int
    name: str
    kind: str
    added_at: datetime
    birthday: date | None = None
    contact_id: int | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    level: str | None = None


class _SimTransport(DedupesRepeats):
    """Accepts every delivery; the transcript is read from storage and scheduler outcomes."""

    channel = CHANNEL

    def repeat_window(self, action: Action) -> timedelta | None:
        return FOREVER  # nothing reaches a person: a repeat changes nothing

    async def deliver(self, action: Action) -> None:
        return None


def _stored(at: datetime) -> str:
    """An instant as SQLAlchemy's SQLite DateTime stores it (storage.types.UTCDateTime: naive UTC)."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _loaded(text: str) -> datetime:
    """A stored instant as the ORM hands it back: aware, in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _with_colleague(settings: Settings) -> tuple[StaffMember, ...]:
    """The configured staff, plus a colleague to hand customers to when there is only one guide."""
    staff = tuple(settings.staff)
    if sum(1 for m in staff if m.role == "guide") >= 2:
        return staff
    return (*staff, StaffMember(id="sim_colleague", name="同事小林"))


def _customers(count: int, rng: random.Random, start: datetime, days: int) -> list[SimCustomer]:
    zone = start.tzinfo
    customers = []
    for index in range(count):
        kind = KINDS[index] if index < len(KINDS) else rng.choice(KINDS)
        minute = rng.randrange(8 * 60, 23 * 60)  # people add a guide from morning to late night
        added = datetime.combine(start.date(), datetime.min.time(), tzinfo=zone) + timedelta(minutes=minute)
        name = rng.choice(_SURNAMES) + rng.choice(_TITLES)
        birthday = None
        if kind == "birthday":
            day = start.date() + timedelta(days=rng.randrange(2, max(3, days - 1)))
            birthday = date(rng.randrange(1975, 2003), day.month, min(day.day, 28))
        customers.append(SimCustomer(index + 1, name, kind, added, birthday))
    return customers


def _script(customer: SimCustomer, rng: random.Random) -> Iterator[ScriptedAct]:
    day = timedelta(days=1)
    base = customer.added_at
    yield ScriptedAct(base, customer.index, "add")
    if customer.kind == "engaged":
        yield ScriptedAct(base + timedelta(minutes=rng.randrange(3, 40)), customer.index, "say", "你好呀，谢谢小美～")
        for offset, text in ((2, rng.choice(_FAQ_QUESTIONS)), (5, rng.choice(_UNKNOWN_QUESTIONS)),
                             (12, rng.choice(_FAQ_QUESTIONS))):
            yield ScriptedAct(base + offset * day + timedelta(hours=rng.randrange(1, 5)), customer.index, "say", text)
    elif customer.kind == "opts_out":
        yield ScriptedAct(base + 4 * day + timedelta(hours=1), customer.index, "say", "退订")
    elif customer.kind == "churns":
        yield ScriptedAct(base + 10 * day, customer.index, "remove")
    elif customer.kind == "buys":
        yield ScriptedAct(base + day + timedelta(hours=2), customer.index, "tag", "vip")
        yield ScriptedAct(base + 2 * day + timedelta(hours=3), customer.index, "buy", "299")
        yield ScriptedAct(base + 9 * day + timedelta(hours=2), customer.index, "buy", "1200")
    elif customer.kind == "transferred":
        yield ScriptedAct(base + 4 * day + timedelta(hours=1), customer.index, "transfer")


class Simulation:
    """Runs the scripted customers and the scheduler in virtual-time order."""

    def __init__(self, settings: Settings, scripts: Path, days: int, customers: int, seed: int,
                 start: datetime) -> None:
        self.settings = settings.model_copy(update={"database_url": "sqlite+aiosqlite://",
                                                    "staff": _with_colleague(settings)})
        self.clock = VirtualClock(start)
        self.app = App(self.settings, scripts, self.clock, worker_id="sim")
        self.app.add_transport(_SimTransport())
        self.start = start
        self.end = start + timedelta(days=days)
        rng = random.Random(seed)
        self.customers = _customers(customers, rng, start, days)
        self.steps = sorted((s for c in self.customers for s in _script(c, rng)),
                            key=lambda s: (s.at, s.customer))
        self.zone = ZoneInfo(settings.policy.timezone)
        self._by_contact: dict[int, SimCustomer] = {}
        self._seen_messages = 0
        self._reported_exits: set[int] = set()
        self._exits_checked_at = start
        self._counter = 0
        self._sql: sqlite3.Connection | None = None

    @property
    def sql(self) -> sqlite3.Connection:
        """The simulation reads what the engine stored with plain SQL on the in-memory database's own
        connection, between the engine's transactions: a session costs about a millisecond a read, and
        the transcript takes a few reads every virtual moment. The engine itself runs unchanged."""
        assert self._sql is not None, "run() opens the database"
        return self._sql

    async def run(self) -> list[SimCustomer]:
        await self.app.start()
        try:
            self._sql = await plain_connection(self.app.db.engine)
            pending = list(self.steps)
            while True:
                # storage.repo.next_due_at
                row = self.sql.execute("SELECT min(due_at) FROM touches WHERE status = ?",
                                       (TouchStatus.PENDING.value,)).fetchone()
                due = _loaded(row[0]) if row[0] is not None else None
                candidates = [t for t in (pending[0].at if pending else None, due) if t is not None]
                if not candidates or min(candidates) > self.end:
                    break
                moment = max(min(candidates), self.clock.now())
                self.clock.set(moment)
                while pending and pending[0].at <= moment:
                    await self._act(pending.pop(0))
                self._record_outcomes(await self.app.tick())
                self._record_replies_and_exits()
        finally:
            await self.app.close()
        return self.customers

    async def _act(self, step: ScriptedAct) -> None:
        customer = self.customers[step.customer - 1]
        self._counter += 1
        external = f"sim-{customer.index:04d}"
        now = self.clock.now()
        if step.kind == "add":
            await self.app.engine.handle(Event(EventKind.CONTACT_ADDED, CHANNEL, external, now, profile=Profile(
                name=customer.name, birthday=customer.birthday, source=_SOURCES[customer.index % len(_SOURCES)])))
            row = self.sql.execute("SELECT id FROM contacts WHERE external_id = ?", (external,)).fetchone()
            assert row is not None
            customer.contact_id = row[0]
            self._by_contact[row[0]] = customer
            for (journey,) in self.sql.execute("SELECT journey_id FROM enrolments WHERE contact_id = ? ORDER BY id",
                                               (row[0],)).fetchall():
                self._line(customer, now, "enrolled", journey=journey)
        elif step.kind == "say":
            self._line(customer, now, "received", text=step.text)
            await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, external, now, text=step.text,
                                               message_id=f"sim-{self._counter}"))
        elif step.kind == "remove":
            self._line(customer, now, "received", reason="customer removed the guide")
            await self.app.engine.handle(Event(EventKind.CONTACT_REMOVED, CHANNEL, external, now))
        elif step.kind == "tag":
            self._line(customer, now, "received", reason=f"tag {step.text}")
            await self.app.engine.handle(Event(EventKind.TAG_ADDED, CHANNEL, external, now, tag=step.text))
        elif step.kind == "buy":
            await self._buy(customer, external, float(step.text), now)
        elif step.kind == "transfer":
            await self._transfer(customer, external, now)
        if step.kind == "say":
            self._record_branches(customer, now)

    async def _buy(self, customer: SimCustomer, external: str, amount: float, now: datetime) -> None:
        """An order from the brand's shop, as `POST /api/events` brings it: points, maybe a level-up."""
        from bot.business_events import BusinessEvents

        order = f"S{self._counter:05d}"
        self._line(customer, now, "purchased", text=f"{amount:g} 元", reason=f"order {order}")
        events = BusinessEvents(self.app.db, self.app.engine.contacts, self.clock)
        await events.receive({"event_id": f"sim-{order}", "type": "purchase",
                              "customer": {"channel": CHANNEL, "id": external},
                              "data": {"order_id": order, "amount": amount}}, source="import")
        entries = self.sql.execute("SELECT delta, reason, detail FROM points_ledger WHERE contact_id = ? AND at = ? "
                                   "ORDER BY id", (customer.contact_id, _stored(now))).fetchall()
        level = self.sql.execute("SELECT level FROM contacts WHERE id = ?", (customer.contact_id,)).fetchone()[0]
        for delta, why, detail in entries:
            self._line(customer, now, "points", text=f"{delta:+d}", reason=f"{why}: {detail}")
        if level is not None and level != customer.level:
            customer.level = level
            self._line(customer, now, "level_up", text=level)

    async def _transfer(self, customer: SimCustomer, external: str, now: datetime) -> None:
        """The customer's guide hands them to a colleague (在职继承); the new guide introduces themself."""
        from bot.transfers import transfer_customers

        guides = [m.id for m in self.settings.staff if m.role == "guide"]
        current = self.sql.execute("SELECT guide_key FROM contacts WHERE id = ?", (customer.contact_id,)).fetchone()[0]
        current = current or self.settings.default_guide or guides[0]
        colleague = next(g for g in guides if g != current)
        report = await transfer_customers(self.app, current, colleague, [external])
        self._line(customer, now, "transferred", text=f"{current} → {colleague}", reason=report.rows[0].status)

    def _record_branches(self, customer: SimCustomer, now: datetime) -> None:
        """A reply a listening step branched on (journeys' `on_reply`)."""
        rows = self.sql.execute("SELECT journey_id, step_id, detail, reason FROM touch_log WHERE contact_id = ? "
                                "AND decision = 'branched' AND at = ? ORDER BY id",
                                (customer.contact_id, _stored(now))).fetchall()
        for journey, step, detail, reason in rows:
            self._line(customer, now, "branched", journey, step, text=detail, reason=reason)

    def _line(self, customer: SimCustomer, at: datetime, kind: str, journey: str | None = None,
              step: str | None = None, variant: str | None = None, text: str | None = None,
              reason: str | None = None) -> None:
        customer.lines.append({"t": at.astimezone(self.zone).isoformat(), "customer": customer.index,
                               "kind": kind, "journey": journey, "step": step, "variant": variant,
                               "text": text, "reason": reason})

    def _record_outcomes(self, outcomes: list[TouchOutcome]) -> None:
        for outcome in outcomes:
            customer = self._by_contact[outcome.contact_id]
            kind = {"sent": "sent", "deferred": "deferred"}.get(outcome.decision, "dropped")
            reason = outcome.reason
            if outcome.until is not None:
                reason = f"{reason} until {outcome.until.astimezone(self.zone):%Y-%m-%d %H:%M}"
            self._line(customer, outcome.at, kind, outcome.journey_id, outcome.step_id, outcome.variant,
                       outcome.text, reason)

    def _record_replies_and_exits(self) -> None:
        replies = self.sql.execute(
            "SELECT id, contact_id, created_at, text, intent, handoff FROM messages WHERE id > ? AND direction = 'out' "
            "AND touch_id IS NULL AND channel = ? ORDER BY id", (self._seen_messages, CHANNEL)).fetchall()
        for _, contact_id, created_at, text, intent, handoff in replies:
            customer = self._by_contact.get(contact_id or 0)
            if customer is not None:
                reason = f"faq:{intent}" if intent else ("handoff" if handoff else "reply")
                self._line(customer, _loaded(created_at), "sent", text=text, reason=reason)
        if replies:
            self._seen_messages = replies[-1][0]
        ended = self.sql.execute(
            "SELECT id, contact_id, journey_id, exited_at, exit_reason FROM enrolments WHERE status != 'active' "
            "AND exited_at >= ? ORDER BY exited_at, id", (_stored(self._exits_checked_at),)).fetchall()
        self._exits_checked_at = self.clock.now()
        for enrolment_id, contact_id, journey, exited_at, reason in ended:
            if enrolment_id in self._reported_exits:
                continue
            self._reported_exits.add(enrolment_id)
            self._line(self._by_contact[contact_id], _loaded(exited_at), "exited", journey=journey, reason=reason)


def write_transcripts(customers: list[SimCustomer], start: datetime, out: TextIO, as_json: bool) -> None:
    """JSON: one object per line in time order. Text: each customer's transcript."""
    if as_json:
        lines = sorted((line for c in customers for line in c.lines), key=lambda l: (l["t"], l["customer"]))
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return
    marks = {"enrolled": "＋", "exited": "×", "sent": "→", "deferred": "…", "dropped": "⊘", "received": "←",
             "purchased": "¥", "points": "＊", "level_up": "↑", "transferred": "⇄", "branched": "⑂"}
    for customer in customers:
        out.write(f"\n#{customer.index} {customer.name} ({customer.kind})\n")
        for line in customer.lines:
            at = datetime.fromisoformat(line["t"])
            day = (at.date() - start.date()).days
            what = ".".join(p for p in (line["journey"], line["step"]) if p)
            if line["variant"]:
                what += f"[{line['variant']}]"
            body = (line["text"] or "").replace("\n", " ")
            extra = f" ({line['reason']})" if line["reason"] and line["kind"] != "sent" else ""
            if line["kind"] == "sent" and not line["journey"]:
                extra = f" ({line['reason']})"
            out.write(f"  d{day:<2} {at:%m-%d %H:%M} {marks[line['kind']]} {line['kind']:<8} "
                      f"{what}{extra} {body}".rstrip() + "\n")
