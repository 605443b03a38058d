"""Console transport: `siyu chat`, a REPL where you are a customer, or a guide after `/as guide`."""
from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TextIO

from bot.clock import Clock
from bot.events import Action, ActionKind, ChatType, Event, EventKind, Profile, Role
from bot.transport import FOREVER, DedupesRepeats

CHANNEL = "console"
BANNER = """siyu console — 你现在是顾客「{customer}」。直接输入消息聊天。
  /as guide     切换为导购（可用 /sop /why /help 等命令）
  /as customer  切回顾客
  /quit         退出"""


class ConsoleChat(DedupesRepeats):
    """Reads lines from stdin without blocking the event loop; prints what the bot says to either persona."""

    channel = CHANNEL

    def __init__(self, handle: Callable[[Event], Awaitable[None]], clock: Clock, guide_id: str,
                 customer_id: str = "console-customer", customer_name: str = "访客",
                 out: TextIO | None = None) -> None:
        self.handle = handle
        self.clock = clock
        self.guide_id = guide_id
        self.customer_id = customer_id
        self.customer_name = customer_name
        self.out = out or sys.stdout
        self.persona = "customer"

    def repeat_window(self, action: Action) -> timedelta | None:
        """A line printed again would show twice; anything but a message prints nothing."""
        return None if action.kind is ActionKind.SAY else FOREVER

    async def deliver(self, action: Action) -> None:
        if action.kind is not ActionKind.SAY:
            return  # the console has no groups to moderate
        who = "导购" if action.address.chat_id == self.guide_id else "顾客"
        for line in action.text.splitlines() or [""]:
            print(f"  siyu → {who}: {line}", file=self.out, flush=True)

    async def run(self, read_line: Callable[[], Awaitable[str | None]]) -> None:
        """The REPL; `read_line` returns None at end of input."""
        print(BANNER.format(customer=self.customer_name), file=self.out, flush=True)
        await self.handle(Event(EventKind.CONTACT_ADDED, CHANNEL, self.customer_id, self.clock.now(),
                                profile=Profile(name=self.customer_name, source="命令行演示")))
        while (line := await read_line()) is not None:
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line.startswith("/as "):
                self.persona = "guide" if line.split()[1] == "guide" else "customer"
                print(f"  （现在是{'导购' if self.persona == 'guide' else '顾客'}）", file=self.out, flush=True)
                continue
            sender, role = ((self.guide_id, Role.STAFF) if self.persona == "guide"
                            else (self.customer_id, Role.CUSTOMER))
            await self.handle(Event(EventKind.MESSAGE, CHANNEL, sender, self.clock.now(), ChatType.DIRECT,
                                    text=line, message_id=uuid.uuid4().hex, sender_role=role))


async def stdin_line() -> str | None:
    """One line from stdin, read in a thread so the scheduler keeps running meanwhile."""
    line = await asyncio.to_thread(sys.stdin.readline)
    return line if line else None
