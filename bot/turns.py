"""One conversation at a time: a customer's messages are handled in the order they arrived.

In this process, an asyncio lock per conversation (FIFO, so arrival order holds) that lives only
while someone holds or waits for it, like Rasa's lock store. Across processes, the engine also takes
a PostgreSQL advisory lock on the same key inside the event's transaction (SQLite has one writer
at a time anyway). Different conversations never wait for each other.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bot.conversation_log import chat_of
from bot.events import Event


def conversation_key(event: Event) -> str:
    """The conversation an event belongs to, across channels: `channel:group` or `channel:person`."""
    return f"{event.channel}:{event.chat_type.value}:{chat_of(event)}"


def advisory_key(key: str) -> int:
    """A signed 64-bit number for `pg_advisory_xact_lock`, the same in every process."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ConversationTurns:
    """Per-conversation locks that exist only while in use."""

    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Wait for the conversation's earlier events (in arrival order), then hold it."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[key]

    def __len__(self) -> int:
        return len(self._turns)
