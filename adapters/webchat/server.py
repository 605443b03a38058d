"""Web chat transport: translates WebSocket frames into Events and queued Actions into frames."""
from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from aiohttp import WSMsgType, web

from bot.clock import Clock
from bot.events import Action, ActionKind, ChatType, Event, EventKind, Profile, Role
from bot.plugin import AdapterStore
from bot.transport import EventHandler

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
CHANNEL = "webchat"


class WebChat:
    """Serves `/` (the page) and `/ws`; delivers bot messages to every open socket of a chat."""

    channel = CHANNEL

    def __init__(self, handle: EventHandler, store: AdapterStore, clock: Clock, demo_group: str) -> None:
        self.handle = handle
        self.store = store
        self.clock = clock
        self.demo_group = demo_group
        self._sockets: dict[tuple[ChatType, str], set[web.WebSocketResponse]] = defaultdict(set)
        self._who: dict[web.WebSocketResponse, str] = {}
        # this page is the platform for the demo group, so it enforces what the guard decides
        self._muted_until: dict[tuple[str, str], datetime] = {}
        self._removed: set[tuple[str, str]] = set()

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._websocket)

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def deliver(self, action: Action) -> None:
        key = (action.address.chat_type, action.address.chat_id)
        if action.kind is ActionKind.SAY:
            await self._broadcast(key, {"type": "message", "id": action.ref, "from": "bot", "text": action.text,
                                        "at": action.at.isoformat()})
            return  # history on reconnect covers sockets that miss this
        member = action.target_id or ""
        if action.kind is ActionKind.TAG:
            return  # tags live in siyu's storage; the page has nowhere to write them
        if action.kind is ActionKind.DELETE:
            await self._broadcast(key, {"type": "deleted", "id": f"in:{action.target_ref}"})
        elif action.kind is ActionKind.MUTE and action.until is not None:
            self._muted_until[(action.address.chat_id, member)] = action.until
            await self._broadcast(key, {"type": "system", "text": action.text})
        elif action.kind is ActionKind.REMOVE:
            self._removed.add((action.address.chat_id, member))
            await self._broadcast(key, {"type": "system", "text": action.text})
            for ws in [w for w in self._sockets.get(key, ()) if self._who.get(w) == member]:
                await ws.close()

    async def _broadcast(self, key: tuple[ChatType, str], frame: dict[str, object]) -> None:
        for ws in list(self._sockets.get(key, ())):
            if not ws.closed:
                await ws.send_json(frame)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        key: tuple[ChatType, str] | None = None
        identity = ""
        role = Role.CUSTOMER
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                    kind = frame["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send_json({"type": "error", "text": "expected JSON with a 'type'"})
                    continue
                if kind == "join":
                    joined = await self._join(ws, frame)
                    if joined is None:
                        continue
                    if key is not None:
                        self._sockets[key].discard(ws)
                    key, identity, role, event = joined
                    self._who[ws] = identity
                    # register first, then history, then the event: its replies arrive live, after history
                    self._sockets[key].add(ws)
                    await self._send_history(ws, key, str(frame.get("role") or "customer"), identity)
                    if event is not None:
                        await self.handle(event)
                elif kind == "say" and key is not None:
                    await self._say(key, identity, role, frame)
                else:
                    await ws.send_json({"type": "error", "text": "join first: {type: join, role, name}"})
        finally:
            if key is not None:
                self._sockets[key].discard(ws)
            self._who.pop(ws, None)
        return ws

    async def _join(self, ws: web.WebSocketResponse, frame: dict[str, object]
                    ) -> tuple[tuple[ChatType, str], str, Role, Event | None] | None:
        name = str(frame.get("name", "")).strip()[:64]
        wanted = frame.get("role")
        if not name:
            await ws.send_json({"type": "error", "text": "please enter a name"})
            return None
        now = self.clock.now()
        if wanted == "guide":
            if not await self.store.is_staff(CHANNEL, name):
                await ws.send_json({"type": "error", "text": f"'{name}' is not a configured guide "
                                                             "(see staff in config.yaml)"})
                return None
            return (ChatType.DIRECT, name), name, Role.STAFF, None
        if wanted == "member":
            if (self.demo_group, name) in self._removed:
                await ws.send_json({"type": "error", "text": "you were removed from this group"})
                return None
            return (ChatType.GROUP, self.demo_group), name, Role.CUSTOMER, Event(
                EventKind.JOINED_GROUP, CHANNEL, name, now, ChatType.GROUP, self.demo_group,
                profile=Profile(name=name))
        return (ChatType.DIRECT, name), name, Role.CUSTOMER, Event(
            EventKind.CONTACT_ADDED, CHANNEL, name, now, profile=Profile(name=name, source="官网在线咨询"))

    async def _send_history(self, ws: web.WebSocketResponse, key: tuple[ChatType, str], role: str,
                            name: str) -> None:
        history = await self.store.history(CHANNEL, *key)
        await ws.send_json({"type": "joined", "role": role, "name": name, "chat": key[1], "history": [
            {"id": h.ref, "from": h.sender, "text": h.text, "at": h.at.isoformat()} for h in history]})

    async def _say(self, key: tuple[ChatType, str], identity: str, role: Role, frame: dict[str, object]) -> None:
        text = str(frame.get("text", "")).strip()[:2000]
        if not text:
            return
        message_id = str(frame.get("id") or uuid.uuid4())
        now = self.clock.now()
        chat_type, chat_id = key
        if chat_type is ChatType.GROUP:
            muted = self._muted_until.get((chat_id, identity))
            if muted is not None and muted > now:
                return  # the platform swallows a muted member's messages
            await self._broadcast(key, {"type": "message", "id": f"in:{message_id}", "from": identity,
                                        "text": text, "at": now.isoformat()})
        mentions = "@bot" in text or "@机器人" in text or bool(frame.get("mention"))
        text = text.replace("@bot", "").replace("@机器人", "").strip() or text
        await self.handle(Event(EventKind.MESSAGE, CHANNEL, identity, now, chat_type,
                                chat_id if chat_type is ChatType.GROUP else None, text=text,
                                message_id=message_id, sender_role=role, mentions_bot=mentions))
