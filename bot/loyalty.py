"""Points and levels (积分与等级): the program operators write in `scripts/loyalty.yaml`, and the ledger.

Every change of a customer's points is one `points_ledger` row with a reason; the balance is what the
rows leave after first-in-first-out expiry, never a counter kept beside them. Each change carries a
`ref` (the order, the invite, the message), so a replay of the same cause changes nothing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channel_rules import local_midnight
from bot.clock import Clock
from bot.config import PolicySettings
from bot.policy import Rules, Verdict, group_post_decision
from bot.problems import Problem
from bot.validation import FileModel, Loc, Mistake, Voice, clock_time, non_blank, validate
from bot.yamlsource import YamlDocument
from storage import repo
from storage.db import Database
from storage.models import BusinessEvent, Contact, Group, Membership, Message, PointsEntry

if TYPE_CHECKING:  # the library loads loyalty.yaml through this module
    from bot.library import ScriptLibrary

EXPIRING_SOON = timedelta(days=30)  # what 「查积分」 mentions as expiring soon


# --- the program, as operators write it ---

@dataclass(frozen=True)
class Level:
    """A membership level, reached by lifetime points earned or by total spend (whichever comes first)."""

    name: str
    points: int | None
    spend: float | None
    benefits: tuple[str, ...]

    def reached(self, earned: int, spend: float) -> bool:
        if self.points is None and self.spend is None:
            return True  # the entry level
        return (self.points is not None and earned >= self.points) or (self.spend is not None and spend >= self.spend)

    def threshold(self) -> str:
        parts = ([f"累计 {self.points} 积分"] if self.points is not None else []) + \
                ([f"累计消费 {self.spend:g} 元"] if self.spend is not None else [])
        return "或".join(parts)


@dataclass(frozen=True)
class LoyaltyProgram:
    """A validated loyalty.yaml: safe to run."""

    points_per_yuan: float
    invite_joined: int
    group_interaction: int
    group_daily_cap: int
    group_min_chars: int
    redeem_points: int
    redeem_yuan: float
    expire_after_months: int
    levels: tuple[Level, ...]
    balance_intent: str | None
    leaderboard_top: int
    leaderboard_day: int = 1
    leaderboard_time: time = time(10, 0)
    path: str = "loyalty.yaml"

    def level(self, name: str | None) -> Level:
        return next((lv for lv in self.levels if lv.name == name), self.levels[0])

    def next_level(self, name: str | None) -> Level | None:
        index = self.levels.index(self.level(name))
        return self.levels[index + 1] if index + 1 < len(self.levels) else None

    def level_for(self, earned: int, spend: float) -> Level:
        return [lv for lv in self.levels if lv.reached(earned, spend)][-1]

    def purchase_points(self, amount: float) -> int:
        return int(math.floor(amount * self.points_per_yuan + 1e-9))

    def value_of(self, points: int) -> float:
        """What `points` are worth in yuan when redeemed."""
        return points * self.redeem_yuan / self.redeem_points

    def expires_at(self, earned_at: datetime) -> datetime:
        return add_months(earned_at, self.expire_after_months)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later (the month's last day when it is shorter)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


class EarnFile(FileModel):
    """How points are earned."""

    purchase_per_yuan: float = Field(1.0, ge=0, description="points per yuan spent, e.g. purchase_per_yuan: 1")
    invite_joined: int = Field(50, ge=0, strict=True)
    group_interaction: int = Field(10, ge=0, strict=True)
    group_daily_cap: int = Field(30, ge=0, strict=True)
    group_min_chars: int = Field(6, ge=1, strict=True)


class RedeemFile(FileModel):
    """What points are worth: `points` points are `yuan` yuan."""

    points: int = Field(100, gt=0, strict=True)
    yuan: float = Field(10.0, gt=0)


class LevelFile(FileModel):
    """One level: `{name: 银卡, points: 1000, spend: 2000, benefits: [...]}`."""

    name: str = Field(description="the level's name, e.g. name: 银卡")
    points: int | None = Field(None, gt=0, strict=True)
    spend: float | None = Field(None, gt=0)
    benefits: list[str] = []

    _name = field_validator("name", mode="before")(non_blank("has an empty name — e.g. name: 银卡"))


TimeOfDay = time  # a model field named `time` would hide the type inside the class body


class LeaderboardFile(FileModel):
    """The monthly points leaderboard posted in groups: last month's board, on `day` at `time` (local)."""

    top: int = Field(10, ge=1, le=50, strict=True)
    day: int = Field(1, ge=1, le=28, strict=True)
    time: TimeOfDay = Field(default_factory=lambda: TimeOfDay(10, 0))

    _time = field_validator("time", mode="before")(clock_time)


