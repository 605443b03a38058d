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
                    if not await self.contacts.add_tag(session, contact, args[1], now):
                        return f"{contact.name} 已有标签 {args[1]}"
                    return f"已给 {contact.name} 打上标签 {args[1]}"
                case "handoff":
                    contact = await self._customer(session, actor, args, 1)
                    until = self.handoff.take_over(contact, now).astimezone(self.zone)
                    return f"已接管 {contact.name} 的会话，机器人暂停回复至 {until:%m-%d %H:%M}（/release 恢复）"
                case "release":
                    contact = await self._customer(session, actor, args, 1)
                    self.handoff.release(contact)
                    return f"已把 {contact.name} 的会话交还给机器人"
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

    async def sop(self, session: AsyncSession, actor: StaffActor, args: list[str], now: datetime) -> str:
        if len(args) != 2:
            raise CommandError("用法：/sop <journey>[.<step>] <customer>，例如 /sop new_customer.day3_followup 林小姐")
        target, customer = args
        journey_id, _, step_id = target.partition(".")
        journey = self.library.journeys.get(journey_id)
        if journey is None:
            raise CommandError(f"没有旅程 {journey_id!r}；可用：{', '.join(sorted(self.library.journeys))}")
        contact = await self._customer(session, actor, [customer], 1)
        if contact.opted_out or contact.churned:
            raise CommandError(f"{contact.name} 已退订或流失，不能再触达")
        if not step_id:
            await self.contacts.runner.enrol(session, contact, journey, now, restart=True)
            return f"已让 {contact.name} 从头开始旅程 {journey.id}（{journey.title}）"
        if journey.step(step_id) is None:
            steps = ", ".join(s.id for s in journey.steps)
            raise CommandError(f"旅程 {journey_id} 没有步骤 {step_id!r}；可用：{steps}")
        key = f"manual:{journey_id}.{step_id}:{contact.id}:{now.isoformat()}:{actor.key}"
        await repo.schedule_touch(session, contact_id=contact.id, enrolment_id=None, journey_id=journey_id,
                                  step_id=step_id, idempotency_key=key, due_at=now, triggered_by=actor.key,
                                  created_at=now)
        return f"已安排 {journey_id}.{step_id} 发给 {contact.name}（仍受免打扰规则约束）"

    async def why(self, session: AsyncSession, actor: StaffActor, args: list[str]) -> str:
        contact = await self._customer(session, actor, args, 1)
        return format_decisions(contact, await repo.recent_decisions(session, contact.id), self.zone)


def format_decisions(contact: Contact, decisions: Sequence[TouchLog], zone: ZoneInfo) -> str:
    """Newest first: local time (the customer's zone when known), journey.step, decision, reason."""
    if not decisions:
        return f"{contact.name}（#{contact.id}）还没有触达记录"
    local = ZoneInfo(contact.timezone) if contact.timezone else zone
    lines = [f"{contact.name}（#{contact.id}）最近的触达决策（{local.key} 时间）："]
    for row in decisions:
        lines.append(f"{row.at.astimezone(local):%Y-%m-%d %H:%M}  {row.journey_id}.{row.step_id}  {row.decision}  "
                     f"{row.reason} — {row.detail}")
    return "\n".join(lines)
