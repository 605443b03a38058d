"""Hand-over between guides (在职/离职继承): customers, their pending touches and hand-offs move together.

Where the platform owns which guide has a customer (WeCom), it is asked to move them and may take a
day to settle (the customer can refuse): each customer's transfer is a row that stays `waiting` until
`poll_transfers` hears the outcome. Elsewhere (web chat, Telegram) the guide is only siyu's own record,
so the move is accepted at once. Only an accepted transfer changes the customer's guide; then the
journeys with `trigger: transferred` start, so the new guide introduces themself through the policy.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.conversation_log import note_to_guide
from bot.enrolment import JourneyRunner
from bot.journey import Journey
from bot.transport import Handover, HandoverState, HandsOverCustomers, Transport
from storage import repo
from storage.models import Contact, Message, Transfer
from storage.types import UTCDateTime

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)
FIRST_CHECK = timedelta(minutes=10)  # WeCom settles a serving transfer within 24 h; most sooner
LAST_GAP = timedelta(hours=6)        # the back-off between checks stops growing here
POLL_BATCH = 200
# built once: the serve loop asks on every pass, and building the query costs more than running it
_DUE_CHECKS = (select(Transfer).where(Transfer.status == HandoverState.WAITING.value,
                                      Transfer.next_check_at <= bindparam("check_now", type_=UTCDateTime()))
               .order_by(Transfer.next_check_at).limit(POLL_BATCH))


class TransferError(ValueError):
    """The operator asked for a transfer that cannot be made; the message is the operator's sentence.

    `unknown` is True when a named guide or customer does not exist (the console answers 404), False when
    the request itself cannot be done (400)."""

    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


@dataclass(frozen=True)
class TransferRow:
    """One customer's transfer as the operator sees it."""

    contact_id: int
    name: str
    channel: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class TransferReport:
    """What `transfer_customers` did, per customer."""

    from_guide: str
    to_guide: str
    departed: bool
    rows: tuple[TransferRow, ...]

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    def lines(self) -> list[str]:
        kind = "离职继承" if self.departed else "在职继承"
        lines = [f"{kind}：{self.from_guide} → {self.to_guide}，共 {len(self.rows)} 位客户"]
        lines += [f"  #{r.contact_id} {r.name}（{r.channel}）：{_STATUS_WORDS[r.status]}"
                  + (f" — {r.detail}" if r.detail else "") for r in self.rows]
        lines.append(f"已接替 {self.count('accepted')}，等待平台确认 {self.count('waiting')}，"
                     f"被拒绝 {self.count('refused')}，失败 {self.count('failed')}")
        return lines


_STATUS_WORDS = {"waiting": "等待接替", "accepted": "已接替", "refused": "被拒绝", "failed": "失败"}


def next_gap(checks: int) -> timedelta:
    """How long to wait before asking the platform again, after `checks` answers of "still waiting"."""
    return min(FIRST_CHECK * (2 ** min(checks, 10)), LAST_GAP)


async def transfer_customers(app: App, from_guide: str, to_guide: str, customers: Sequence[str] | None = None,
                             departed: bool = False) -> TransferReport:
    """Hand `customers` (ids, platform ids or names; default: all of `from_guide`'s) to `to_guide`.

    The console calls this too. Platform calls happen outside any database transaction; each customer
    gets a `transfers` row. Raises TransferError for an unknown guide or an unknown customer.
    """
    settings = app.settings
    if (unknown := settings.unknown_guide((from_guide, to_guide))) is not None:
        raise TransferError(unknown, unknown=True)
    if from_guide == to_guide:
        raise TransferError("交出和接手的是同一位导购 — 请选两位不同的导购")
    now = app.clock.now()
    async with app.db.session() as session:
        contacts = await _customers_of(session, settings, from_guide, customers)
        waiting = set((await session.scalars(select(Transfer.contact_id).where(
            Transfer.status == HandoverState.WAITING.value, Transfer.contact_id.in_([c.id for c in contacts])))).all())
    if not contacts:
        raise TransferError(f"{from_guide} 名下没有可以交接的客户")

    outcomes: dict[int, Handover] = {}
    by_channel: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        if contact.id in waiting:  # asked once already: a second request would only confuse the platform
            outcomes[contact.id] = Handover(contact.external_id, HandoverState.FAILED, "上一次交接还在等待平台确认")
        else:
            by_channel[contact.channel].append(contact)
    for channel, group in by_channel.items():
        outcomes.update(await _ask_platform(app.transports.get(channel), settings, channel, from_guide, to_guide,
                                            group, departed))

    rows = []
    async with app.db.session() as session, session.begin():
        for contact in contacts:
            fresh = await session.get(Contact, contact.id)
            assert fresh is not None
            outcome = outcomes[contact.id]
            transfer = Transfer(contact_id=fresh.id, channel=fresh.channel, from_guide=from_guide, to_guide=to_guide,
                                departed=departed, status=outcome.state.value, detail=outcome.detail, checks=0,
                                requested_at=now)
            if outcome.state is HandoverState.WAITING:
                transfer.next_check_at = now + next_gap(0)
            else:
                transfer.settled_at = now
            session.add(transfer)
            if outcome.state is HandoverState.ACCEPTED:
                await complete_handover(session, settings, app.runner, app.library.journeys, fresh, to_guide, now)
            rows.append(TransferRow(fresh.id, fresh.name, fresh.channel, outcome.state.value, outcome.detail))
        await _tell_guides(session, from_guide, to_guide, rows, now)
    app.engine.work_ready.set()
    return TransferReport(from_guide, to_guide, departed, tuple(rows))