class LoyaltyFile(FileModel):
    """loyalty.yaml as written (see README 'Points and levels')."""

    earn: EarnFile = EarnFile()
    redeem: RedeemFile = RedeemFile()
    expire_after_months: int = Field(12, ge=1, le=120, strict=True)
    levels: list[LevelFile] = Field(min_length=1, description="a list of levels from the entry level up, "
                                                               "e.g. [{name: 普通}, {name: 银卡, points: 1000}]")
    balance_intent: str | None = None
    leaderboard: LeaderboardFile = LeaderboardFile()

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        levels = raw.get("levels")
        if not isinstance(levels, list):
            return []
        mistakes, seen = [], set()
        last_points, last_spend = 0.0, 0.0
        for index, level in enumerate(levels):
            if not isinstance(level, Mapping):
                continue
            name = level.get("name")
            if isinstance(name, str) and name.strip() in seen:
                mistakes.append(Mistake("is used twice — level names must be unique", at=("levels", index, "name")))
            seen.add(name.strip() if isinstance(name, str) else name)
            has_threshold = "points" in level or "spend" in level
            if index == 0 and has_threshold:
                mistakes.append(Mistake("is the entry level, which everyone has — remove its points/spend",
                                        at=("levels", 0)))
            if index > 0 and not has_threshold:
                mistakes.append(Mistake("needs points: or spend: (how it is reached)", at=("levels", index)))
            for key, last in (("points", last_points), ("spend", last_spend)):
                value = level.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if value <= last:
                        mistakes.append(Mistake(f"{key} {value:g} must be higher than the level below ({last:g})",
                                                at=("levels", index, key)))
                    if key == "points":
                        last_points = float(value)
                    else:
                        last_spend = float(value)
        return mistakes

    def program(self, path: str) -> LoyaltyProgram:
        levels = tuple(Level(lv.name, lv.points, lv.spend, tuple(lv.benefits)) for lv in self.levels)
        return LoyaltyProgram(self.earn.purchase_per_yuan, self.earn.invite_joined, self.earn.group_interaction,
                              self.earn.group_daily_cap, self.earn.group_min_chars, self.redeem.points,
                              self.redeem.yuan, self.expire_after_months, levels, self.balance_intent,
                              self.leaderboard.top, self.leaderboard.day, self.leaderboard.time, path)


def _voice(raw: Any) -> Voice:
    def subject(loc: Loc) -> str:
        if len(loc) >= 2 and loc[0] == "levels" and isinstance(loc[1], int):
            levels = raw.get("levels") if isinstance(raw, Mapping) else None
            level = levels[loc[1]] if isinstance(levels, list) and loc[1] < len(levels) else None
            name = level.get("name") if isinstance(level, Mapping) else None
            return f"level '{name}'" if isinstance(name, str) and name.strip() else f"level {loc[1] + 1}"
        return ".".join(str(p) for p in loc[:-1])  # the generated message names the key itself
    return Voice(subject=subject, subject_names_key=False, colon=False, see="see README 'Points and levels'")


def parse_loyalty(doc: YamlDocument) -> tuple[LoyaltyProgram | None, list[Problem]]:
    """Validate loyalty.yaml; every problem names its line."""
    model, problems = validate(LoyaltyFile, {} if doc.data is None else doc.data, doc, _voice(doc.data))
    return (model.program(doc.path) if model is not None else None), problems


