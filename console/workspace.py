"""The guide's workspace: the inbox, one conversation's history with the bot's reasons, and what a guide
does there (reply, take over, release, tag, trigger a step, read the timeline).

Every change is one transaction through the engine's own operations (bot/handoff.py, bot/commands.py),
so the console does exactly what the same command typed in chat would do.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.channel_rules import window_refusal
from bot.commands import CommandError, StaffActor, decision_text, format_decisions, reason_text
from bot.events import ChatType
from bot.facts import customer_view, customer_zone
from bot.guard import rule_names
from bot.handoff import HandOff
from bot.policy import TouchPolicy, TouchRequest
from bot.templates import TemplateProblem, render
from bot.turns import advisory_key
from console.auth import OTHER_GUIDE, Refused, Staffer
from console.models import (
    Conversation,
    History,
    HistoryItem,
    PolicyVerdict,
    Reason,
    ReplySent,
    TagResult,
    Timeline,
    TimelineEntry,
    TriggerResult,
)
from storage import repo
from storage.llm_calls import record_guide_verdict
from storage.models import Contact, GuardEvent, Message, Touch, TouchLog

log = logging.getLogger(__name__)

# channels where the guide talks to the customer in the platform's own app, not through siyu
REPLY_ELSEWHERE = {"wecom": "企业微信客户联系的会话请导购直接在企业微信里回复；这里只显示聊天记录。"}
WINDOW_CLOSED = "顾客已超过 {window} 没有发消息，这个渠道现在不能再发消息给 TA；请等顾客再次发消息。"
WINDOW_FULL = "顾客上一条消息之后已经发了 {used} 条，这个渠道不允许再多发；请等顾客再次发消息。"
NO_CUSTOMER = "找不到这位顾客（#{id}）"
NO_MESSAGE = "找不到顾客的这条消息（{id}）"
INBOX_SIZE = 300
HISTORY_SIZE = 500
TIER_TEXT = {"fuzzy": "字面匹配", "semantic": "语义匹配", "llm": "大模型", "handoff": "都不确定"}
ACTION_TEXT = {"delete": "撤回", "warn": "警告", "mute": "禁言", "remove": "移出群", "none": "记录"}


def local_text(at: datetime, zone: ZoneInfo) -> str:
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M}"


class Workspace:
    """What a guide can see and do in the console; a guide only for their own customers."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.engine = app.engine
        self.zone = ZoneInfo(app.settings.policy.timezone)

    # --- who may see whom ---

    def guide_of(self, contact: Contact) -> str | None:
        return contact.guide_key or self.settings.default_guide

    async def contact(self, session: AsyncSession, staffer: Staffer, contact_id: int) -> Contact:
        """The customer, if this staff member may see them: 404 unknown, 403 another guide's."""
        contact = await session.get(Contact, contact_id)
        if contact is None:
            raise Refused(404, NO_CUSTOMER.format(id=contact_id))
        if not staffer.operator and self.guide_of(contact) != staffer.key:
            raise Refused(403, OTHER_GUIDE)
        return contact

    def summary(self, contact: Contact, now: datetime, last: Message | None = None) -> Conversation:
        state = HandOff.state(contact, now)
        elsewhere = REPLY_ELSEWHERE.get(contact.channel)
        return Conversation(
            id=contact.id, channel=contact.channel, customer=contact.name or contact.external_id,
            guide=self.guide_of(contact), state=state,
            waiting_since=contact.handoff_at if state == "handoff" else None,
            last_message_at=last.created_at if last else None,
            last_message=last.text[:60] if last else None, tags=list(contact.tags or []),
            can_reply=elsewhere is None, reply_note=elsewhere)

    # --- reading ---

    async def conversations(self, staffer: Staffer, state: str | None = None) -> list[Conversation]:
        """Waiting hand-offs first (longest waiting first), then the most recently active."""
        now = self.app.clock.now()
        async with self.app.db.session() as session:
            mine = [] if staffer.operator else [func.coalesce(Contact.guide_key, self.settings.default_guide or "")
                                                == staffer.key]
            last_ids = (select(func.max(Message.id).label("last_id"), Message.contact_id.label("cid"))
                        .join(Contact, and_(Contact.id == Message.contact_id, Contact.channel == Message.channel,
                                            Contact.external_id == Message.chat_id))
                        .where(Message.chat_type == ChatType.DIRECT.value, Message.action == "say")
                        .group_by(Message.contact_id).subquery())
            recent = (await session.execute(
                select(Contact, Message).join(last_ids, last_ids.c.cid == Contact.id)
                .join(Message, Message.id == last_ids.c.last_id).where(*mine)
                .order_by(last_ids.c.last_id.desc()).limit(INBOX_SIZE))).all()
            rows: dict[int, tuple[Contact, Message | None]] = {c.id: (c, m) for c, m in recent}
            handed = (await session.scalars(select(Contact).where(Contact.handoff_until > now, *mine))).all()
            for contact in handed:
                if contact.id not in rows:
                    rows[contact.id] = (contact, await self._last_message(session, contact))
        items = [self.summary(c, now, m) for c, m in rows.values()]
        if state is not None:
            items = [i for i in items if i.state == state]
        far = datetime.max.replace(tzinfo=now.tzinfo)
        return sorted(items, key=lambda i: (i.state != "handoff", i.waiting_since or far,
                                            -(i.last_message_at or far).timestamp() if i.last_message_at else 0))

    async def conversation(self, staffer: Staffer, contact_id: int) -> Conversation:
        async with self.app.db.session() as session:
            contact = await self.contact(session, staffer, contact_id)
            return self.summary(contact, self.app.clock.now(), await self._last_message(session, contact))

    @staticmethod
    async def _last_message(session: AsyncSession, contact: Contact) -> Message | None:
        return await session.scalar(select(Message).where(*_chat(contact)).order_by(Message.id.desc()).limit(1))

    async def history(self, staffer: Staffer, contact_id: int) -> History:
        """Messages both ways, touch decisions that sent nothing, and guard actions, oldest first."""
        async with self.app.db.session() as session:
            contact = await self.contact(session, staffer, contact_id)
            zone = customer_zone(contact, self.settings.policy.timezone)
            messages = list(reversed((await session.scalars(
                select(Message).where(*_chat(contact)).order_by(Message.id.desc()).limit(HISTORY_SIZE))).all()))
            touch_ids = {m.touch_id for m in messages if m.touch_id is not None}
            touches = {t.id: t for t in (await session.scalars(select(Touch).where(Touch.id.in_(touch_ids)))).all()} \
                if touch_ids else {}
            decisions = (await session.scalars(select(TouchLog).where(
                TouchLog.contact_id == contact.id, TouchLog.decision != "sent")
                .order_by(TouchLog.id.desc()).limit(HISTORY_SIZE))).all()
            guarded = (await session.scalars(select(GuardEvent).where(
                GuardEvent.channel == contact.channel, GuardEvent.member_id == contact.external_id)
                .order_by(GuardEvent.id.desc()).limit(HISTORY_SIZE))).all()
            names = {s.key: s.name for s in await repo.all_staff(session)}
            last = messages[-1] if messages else None
            summary = self.summary(contact, self.app.clock.now(), last)
        items = [self._message_item(m, contact, touches.get(m.touch_id or 0), names, zone) for m in messages]
        items += [HistoryItem(id=f"d{d.id}", kind="decision", at=d.at, local_time=local_text(d.at, zone),
                              text=f"{d.journey_id}.{d.step_id} {decision_text(d.decision)}",
                              reason=Reason(kind="decision", journey=d.journey_id, step=d.step_id,
                                            decision=d.decision, policy_reason=d.reason,
                                            summary=f"旅程 {d.journey_id}.{d.step_id} · {decision_text(d.decision)}"
                                                    f" · {reason_text(d.reason)}"))
                  for d in decisions]
        items += [HistoryItem(id=f"g{g.id}", kind="guard", at=g.at, local_time=local_text(g.at, zone),
                              text=g.excerpt, reason=Reason(
                                  kind="guard", rule=g.rule, action=g.action,
                                  summary=f"群防护 {'、'.join(rule_names(g.rule))} · 第 {g.strike} 次 · "
                                          f"{ACTION_TEXT.get(g.action, g.action)}"))
                  for g in guarded]
        items.sort(key=lambda i: (i.at, i.id))
        return History(conversation=summary, items=items)

    def _message_item(self, m: Message, contact: Contact, touch: Touch | None, names: dict[str, str],
                      zone: ZoneInfo) -> HistoryItem:
        sender = "customer" if m.direction == "in" else ("staff" if m.sender_role == "staff" else "bot")
        name = contact.name if sender == "customer" else names.get(m.sender_id, "导购") if sender == "staff" else "机器人"
        return HistoryItem(id=f"m{m.id}", kind="message", at=m.created_at, local_time=local_text(m.created_at, zone),
                           direction="in" if m.direction == "in" else "out", sender=sender, sender_name=name,
                           text=m.text, message_id=m.id, handed_off=bool(m.handoff and m.direction == "in"),
                           delivered=None if m.direction == "in" else m.delivered_at is not None,
                           reason=_reason(m, touch))

    async def timeline(self, staffer: Staffer, contact_id: int) -> Timeline:
        async with self.app.db.session() as session:
            contact = await self.contact(session, staffer, contact_id)
            rows = await repo.recent_decisions(session, contact.id, limit=50)
        zone = customer_zone(contact, self.settings.policy.timezone)
        return Timeline(customer=contact.name, zone=zone.key, text=format_decisions(contact, rows, self.zone),
                        entries=[TimelineEntry(at=r.at, local_time=local_text(r.at, zone), journey=r.journey_id,
                                               step=r.step_id, decision=r.decision, reason=r.reason,
                                               reason_text=reason_text(r.reason)) for r in rows])

    # --- doing ---

    @contextlib.asynccontextmanager
    async def _turn(self, staffer: Staffer, contact_id: int) -> AsyncIterator[AsyncSession]:
        """A transaction in the customer's conversation turn: a reply, takeover or release waits for the
        message the engine is handling now, and the next one waits for it (as inbound events do)."""
        async with self.app.db.session() as session:
            contact = await self.contact(session, staffer, contact_id)
            key = f"{contact.channel}:{ChatType.DIRECT.value}:{contact.external_id}"
        async with self.engine.turns.turn(key):
            async with self.app.db.session() as session, session.begin():
                if session.bind.dialect.name == "postgresql":  # other processes take the same lock
                    await session.execute(select(func.pg_advisory_xact_lock(advisory_key(key))))
                yield session

    async def reply(self, staffer: Staffer, contact_id: int, text: str) -> ReplySent:
        """The guide's words to the customer, on the customer's own channel; the bot steps back."""
        now = self.app.clock.now()
        async with self._turn(staffer, contact_id) as session:
            contact = await self.contact(session, staffer, contact_id)
            await self._may_reply(session, contact, now)
            await self.engine.handoff.join(session, contact, staffer.key, now)
            member = self.settings.guide(staffer.key)
            sender = member.identities.get(contact.channel, staffer.key) if member else staffer.key
            message = repo.add_message(
                session, channel=contact.channel, chat_type=ChatType.DIRECT.value, chat_id=contact.external_id,
                direction="out", sender_role="staff", sender_id=sender, contact_id=contact.id, text=text,
                created_at=now)
            await session.flush()
            result = ReplySent(message_id=message.id, conversation=self.summary(contact, now, message))
        await self.deliver_now()
        return result

    async def _may_reply(self, session: AsyncSession, contact: Contact, now: datetime) -> None:
        elsewhere = REPLY_ELSEWHERE.get(contact.channel)
        if elsewhere is not None:
            raise Refused(409, elsewhere)
        limits = self.app.limits_for(contact.channel)
        if limits is not None and limits.reply_window is not None:
            last_in, used = await repo.delivery_window(session, contact.channel, contact.external_id)
            refusal = window_refusal(limits, last_in, used, now)
            if refusal is not None:
                hours = f"{limits.reply_window.total_seconds() / 3600:g} 小时"
                text = WINDOW_FULL.format(used=used) if refusal.reason == "channel_window_full" \
                    else WINDOW_CLOSED.format(window=hours)
                raise Refused(409, text)

    async def take_over(self, staffer: Staffer, contact_id: int) -> Conversation:
        now = self.app.clock.now()
        async with self._turn(staffer, contact_id) as session:
            contact = await self.contact(session, staffer, contact_id)
            await self.engine.commands.take_over(session, StaffActor(staffer.key, "console"), contact, now)
        await self.deliver_now()
        return await self.conversation(staffer, contact_id)

    async def release(self, staffer: Staffer, contact_id: int) -> Conversation:
        now = self.app.clock.now()
        async with self._turn(staffer, contact_id) as session:
            contact = await self.contact(session, staffer, contact_id)
            await self.engine.commands.release(session, contact, now)
        await self.deliver_now()
        return await self.conversation(staffer, contact_id)

    async def tag(self, staffer: Staffer, contact_id: int, tag: str) -> TagResult:
        now = self.app.clock.now()
        async with self._turn(staffer, contact_id) as session:
            contact = await self.contact(session, staffer, contact_id)
            added, message = await self.engine.commands.tag(session, contact, tag, now)
        self.engine.work_ready.set()  # a tag may start journeys
        return TagResult(added=added, message=message, conversation=await self.conversation(staffer, contact_id))

    async def trigger(self, staffer: Staffer, contact_id: int, journey_id: str, step_id: str | None,
                      dry_run: bool) -> TriggerResult:
        """Schedule a journey or one step (unless `dry_run`), with the policy's verdict were the step due now."""
        now = self.app.clock.now()
        commands = self.engine.commands
        async with self.app.db.session() as session, session.begin():
            contact = await self.contact(session, staffer, contact_id)
            try:
                journey = commands.journey(journey_id)
                step = commands.step(journey, step_id) if step_id else None
                preview, text = (await self._preview(session, staffer, contact, journey_id, step, now)
                                 if step is not None else (None, None))
                if dry_run:
                    return TriggerResult(scheduled=False, message="仅预览，没有安排发送", preview=preview, text=text)
                message = await commands.trigger(session, StaffActor(staffer.key, "console"), contact, journey_id,
                                                 step_id, now)
            except CommandError as exc:
                raise Refused(422, str(exc)) from None
        self.engine.work_ready.set()
        return TriggerResult(scheduled=True, message=message, preview=preview, text=text)

    async def _preview(self, session: AsyncSession, staffer: Staffer, contact: Contact, journey_id: str,
                       step: Any, now: datetime) -> tuple[PolicyVerdict, str | None]:
        """What the policy would say to this step for this customer now, as a guide's trigger; and its text."""
        scheduler = self.app.scheduler
        limits = self.app.limits_for(contact.channel)
        window_used = 0
        if limits is not None and limits.reply_window is not None:
            _, window_used = await repo.delivery_window(session, contact.channel, contact.external_id)
        sent = await repo.proactive_sends_since(session, contact.id, now - _HISTORY)
        zone = customer_zone(contact, self.settings.policy.timezone)
        decision = TouchPolicy().decide(TouchRequest(
            now=now, zone=zone, rules=scheduler.rules_for(journey_id), opted_out=contact.opted_out,
            churned=contact.churned, reply=step.reply, window=step.window,
            priority=scheduler.priority_of(journey_id, staffer.key), triggered_by=staffer.key, first_due_at=now,
            last_inbound_at=contact.last_inbound_at, sent=sent, channel=limits, window_used=window_used))
        verdict = PolicyVerdict(verdict=decision.verdict.value, reason=decision.reason,
                                reason_text=reason_text(decision.reason), until=decision.until,
                                until_local=local_text(decision.until, zone) if decision.until else None)
        guide = self.settings.guide(contact.guide_key)
        context = {"customer": customer_view(contact, now), "brand": self.settings.brand,
                   "guide": {"id": guide.id, "name": guide.name} if guide else {"id": "", "name": "您的专属顾问"}}
        try:
            text = render(step.template_for(step.choose_variant(journey_id, contact.id)), context)
        except TemplateProblem as exc:
            text = f"（话术无法生成：{exc}）"
        return verdict, text

    async def may_teach_from(self, staffer: Staffer, message_id: int) -> None:
        """Teaching from a message needs the right to see its conversation."""
        async with self.app.db.session() as session:
            message = await session.get(Message, message_id)
            if message is None or message.contact_id is None or message.direction != "in":
                raise Refused(404, NO_MESSAGE.format(id=message_id))
            await self.contact(session, staffer, message.contact_id)

    async def teach_verdict(self, staffer: Staffer, message_id: int | None, intent: str) -> None:
        """Remember on the question itself which intent the guide said it was (the bot's own guess stays
        in `tier`/`confidence`), so what people taught can be told from what the bot decided; an LLM call
        about it is marked confirmed or corrected."""
        if message_id is None:
            return
        async with self.app.db.session() as session, session.begin():
            message = await session.get(Message, message_id)
            if message is not None:
                message.intent = intent
                await record_guide_verdict(session, message_id, intent, at=self.app.clock.now())
        log.info("console: %s taught message %s as intent %s", staffer.key, message_id, intent)

    async def deliver_now(self) -> None:
        """Hand what was just queued to the platforms at once (the serve loop would within a poll)."""
        self.engine.work_ready.set()
        try:
            await self.app.dispatcher.flush()
        except Exception:  # queued in the outbox: the serve loop delivers it on its next pass
            log.exception("console: immediate delivery failed; the serve loop retries")


