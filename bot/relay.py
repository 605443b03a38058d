"""Delivery to a connection held by another process, through PostgreSQL's own LISTEN/NOTIFY.

Web chat sockets live in one `siyu serve` process, while the reply for one may be delivered by any
process sharing the database (a scheduler pass, a guide's command). The delivering process notifies
inside the transaction that marks the message delivered — PostgreSQL sends the notification exactly
when that commits — and every process holding a connection for the chat shows it. The page drops a
message id it has shown, so a chat open in several processes at once sees each message once.
A group member's own message takes the same way, announced in the transaction that stores it: a
page is the group's platform, so the members connected to other processes see it once it commits,
and in commit order with the replies and the guard's actions about it.
No broker: the listening connection is one asyncpg connection per process. SQLite is one process.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery import Publisher
from bot.events import Action, ActionKind, Address, ChatType, Event
from bot.transport import ConnectedHere, MemberMessage, Transport
from storage.db import Database
from storage.models import Message

log = logging.getLogger(__name__)
CHANNEL = "siyu_relay"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes; a longer one travels as its stored message id only
RECONNECT_SECONDS = 1.0

Load = Callable[[int], Awaitable[Action | None]]  # a message id → its action, read from storage


def _encode(origin: str, action: Action) -> str:
    fields: dict[str, object] = {
        "o": origin, "k": action.kind.value, "c": action.address.channel, "t": action.address.chat_type.value,
        "chat": action.address.chat_id, "text": action.text, "ref": action.ref,
        "at": action.at.isoformat(), "target": action.target_id,
        "target_ref": action.target_ref, "until": action.until.isoformat() if action.until else None,
        "sender": action.sender_id, "guide": action.from_guide}
    payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode()) <= MAX_PAYLOAD:
        return payload
    return json.dumps({"o": origin, "c": action.address.channel, "t": action.address.chat_type.value,
                       "chat": action.address.chat_id, "id": action.ref}, ensure_ascii=False)


def _encode_message(origin: str, message: MemberMessage, stored_id: int) -> str:
    """A member's message: `m` tells it from an action; too long, it travels as its stored id (and name)."""
    address = message.address
    head = {"o": origin, "m": 1, "c": address.channel, "t": address.chat_type.value, "chat": address.chat_id,
            "name": message.name}
    payload = json.dumps({**head, "ref": message.ref, "sender": message.sender_id, "text": message.text,
                          "at": message.at.isoformat()}, ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode()) <= MAX_PAYLOAD:
        return payload
    return json.dumps({**head, "id": stored_id}, ensure_ascii=False)


def _decode_message(fields: dict[str, object]) -> MemberMessage:
    return MemberMessage(Address(str(fields["c"]), ChatType(str(fields["t"])), str(fields["chat"])),
                         str(fields["ref"]), str(fields["sender"]), str(fields["text"]),
                         datetime.fromisoformat(str(fields["at"])), _opt(fields.get("name")))


def _decode(fields: dict[str, object]) -> Action:
    def when(value: object) -> datetime | None:
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    return Action(ActionKind(str(fields["k"])), Address(str(fields["c"]), ChatType(str(fields["t"])),
                                                         str(fields["chat"])),
                  str(fields["text"]), ref=str(fields["ref"]), at=datetime.fromisoformat(str(fields["at"])),
                  target_id=_opt(fields.get("target")), target_ref=_opt(fields.get("target_ref")),
                  until=when(fields.get("until")), sender_id=_opt(fields.get("sender")),
                  from_guide=fields.get("guide") is True)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


class Relay(Publisher):
    """Publishes delivered actions and group messages of `ConnectedHere` transports, and shows those of
    other processes here."""

    def __init__(self, db: Database, origin: str, transports: Mapping[str, Transport], load: Load) -> None:
        self.db = db
        self.origin = origin  # this process: it delivered its own actions already
        self.transports = transports
        self.load = load
        self.enabled = db.dialect == "postgresql"
        self._connection: asyncpg.Connection | None = None
        self._heard: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    async def publish(self, session: AsyncSession, action: Action) -> None:
        """Tell the other processes, inside the transaction that records the delivery."""
        if self.enabled:
            await session.execute(select(func.pg_notify(CHANNEL, _encode(self.origin, action))))

    async def publish_message(self, session: AsyncSession, event: Event, stored_id: int) -> None:
        """Tell the other processes about a member's group message, inside the transaction that stores it."""
        if not (self.enabled and event.chat_id and event.message_id
                and isinstance(self.transports.get(event.channel), ConnectedHere)):
            return  # a platform of its own shows its members each other's messages
        message = MemberMessage(Address(event.channel, event.chat_type, event.chat_id), event.message_id,
                                event.sender_id, event.text, event.at, event.profile.name)
        await session.execute(select(func.pg_notify(CHANNEL, _encode_message(self.origin, message, stored_id))))

    async def listen(self) -> None:
        """Start showing what other processes deliver (PostgreSQL only)."""
        if not self.enabled or self._worker is not None:
            return
        self._closing = False
        await self._connect()
        self._worker = asyncio.create_task(self._show_heard())

    async def close(self) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def _connect(self) -> None:
        url = make_url(self.db.url).set(drivername="postgresql")
        connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        await connection.add_listener(CHANNEL, self._on_notify)
        connection.add_termination_listener(self._on_lost)
        self._connection = connection

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._heard.put_nowait(payload)  # one worker shows them in the order they were committed

    def _on_lost(self, _connection: object) -> None:
        if not self._closing:
            log.warning("relay: the listening connection to PostgreSQL was lost; reconnecting")
            asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closing:
            try:
                await self._connect()
                return
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("relay: cannot listen yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _show_heard(self) -> None:
        while True:
            payload = await self._heard.get()
            try:
                await self._show(json.loads(payload))
            except Exception as exc:  # one bad notification must not stop the others
                log.warning("relay: could not show a relayed action or message (%s)", type(exc).__name__)

    async def _show(self, fields: dict[str, object]) -> None:
        if fields.get("o") == self.origin:
            return
        transport = self.transports.get(str(fields["c"]))
        if not isinstance(transport, ConnectedHere):
            return
        address = Address(str(fields["c"]), ChatType(str(fields["t"])), str(fields["chat"]))
        if not transport.connected_here(address):
            return
        if fields.get("m"):
            message = _decode_message(fields) if "text" in fields else await self._stored_message(fields)
            if message is not None:
                await transport.show(message)
            return
        action = _decode(fields) if "k" in fields else await self.load(int(str(fields["id"])))
        if action is not None:
            await transport.deliver(action)

    async def _stored_message(self, fields: dict[str, object]) -> MemberMessage | None:
        """A member's message too long for a notification, read back from storage."""
        async with self.db.session() as session:
            row = await session.get(Message, int(str(fields["id"])))
        if row is None or row.platform_ref is None:
            return None
        return MemberMessage(Address(row.channel, ChatType(row.chat_type), row.chat_id), row.platform_ref,
                             row.sender_id, row.text, row.created_at, _opt(fields.get("name")))