# --- the ledger ---

@dataclass(frozen=True)
class Lot:
    """What is left of one earning row."""

    entry_id: int
    left: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Ledger:
    """A customer's points as the ledger rows leave them at one moment (pure: see `replay`)."""

    balance: int
    earned: int        # lifetime points earned (what levels count)
    live: tuple[Lot, ...]      # lots with points left, oldest first
    lapsed: tuple[Lot, ...]    # lots past their expiry with points left and no `expired` row yet

    def expiring(self, now: datetime, within: timedelta = EXPIRING_SOON) -> list[Lot]:
        return [lot for lot in self.live if lot.expires_at is not None and lot.expires_at <= now + within]


def replay(entries: Sequence[PointsEntry], now: datetime) -> Ledger:
    """First in, first out: every spend or expiry takes from the oldest lot with points left."""
    lots: list[list[Any]] = []  # [entry_id, left, expires_at]
    earned = 0
    for entry in sorted(entries, key=lambda e: (e.at, e.id)):
        if entry.delta > 0:
            lots.append([entry.id, entry.delta, entry.expires_at])
            if entry.reason != "adjust":
                earned += entry.delta
            continue
        owed = -entry.delta
        for lot in lots:
            if owed <= 0:
                break
            taken = min(lot[1], owed)
            lot[1] -= taken
            owed -= taken
    live = tuple(Lot(i, left, exp) for i, left, exp in lots if left > 0 and (exp is None or exp > now))
    lapsed = tuple(Lot(i, left, exp) for i, left, exp in lots if left > 0 and exp is not None and exp <= now)
    return Ledger(sum(lot.left for lot in live), earned, live, lapsed)


class NotEnoughPoints(ValueError):
    """A redemption asked for more points than the customer has."""


@dataclass(frozen=True)
class Standing:
    """What 「查积分」 and templates tell a customer about their points."""

    balance: int
    level: Level
    next_level: Level | None
    expiring: tuple[Lot, ...]
    earned: int
    spend: float


