"""Processing stored platform callbacks: each becomes Events exactly once, even across restarts."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.clock import Clock
from bot.events import Event
from storage import repo
from storage.db import Database

log = logging.getLogger(__name__)
Translator = Callable[[str], Awaitable[list[Event]]]


class InboxProcessor:
    """Turns inbox rows into Events through each channel's translator, then marks them processed."""

    def __init__(self, db: Database, clock: Clock, handle: Callable[[Event], Awaitable[None]]) -> None:
        self.db = db
        self.clock = clock
        self.handle = handle
        self.translators: dict[str, Translator] = {}

    async def process(self) -> int:
        if not self.translators:
            return 0
        async with self.db.session() as session:
            items = await repo.unprocessed_inbox(session, list(self.translators))
        done = 0
        for item in items:
            try:
                events = await self.translators[item.channel](item.payload)
                for n, event in enumerate(events):
                    # a stable id per event: if we crash before marking the row, the replay is a no-op
                    await self.handle(replace(event, message_id=event.message_id or f"inbox:{item.id}:{n}"))
                values = {"processed_at": self.clock.now(), "error": None}
                done += 1
            except Exception as exc:  # keep the item for another try; a bad one stops after 5
                log.exception("inbox item %s (%s) failed", item.id, item.channel)
                values = {"error": f"{type(exc).__name__}: {exc}"}
            async with self.db.session() as session, session.begin():
                row = await session.get(type(item), item.id)
                if row is not None:
                    for key, value in values.items():
                        setattr(row, key, value)
                    row.attempts += 1
        return done
