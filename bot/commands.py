"""Commands staff type in chat (`/sop`, `/why`, …) and the CLI reuses."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.contacts import ContactLifecycle
from bot.handoff import HandOff
from bot.journey import Journey, Step
from bot.library import ScriptLibrary
from storage import repo
from storage.models import Contact, TouchLog

# name → BotFather-style description (adapters register these where the platform supports it)
STAFF_COMMANDS = {
    "sop": "触发话术：/sop <journey>[.<step>] <customer>",
    "why": "客户最近的触达决策及原因：/why <customer>",
    "optout": "为客户退订：/optout <customer>",
    "purchased": "标记已购买，结束相关旅程：/purchased <customer>",
    "tag": "给客户打标签：/tag <customer> <tag>",
    "handoff": "接管会话，机器人暂停回复：/handoff <customer>",
    "release": "结束接管，机器人恢复回复：/release <customer>",
    "help": "显示导购命令",
}
HELP = "可用命令 / commands:\n" + "\n".join(f"/{name}  {text}" for name, text in STAFF_COMMANDS.items())


def command_name(text: str) -> str:
    """`/sop@siyu_bot new_customer 林小姐` → `sop` (groups append the bot's name)."""
    words = text.strip().split(maxsplit=1)
    return words[0].lstrip("/").split("@")[0].lower() if words else ""


def is_staff_command(text: str) -> bool:
    return text.strip().startswith("/") and command_name(text) in STAFF_COMMANDS


class CommandError(ValueError):
    """A command the staff member should correct; the message says how."""


@dataclass(frozen=True)
class StaffActor:
    """Who runs a command: a staff key (config id) and the channel they typed on."""

    key: str
    channel: str


class GuideCommands:
    """Parses staff commands and runs them, inside the caller's transaction, with the engine's own operations."""

    def __init__(self, library: ScriptLibrary, contacts: ContactLifecycle, handoff: HandOff, zone: ZoneInfo) -> None:
        self.library = library
        self.contacts = contacts
        self.handoff = handoff
        self.zone = zone  # guides read times in the brand's local time

    async def run(self, session: AsyncSession, actor: StaffActor, text: str, now: datetime) -> str:
        try:
            words = shlex.split(text.strip())
        except ValueError:
            words = text.strip().split()
        if not words:
            return HELP
        name, args = command_name(words[0]), words[1:]
        try:
            match name:
                case "sop":
                    return await self.sop(session, actor, args, now)
                case "why":
                    return await self.why(session, actor, args)
                case "optout":
                    contact = await self._customer(session, actor, args, 1)
                    ended = await self.contacts.opt_out(session, contact, now)
                    if ended is None:
                        return f"{contact.name} 之前已经退订"
                    return f"已为 {contact.name} 退订；结束旅程：{', '.join(ended) or '无'}"
                case "purchased":
                    contact = await self._customer(session, actor, args, 1)
                    ended = await self.contacts.purchased(session, contact, now)
                    return f"已记录 {contact.name} 购买；结束旅程：{', '.join(ended) or '无'}"
                case "tag":
                    contact = await self._customer(session, actor, args, 2)
                    return (await self.tag(session, contact, args[1], now))[1]
                case "handoff":
                    contact = await self._customer(session, actor, args, 1)
                    return await self.take_over(session, actor, contact, now)
                case "release":
                    contact = await self._customer(session, actor, args, 1)
                    return await self.release(session, contact, now)
                case "help":
                    return HELP
            raise CommandError(f"未知命令 /{name}。\n{HELP}")
        except CommandError as exc:
            return str(exc)

    async def _customer(self, session: AsyncSession, actor: StaffActor, args: list[str], count: int) -> Contact:
        if len(args) < count:
            raise CommandError(f"参数不足。\n{HELP}")
        contact = await repo.find_contact(session, args[0], actor.channel)
        if contact is None:
            raise CommandError(f"找不到客户 {args[0]!r} — 用客户编号、平台 id 或昵称")
        return contact

    # --- operations the console calls too (inside the caller's transaction) ---

    async def tag(self, session: AsyncSession, contact: Contact, tag: str, now: datetime) -> tuple[bool, str]:
        """Tag the customer (journeys triggered by the tag start); whether it was new, and a sentence."""
        if not await self.contacts.add_tag(session, contact, tag, now):
            return False, f"{contact.name} 已有标签 {tag}"
        return True, f"已给 {contact.name} 打上标签 {tag}"

    async def take_over(self, session: AsyncSession, actor: StaffActor, contact: Contact, now: datetime) -> str:
        until = (await self.handoff.join(session, contact, actor.key, now)).astimezone(self.zone)
        return f"已接管 {contact.name} 的会话，机器人暂停回复至 {until:%m-%d %H:%M}（/release 恢复）"

    async def release(self, session: AsyncSession, contact: Contact, now: datetime) -> str:
        await self.handoff.release(session, contact, now)
        return f"已把 {contact.name} 的会话交还给机器人"

    async def sop(self, session: AsyncSession, actor: StaffActor, args: list[str], now: datetime) -> str:
        if len(args) != 2:
            raise CommandError("用法：/sop <journey>[.<step>] <customer>，例如 /sop new_customer.day3_followup 林小姐")
        target, customer = args
        journey_id, _, step_id = target.partition(".")
        self.journey(journey_id)
        contact = await self._customer(session, actor, [customer], 1)
        return await self.trigger(session, actor, contact, journey_id, step_id or None, now)

    def journey(self, journey_id: str) -> Journey:
        journey = self.library.journeys.get(journey_id)
        if journey is None:
            raise CommandError(f"没有旅程 {journey_id!r}；可用：{', '.join(sorted(self.library.journeys))}")
        return journey

    def step(self, journey: Journey, step_id: str) -> Step:
        step = journey.step(step_id)
        if step is None:
            steps = ", ".join(s.id for s in journey.steps)
            raise CommandError(f"旅程 {journey.id} 没有步骤 {step_id!r}；可用：{steps}")
        return step

    async def trigger(self, session: AsyncSession, actor: StaffActor, contact: Contact, journey_id: str,
                      step_id: str | None, now: datetime) -> str:
        """Restart a journey for the customer, or schedule one of its steps now (the policy still decides)."""
        journey = self.journey(journey_id)
        if contact.opted_out or contact.churned:
            raise CommandError(f"{contact.name} 已退订或流失，不能再触达")
        if not step_id:
            await self.contacts.runner.enrol(session, contact, journey, now, restart=True)
            return f"已让 {contact.name} 从头开始旅程 {journey.id}（{journey.title}）"
        self.step(journey, step_id)
        key = f"manual:{journey_id}.{step_id}:{contact.id}:{now.isoformat()}:{actor.key}"
        await repo.schedule_touch(session, contact_id=contact.id, enrolment_id=None, journey_id=journey_id,
                                  step_id=step_id, idempotency_key=key, due_at=now, triggered_by=actor.key,
                                  created_at=now)
        return f"已安排 {journey_id}.{step_id} 发给 {contact.name}（仍受免打扰规则约束）"

    async def why(self, session: AsyncSession, actor: StaffActor, args: list[str]) -> str:
        contact = await self._customer(session, actor, args, 1)
        return format_decisions(contact, await repo.recent_decisions(session, contact.id), self.zone)


# what a touch decision and its reason code mean, for guides and operators
DECISION_TEXT = {"sent": "已发送", "deferred": "延后", "dropped": "不发", "skipped": "跳过", "cancelled": "取消",
                 "awaiting_guide": "待导购确认", "send": "可以发送", "defer": "延后", "drop": "不发"}
REASON_TEXT = {
    "ok": "符合频次、间隔、免打扰时段和发送窗口",
    "reply": "回应顾客自己的动作，不计入频次",
    "guide_bypass": "导购手动触发，按设置不受频次限制",
    "opted_out": "顾客已退订",
    "churned": "顾客已删除好友、离开或拉黑",
    "expired": "已过期，不再补发",
    "lower_priority": "有更优先的消息要发，这条稍后",
    "no_allowed_time": "发送窗口总落在免打扰时段内，无法发送",
    "quiet_hours": "免打扰时段",
    "weekday": "当天不是发送日",
    "outside_window": "不在这一步的发送窗口内",
    "cap_day": "已达每日触达上限",
    "cap_week": "已达 7 天触达上限",
    "cap_month": "已达每月触达上限",
    "min_gap": "距上次主动触达太近",
    "live_conversation": "顾客正在聊天，等对话安静下来",
    "channel_window_closed": "渠道回复窗口已关闭（顾客太久没有发消息）",
    "channel_window_full": "渠道回复窗口内的条数已用完",
    "channel_quota_day": "平台每日配额已用完",
    "channel_quota_month": "平台每月配额已用完",
    "condition_false": "条件不满足，跳过",
    "too_many_attempts": "多次处理失败，已放弃",
    "script_removed": "话术已删除",
    "script_error": "话术出错",
    "enrolment_ended": "旅程已结束",
    "completed": "旅程已完成",
}


def decision_text(decision: str) -> str:
    return DECISION_TEXT.get(decision, decision)


def reason_text(reason: str) -> str:
    """The Chinese sentence for a policy or scheduler reason code (the code itself when unknown)."""
    return REASON_TEXT.get(reason, reason)


def format_decisions(contact: Contact, decisions: Sequence[TouchLog], zone: ZoneInfo) -> str:
    """Newest first: local time (the customer's zone when known), journey.step, decision, reason in Chinese."""
    if not decisions:
        return f"{contact.name}（#{contact.id}）还没有触达记录"
    local = ZoneInfo(contact.timezone) if contact.timezone else zone
    lines = [f"{contact.name}（#{contact.id}）最近的触达决策（{local.key} 时间）："]
    for row in decisions:
        lines.append(f"{row.at.astimezone(local):%Y-%m-%d %H:%M}  {row.journey_id}.{row.step_id}  "
                     f"{decision_text(row.decision)}  {reason_text(row.reason)}")
    return "\n".join(lines)