async def _customers_of(session: AsyncSession, settings: Settings, guide: str,
                        refs: Sequence[str] | None) -> list[Contact]:
    if not refs:
        theirs = Contact.guide_key == guide
        if guide == settings.default_guide:  # customers without a guide of their own are the default guide's
            theirs = or_(theirs, Contact.guide_key.is_(None))
        return list((await session.scalars(select(Contact).where(theirs, Contact.churned.is_(False))
                                           .order_by(Contact.id))).all())
    contacts = []
    for ref in refs:
        contact = await repo.find_contact(session, ref)
        if contact is None:
            raise TransferError(f"找不到客户「{ref}」：请填客户编号、平台 ID 或姓名", unknown=True)
        if (owner := contact.guide_key or settings.default_guide) != guide:
            raise TransferError(f"客户 #{contact.id}（{contact.name}）由 {owner} 负责，不是 {guide}")
        contacts.append(contact)
    return contacts


async def _ask_platform(transport: Transport | None, settings: Settings, channel: str, from_guide: str,
                        to_guide: str, contacts: list[Contact], departed: bool) -> dict[int, Handover]:
    """Each customer's answer: the platform's where it owns the relationship, accepted where it does not."""
    if not isinstance(transport, HandsOverCustomers):
        return {c.id: Handover(c.external_id, HandoverState.ACCEPTED) for c in contacts}
    old, new = settings.guide(from_guide), settings.guide(to_guide)
    old_id = old.identities.get(channel) if old else None
    new_id = new.identities.get(channel) if new else None
    if not old_id or not new_id:
        missing = from_guide if not old_id else to_guide
        return {c.id: Handover(c.external_id, HandoverState.FAILED, f"{missing} 在 {channel} 上没有账号")
                for c in contacts}
    answers = {h.customer: h for h in await transport.hand_over(old_id, new_id, [c.external_id for c in contacts],
                                                                departed)}
    return {c.id: answers.get(c.external_id, Handover(c.external_id, HandoverState.FAILED, "平台没有答复"))
            for c in contacts}


async def complete_handover(session: AsyncSession, settings: Settings, runner: JourneyRunner,
                            journeys: dict[str, Journey], contact: Contact, to_guide: str, now: datetime) -> None:
    """The customer is the new guide's now: what is queued follows them, and the introduction starts.

    Pending touches carry no sender (it is read from the customer at send time), so they follow by
    themselves; queued messages not yet handed to the platform are re-addressed from the new guide. A
    hand-off in progress stays open and now waits for the new guide, whom its notes reach.
    """
    old = settings.guide(contact.guide_key)
    new = settings.guide(to_guide)
    if contact.handoff_guide is not None and old is not None and contact.handoff_guide == old.id:
        contact.handoff_guide = None  # the old guide had joined the chat: it waits for the new one
    contact.guide_key = to_guide
    old_id = old.identities.get(contact.channel) if old else None
    new_id = new.identities.get(contact.channel) if new else None
    if old_id and new_id:
        await session.execute(
            update(Message).where(and_(Message.contact_id == contact.id, Message.direction == "out",
                                       Message.chat_id == contact.external_id, Message.sender_id == old_id,
                                       Message.delivered_at.is_(None), Message.delivery_started_at.is_(None),
                                       Message.delivery_error.is_(None)))
            .values(sender_id=new_id).execution_options(synchronize_session=False))
    if contact.opted_out or contact.churned:
        return
    for journey in journeys.values():
        if journey.trigger.kind == "transferred":
            await runner.enrol(session, contact, journey, now, restart=True)


