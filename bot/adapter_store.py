"""The storage port adapters get (bot.plugin.AdapterStore), each call one short transaction."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from bot.clock import Clock
from bot.events import ChatType
from bot.guard_history import visible_history
from bot.plugin import HistoryLine, LoginResult, StaffIdentity, Standing
from bot.staff_accounts import StaffAccounts
from storage import repo
from storage.db import Database
from storage.models import Message


class AdapterStorage:
    """What adapters may remember and look up, and nothing else of storage."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.accounts = StaffAccounts(db, clock)

    async def get_value(self, key: str) -> str | None:
        async with self.db.session() as session:
            return await repo.get_value(session, key)

    async def set_value(self, key: str, value: str) -> None:
        async with self.db.session() as session, session.begin():
            await repo.set_value(session, key, value, self.clock.now())

    async def remember_inbound(self, channel: str, key: str, payload: str) -> bool:
        async with self.db.session() as session, session.begin():
            return await repo.remember_inbound(session, channel, key, payload, self.clock.now())

    async def delivery_window(self, channel: str, chat_id: str) -> tuple[datetime | None, int]:
        async with self.db.session() as session:
            return await repo.delivery_window(session, channel, chat_id)

    async def assisted_send_times(self, channel: str, customer: str, since: datetime) -> list[datetime]:
        async with self.db.session() as session:
            return await repo.assisted_send_times(session, channel, customer, since)

    async def group_members(self, channel: str, group: str) -> set[str]:
        async with self.db.session() as session:
            return await repo.current_members(session, channel, group)

    async def history(self, channel: str, chat_type: ChatType, chat_id: str) -> Sequence[HistoryLine]:
        async with self.db.session() as session:
            rows = await repo.conversation(session, channel, chat_type.value, chat_id)
        return visible_history(rows)  # what the chat showed: deleted messages stay gone

    async def is_staff(self, channel: str, external_id: str) -> bool:
        async with self.db.session() as session:
            return await repo.staff_by_identity(session, channel, external_id) is not None

    async def standing(self, channel: str, group: str, member: str) -> Standing:
        actions = select(Message.id, Message.action, Message.until).where(
            Message.channel == channel, Message.chat_type == ChatType.GROUP.value, Message.chat_id == group,
            Message.direction == "out", Message.target_id == member, Message.delivered_at.isnot(None))
        async with self.db.session() as session:
            removed = await session.scalar(actions.where(Message.action == "remove").limit(1))
            latest = (await session.execute(actions.where(Message.action.in_(("mute", "unmute")))
                                            .order_by(Message.id.desc()).limit(1))).first()
        if latest is None:
            return Standing(removed is not None)
        return Standing(removed is not None, latest.id, latest.until if latest.action == "mute" else None)

    async def staff_name(self, channel: str, sender_id: str) -> str | None:
        async with self.db.session() as session:
            staff = await repo.staff_by_identity(session, channel, sender_id)
            # a guide with no identity on this channel replies from the console under their config id
            rows = [staff] if staff is not None else await repo.staff_identities(session, sender_id)
        return rows[0].name if rows else None

    async def keep_value(self, key: str, value: str) -> str:
        async with self.db.session() as session, session.begin():
            return await repo.insert_value_if_absent(session, key, value, self.clock.now())

    async def staff_login(self, staff_key: str, password: str, client: str) -> LoginResult:
        return await self.accounts.login(staff_key, password, client)

    async def staff_password_stamp(self, staff_key: str) -> str | None:
        return await self.accounts.password_stamp(staff_key)

    async def staff_identity(self, staff_key: str, channel: str) -> StaffIdentity | None:
        async with self.db.session() as session:
            rows = await repo.staff_identities(session, staff_key)
        # only a configured identity on this channel: the engine knows staff by exactly those
        here = next((row for row in rows if row.channel == channel), None)
        return StaffIdentity(staff_key, here.external_id, here.name) if here else None