_HISTORY = timedelta(days=32)  # as the scheduler: the rolling week and the month


def _chat(contact: Contact) -> Sequence[Any]:
    """The customer's 1v1 conversation (notes to guides carry the contact id too, in the guide's chat)."""
    return (Message.channel == contact.channel, Message.chat_type == ChatType.DIRECT.value,
            Message.chat_id == contact.external_id, Message.action == "say")


def _reason(m: Message, touch: Touch | None) -> Reason | None:
    """Why the bot said (or did not say) this, from what was stored when it happened."""
    if touch is not None:
        variant = f"[{touch.variant}]" if touch.variant else ""
        by = f" · 导购 {touch.triggered_by} 手动触发" if touch.triggered_by else ""
        return Reason(kind="journey", journey=touch.journey_id, step=touch.step_id, variant=touch.variant,
                      decision=touch.status, policy_reason=touch.reason,
                      summary=f"旅程 {touch.journey_id}.{touch.step_id}{variant} · {reason_text(touch.reason or 'ok')}{by}")
    confidence = f" · 置信度 {m.confidence:.2f}" if m.confidence is not None else ""
    tier = TIER_TEXT.get(m.tier or "", m.tier or "")
    if m.direction == "out" and m.intent:
        return Reason(kind="faq", intent=m.intent, tier=m.tier, confidence=m.confidence,
                      summary=f"FAQ {m.intent} · {tier}{confidence}")
    if m.handoff:
        return Reason(kind="handoff", tier=m.tier, confidence=m.confidence,
                      summary=f"没有把握回答，转给导购（{tier}{confidence}）")
    if m.direction == "in" and m.tier:
        return Reason(kind="faq", tier=m.tier, confidence=m.confidence, summary=f"{tier}{confidence}")
    if m.sender_role == "staff" and m.direction == "out":
        return Reason(kind="guide", summary="导购回复")
    return None