async def _tell_guides(session: AsyncSession, from_guide: str, to_guide: str, rows: Sequence[TransferRow],
                       now: datetime) -> None:
    if not rows:
        return
    channel = rows[0].channel
    names = "、".join(f"{r.name}（#{r.contact_id}）" for r in rows[:10]) + ("等" if len(rows) > 10 else "")
    waiting = sum(1 for r in rows if r.status == "waiting")
    tail = f"；其中 {waiting} 位等待平台确认" if waiting else ""
    await note_to_guide(session, to_guide, channel, None, f"【客户交接】{from_guide} 的 {len(rows)} 位客户交给您：{names}{tail}",
                        now)
    await note_to_guide(session, from_guide, channel, None, f"【客户交接】您的 {len(rows)} 位客户已交给 {to_guide}{tail}",
                        now)


async def poll_transfers(app: App) -> int:
    """Ask the platform about transfers still waiting whose check is due; returns how many settled.

    Called on every pass of the serve loop; costs one indexed query when nothing is due.
    """
    now = app.clock.now()
    async with app.db.session() as session:
        due = (await session.scalars(_DUE_CHECKS, {"check_now": now})).all()
        if not due:
            return 0
        customers = {c.id: c.external_id for c in (await session.scalars(
            select(Contact).where(Contact.id.in_({t.contact_id for t in due})))).all()}
    pairs: dict[tuple[str, str, str, bool], list[Transfer]] = defaultdict(list)
    for transfer in due:
        pairs[(transfer.channel, transfer.from_guide, transfer.to_guide, transfer.departed)].append(transfer)
    settled = 0
    for (channel, from_guide, to_guide, departed), transfers in pairs.items():
        answers = await _results(app, channel, from_guide, to_guide, departed)
        settled += await _settle(app, transfers, customers, answers, now)
    if settled:
        app.engine.work_ready.set()
    return settled


async def _results(app: App, channel: str, from_guide: str, to_guide: str, departed: bool) -> dict[str, Handover]:
    transport = app.transports.get(channel)
    old, new = app.settings.guide(from_guide), app.settings.guide(to_guide)
    if not isinstance(transport, HandsOverCustomers) or old is None or new is None:
        return {}
    try:
        answers = await transport.handover_results(old.identities.get(channel, ""), new.identities.get(channel, ""),
                                                   departed)
    except Exception as exc:  # the platform is down or refuses: ask again later, as for "still waiting"
        log.warning("asking %s about transfers failed (%s); asking again later", channel, type(exc).__name__)
        return {}
    return {a.customer: a for a in answers}


async def _settle(app: App, transfers: list[Transfer], customers: dict[int, str], answers: dict[str, Handover],
                  now: datetime) -> int:
    settled = 0
    async with app.db.session() as session, session.begin():
        for transfer in transfers:
            answer = answers.get(customers.get(transfer.contact_id, ""))
            state = answer.state if answer is not None else HandoverState.WAITING
            if state is HandoverState.WAITING:
                await session.execute(update(Transfer).where(Transfer.id == transfer.id, Transfer.status == "waiting")
                                      .values(checks=transfer.checks + 1,
                                              next_check_at=now + next_gap(transfer.checks + 1)))
                continue
            # guarded: of two workers polling at once, only one settles it
            moved = await session.execute(
                update(Transfer).where(Transfer.id == transfer.id, Transfer.status == "waiting")
                .values(status=state.value, detail=answer.detail if answer else "", settled_at=now,
                        checks=transfer.checks + 1, next_check_at=None))
            if not moved.rowcount:
                continue
            settled += 1
            contact = await session.get(Contact, transfer.contact_id)
            if contact is None:
                continue
            if state is HandoverState.ACCEPTED:
                await complete_handover(session, app.settings, app.runner, app.library.journeys, contact,
                                        transfer.to_guide, now)
            else:
                text = (f"【客户交接】{contact.name}（#{contact.id}）未能交给 {transfer.to_guide}："
                        f"{answer.detail if answer else ''}，客户仍由 {transfer.from_guide} 跟进")
                for guide in (transfer.from_guide, transfer.to_guide):
                    await note_to_guide(session, guide, contact.channel, contact.id, text, now)
    return settled