class PointsBook:
    """Writes and reads the points ledger for the program the library has loaded (None: no loyalty.yaml)."""

    def __init__(self, program: LoyaltyProgram | None) -> None:
        self.program = program

    async def ledger(self, session: AsyncSession, contact_id: int, now: datetime) -> Ledger:
        entries = (await session.scalars(select(PointsEntry).where(PointsEntry.contact_id == contact_id))).all()
        return replay(entries, now)

    async def settle(self, session: AsyncSession, contact_id: int, now: datetime) -> Ledger:
        """Write an `expired` row for every lot past its expiry, so the rows alone sum to the balance."""
        ledger = await self.ledger(session, contact_id, now)
        for lot in ledger.lapsed:
            assert lot.expires_at is not None
            await repo.insert_ignore(session, PointsEntry, {
                "contact_id": contact_id, "delta": -lot.left, "reason": "expired",
                "detail": f"{lot.left} 积分到期（先到先扣）", "ref": f"expire:{lot.entry_id}",
                "at": lot.expires_at, "expires_at": None})
        return ledger

    async def add(self, session: AsyncSession, contact: Contact, delta: int, reason: str, detail: str, ref: str,
                  now: datetime) -> bool:
        """One ledger row; False when `ref` was already booked (the same cause twice) or nothing to add."""
        if delta == 0 or self.program is None:
            return False
        await self.settle(session, contact.id, now)
        expires = self.program.expires_at(now) if delta > 0 else None
        return await repo.insert_ignore(session, PointsEntry, {
            "contact_id": contact.id, "delta": delta, "reason": reason, "detail": detail, "ref": ref, "at": now,
            "expires_at": expires})

    async def redeem(self, session: AsyncSession, contact: Contact, points: int, ref: str, now: datetime) -> bool:
        """Spend points (oldest first); NotEnoughPoints when the balance is short."""
        assert self.program is not None
        ledger = await self.settle(session, contact.id, now)
        if points > ledger.balance:
            raise NotEnoughPoints(f"only {ledger.balance} points, {points} asked")
        value = self.program.value_of(points)
        return await self.add(session, contact, -points, "redeem", f"兑换 {points} 积分（抵 {value:g} 元）", ref, now)

    async def group_points_today(self, session: AsyncSession, contact_id: int, now: datetime, zone: ZoneInfo) -> int:
        start = local_midnight(now.astimezone(zone).date(), zone)
        return int(await session.scalar(select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(
            PointsEntry.contact_id == contact_id, PointsEntry.reason == "group", PointsEntry.at >= start)) or 0)

    async def spend(self, session: AsyncSession, contact_id: int) -> float:
        return float(await session.scalar(select(func.coalesce(func.sum(BusinessEvent.amount), 0.0)).where(
            BusinessEvent.contact_id == contact_id, BusinessEvent.type == "purchase")) or 0.0)

    async def standing(self, session: AsyncSession, contact: Contact, now: datetime) -> Standing | None:
        if self.program is None:
            return None
        ledger = await self.ledger(session, contact.id, now)
        level = self.program.level(contact.level)
        return Standing(ledger.balance, level, self.program.next_level(level.name), tuple(ledger.expiring(now)),
                        ledger.earned, await self.spend(session, contact.id))

    async def level_due(self, session: AsyncSession, contact: Contact, now: datetime) -> Level | None:
        """The level the customer has now reached when it is above their recorded one (levels never drop)."""
        if self.program is None:
            return None
        ledger = await self.ledger(session, contact.id, now)
        reached = self.program.level_for(ledger.earned, await self.spend(session, contact.id))
        current = self.program.level(contact.level)
        return reached if self.program.levels.index(reached) > self.program.levels.index(current) else None

    async def facts(self, session: AsyncSession, contact: Contact, now: datetime) -> tuple[int, str]:
        """(points, level name) for templates and conditions."""
        if self.program is None:
            return 0, contact.level or ""
        ledger = await self.ledger(session, contact.id, now)
        return ledger.balance, self.program.level(contact.level).name


def balance_answer(standing: Standing, program: LoyaltyProgram, zone: ZoneInfo) -> str:
    """「查积分」: the customer's own balance, level, what expires soon and what the next level needs."""
    lines = [f"您当前有 {standing.balance} 积分（可抵 {program.value_of(standing.balance):g} 元），"
             f"会员等级：{standing.level.name}。"]
    if standing.expiring:
        soonest: dict[date, int] = {}
        for lot in standing.expiring:
            assert lot.expires_at is not None
            day = lot.expires_at.astimezone(zone).date()
            soonest[day] = soonest.get(day, 0) + lot.left
        lines.append("即将到期：" + "，".join(f"{points} 积分于 {day:%Y-%m-%d} 到期" for day, points in sorted(soonest.items()))
                     + "，请尽快使用。")
    if standing.next_level is not None:
        lines.append(f"升级到{standing.next_level.name}需要{standing.next_level.threshold()}"
                     f"（您已累计 {standing.earned} 积分、消费 {standing.spend:g} 元）。")
    else:
        lines.append("您已是最高等级，感谢一路相伴！")
    return "\n".join(lines)


async def monthly_leaderboard(session: AsyncSession, contact_ids: Sequence[int], month_start: datetime,
                              month_end: datetime, top: int) -> list[tuple[int, int]]:
    """(contact id, points earned in the month) for the group's members, best first."""
    if not contact_ids:
        return []
    rows = await session.execute(select(PointsEntry.contact_id, func.sum(PointsEntry.delta)).where(
        PointsEntry.contact_id.in_(contact_ids), PointsEntry.delta > 0, PointsEntry.at >= month_start,
        PointsEntry.at < month_end).group_by(PointsEntry.contact_id)
        .order_by(func.sum(PointsEntry.delta).desc(), PointsEntry.contact_id).limit(top))
    return [(int(c), int(p)) for c, p in rows.all()]


# --- the monthly leaderboard, a scheduled group post ---

def leaderboard_text(month: date, rows: Sequence[tuple[str, int]]) -> str:
    """The board as the group reads it; names are shortened (a group is semi-public)."""
    lines = [f"【{month.month}月积分榜】"]
    lines += [f"{rank}. {_masked(name)} {points} 积分" for rank, (name, points) in enumerate(rows, 1)]
    lines.append("发言、邀请好友、购物都能得积分，这个月继续加油！")
    return "\n".join(lines)


def _masked(name: str) -> str:
    return (name[:1] + "**") if name else "**"


def previous_month(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


class LeaderboardPoster:
    """Posts last month's points leaderboard in every group whose members earned points, once a month.

    Due from the program's `day` and `time` (local) on; each post goes through the touch policy's group
    rules (quiet hours, sending days, scheduled posts per group per day) and waits when they say so. Its
    outbox key (group and month) makes it once, also across processes.
    """

    def __init__(self, db: Database, library: ScriptLibrary, clock: Clock, settings: PolicySettings,
                 every: timedelta = timedelta(minutes=10)) -> None:
        self.db = db
        self.library = library
        self.clock = clock
        self.zone = ZoneInfo(settings.timezone)
        self.rules = Rules.from_settings(settings)
        self.every = every
        self._last: datetime | None = None

    async def run(self) -> list[str]:
        """One pass; the group ids posted to."""
        program = self.library.loyalty
        now = self.clock.now()
        if program is None or (self._last is not None and now - self._last < self.every):
            return []
        self._last = now
        local = now.astimezone(self.zone)
        due = datetime.combine(local.date().replace(day=program.leaderboard_day), program.leaderboard_time,
                               tzinfo=self.zone)
        if local < due:
            return []
        month = previous_month(local.date())
        start = local_midnight(month, self.zone)
        end = local_midnight(local.date().replace(day=1), self.zone)
        posted: list[str] = []
        async with self.db.session() as session, session.begin():
            for group in (await session.scalars(select(Group).order_by(Group.id))).all():
                key = f"{GROUP_POST}leaderboard:{group.channel}:{group.external_id}:{month:%Y-%m}"
                if await session.scalar(select(Message.id).where(Message.idempotency_key == key)) is not None:
                    continue
                members = (await session.scalars(select(Membership.contact_id).where(
                    Membership.group_id == group.id, Membership.left_at.is_(None),
                    Membership.contact_id.isnot(None)))).all()
                board = await monthly_leaderboard(session, [m for m in members if m is not None], start, end,
                                                  program.leaderboard_top)
                if not board:
                    continue
                today = local_midnight(local.date(), self.zone)
                posted_today = int(await session.scalar(select(func.count()).select_from(Message).where(
                    Message.channel == group.channel, Message.chat_id == group.external_id,
                    Message.idempotency_key.startswith(GROUP_POST), Message.created_at >= today)) or 0)
                if group_post_decision(now, self.zone, self.rules, posted_today).verdict is not Verdict.SEND:
                    continue  # tried again on a later pass
                names = dict((await session.execute(select(Contact.id, Contact.name).where(
                    Contact.id.in_([c for c, _ in board])))).all())
                text = leaderboard_text(month, [(names.get(c, ""), p) for c, p in board])
                if await repo.insert_ignore(session, Message, {
                        "channel": group.channel, "chat_type": "group", "chat_id": group.external_id,
                        "direction": "out", "sender_role": "bot", "sender_id": "bot", "text": text,
                        "action": "say", "idempotency_key": key, "created_at": now, "delivery_attempts": 0,
                        "handoff": False}):
                    posted.append(group.external_id)
        return posted


GROUP_POST = "group-post:"  # the outbox key prefix of scheduled group posts (what the daily group rule counts)
