"""Web chat transport: translates WebSocket frames into Events and queued Actions into frames.

Who a socket is comes from proof, never from what it types: customers and group members from a
signed session the page keeps, guides from the login cookie (see sessions.py and login.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import WSMsgType, web
from pydantic import SecretStr

from adapters.webchat import CHANNEL
from adapters.webchat.frames import FrameError, JoinFrame, SayFrame, parse_frame
from adapters.webchat.login import StaffLogin
from adapters.webchat.sessions import Keys, customer_of, new_customer_token
from bot.clock import Clock
from bot.events import Action, ActionKind, Address, ChatType, Event, EventKind, Profile, Role
from bot.plugin import AdapterStore
from bot.transport import FOREVER, ConnectedHere, DedupesRepeats, EventHandler, MemberMessage

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
MAX_FRAME_BYTES = 1024 * 1024  # the protocol's cap: a bigger frame closes the socket (1009)
MAX_NAME = 64
MESSAGE_ID_WIDTH = 191  # processed_inbound.message_id; a longer id would be dropped as unstorable
NAME_KEY = "webchat:name:"  # kv: a customer's display name, for group history after a restart

NEED_NAME = "请先输入昵称"
JOIN_FIRST = "请先进入聊天：选择身份、填写昵称后点「进入」"
REMOVED = "你已被移出本群"
FAILED = "这条消息没有处理成功，请稍后再试"
UNNAMED = {ChatType.GROUP: "群成员", ChatType.DIRECT: "导购"}  # someone whose display name was never stored


@dataclass(frozen=True)
class Joined:
    """Who a socket proved to be, and which chat it shows."""

    chat: tuple[ChatType, str]
    identity: str  # the Event's sender_id: a customer id (c_…) or the guide's web chat identity
    name: str      # what the page shows for them
    role: Role
    page_role: str  # customer | member | guide


class WebChat(DedupesRepeats, ConnectedHere):
    """Serves `/` (the page), `/ws` and the guide login; delivers bot messages to every open socket of a chat."""

    channel = CHANNEL

    def __init__(self, handle: EventHandler, store: AdapterStore, clock: Clock, demo_group: str,
                 secret: SecretStr | None = None) -> None:
        self.handle = handle
        self.store = store
        self.clock = clock
        self.demo_group = demo_group
        self.keys = Keys(store, secret)
        self.login = StaffLogin(store, clock, self.keys)
        self._sockets: dict[tuple[ChatType, str], set[web.WebSocketResponse]] = defaultdict(set)
        self._who: dict[web.WebSocketResponse, Joined] = {}
        self._minted: dict[web.WebSocketResponse, tuple[str, str]] = {}  # the one new customer a socket made
        self._names: dict[str, str] = {}  # customer id → display name, as far as this process knows
        # this page is the platform for the demo group, so it enforces what the guard decides, whichever
        # process delivered it: learnt from deliveries here and relayed ones, and from storage on joining
        self._mutes: dict[tuple[str, str], tuple[int, datetime | None]] = {}  # latest (outbox id, muted until)
        self._removed: set[tuple[str, str]] = set()

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._websocket)
        self.login.install(app)

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    # --- bot → page ---

    def repeat_window(self, action: Action) -> timedelta | None:
        """The page drops a message id it has shown, and the history a reconnect brings carries the same ids."""
        return FOREVER

    def connected_here(self, address: Address) -> bool:
        """Whether a socket of this chat is open in this process (another process relays to it otherwise)."""
        return any(not ws.closed for ws in self._sockets.get((address.chat_type, address.chat_id), ()))

    async def deliver(self, action: Action) -> None:
        key = (action.address.chat_type, action.address.chat_id)
        if action.kind is ActionKind.SAY:
            sender = await self._guide(action.sender_id) if action.from_guide else {"from": "bot"}
            await self._broadcast(key, {"type": "message", "id": action.ref, **sender, "text": action.text,
                                        "at": action.at.isoformat()})
            return  # history on reconnect covers sockets that miss this
        member = action.target_id or ""
        if action.kind is ActionKind.TAG:
            return  # tags live in siyu's storage; the page has nowhere to write them
        if action.kind is ActionKind.DELETE:
            await self._broadcast(key, {"type": "deleted", "id": f"in:{action.target_ref}"})
        elif action.kind is ActionKind.MUTE and action.until is not None:
            self._mutes[(action.address.chat_id, member)] = (_outbox_id(action.ref), action.until)
            await self._broadcast(key, {"type": "system", "text": action.text})
        elif action.kind is ActionKind.UNMUTE:
            self._mutes[(action.address.chat_id, member)] = (_outbox_id(action.ref), None)
            await self._broadcast(key, {"type": "system", "text": action.text})
        elif action.kind is ActionKind.REMOVE:
            self._removed.add((action.address.chat_id, member))
            await self._broadcast(key, {"type": "system", "text": action.text})
            for ws in [w for w in self._sockets.get(key, ()) if self._identity(w) == member]:
                await ws.close()

    async def show(self, message: MemberMessage) -> None:
        """A member's message another process received: shown here as that process's page showed it."""
        name = message.name or await self._member_name(message.sender_id)
        await self._broadcast((message.address.chat_type, message.address.chat_id),
                              _member_frame(message.ref, name, message.text, message.at), sender=message.sender_id)

    async def _guide(self, sender_id: str | None, known: dict[str, str] | None = None) -> dict[str, object]:
        """How the page names a guide's own reply: `from: guide` and their display name (`known`: names
        already looked up, for a history with many replies)."""
        known = {} if known is None else known
        if sender_id and sender_id not in known:
            known[sender_id] = await self.store.staff_name(CHANNEL, sender_id) or UNNAMED[ChatType.DIRECT]
        return {"from": "guide", "name": known.get(sender_id or "", UNNAMED[ChatType.DIRECT])}

    def _identity(self, ws: web.WebSocketResponse) -> str | None:
        joined = self._who.get(ws)
        return joined.identity if joined else None

    async def _broadcast(self, key: tuple[ChatType, str], frame: dict[str, object], sender: str | None = None) -> None:
        """Send to every socket of a chat; `mine` tells each page whether the message is its own."""
        for ws in list(self._sockets.get(key, ())):
            if ws.closed:
                continue
            try:
                await ws.send_json({**frame, "mine": sender is not None and self._identity(ws) == sender})
            except ConnectionResetError:
                pass  # that page is going away; its history shows the message when it comes back

    # --- page → bot ---

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    await self._on_frame(request, ws, parse_frame(msg.data))
                except FrameError as exc:
                    await _error(ws, str(exc))
                except Exception as exc:  # one bad frame must not end the socket (or take its history)
                    # the type only: the message of a storage error can quote the customer's text
                    log.warning("web chat: a frame failed (%s)", type(exc).__name__)
                    log.debug("web chat frame failure", exc_info=True)
                    await _error(ws, FAILED)
        finally:
            self._leave(ws, closing=True)
        return ws

    async def _on_frame(self, request: web.Request, ws: web.WebSocketResponse, frame: JoinFrame | SayFrame) -> None:
        if isinstance(frame, JoinFrame):
            await self._join(request, ws, frame)
            return
        joined = self._who.get(ws)
        if joined is None:
            await _error(ws, JOIN_FIRST)
            return
        await self._say(joined, frame)

    def _leave(self, ws: web.WebSocketResponse, closing: bool = False) -> None:
        if closing:
            self._minted.pop(ws, None)
        joined = self._who.pop(ws, None)
        if joined is not None:
            sockets = self._sockets[joined.chat]
            sockets.discard(ws)
            if not sockets:  # a chat nobody has open here costs nothing
                del self._sockets[joined.chat]

    async def _join(self, request: web.Request, ws: web.WebSocketResponse, frame: JoinFrame) -> None:
        session: str | None = None
        event: Event | None = None
        now = self.clock.now()
        if frame.role == "guide":
            guide = await self.login.guide(request)
            if isinstance(guide, str):
                await _error(ws, guide)
                return
            joined = Joined((ChatType.DIRECT, guide.platform_id), guide.platform_id, guide.name, Role.STAFF, "guide")
        else:
            name = _display_name(frame.name)
            if not name:
                await _error(ws, NEED_NAME)
                return
            customer, session = await self._customer(ws, frame.session)
            if frame.role == "member":
                if (self.demo_group, customer) in self._removed:
                    await _error(ws, REMOVED)
                    return
                joined = Joined((ChatType.GROUP, self.demo_group), customer, name, Role.CUSTOMER, "member")
                event = Event(EventKind.JOINED_GROUP, CHANNEL, customer, now, ChatType.GROUP, self.demo_group,
                              profile=Profile(name=name))
            else:
                joined = Joined((ChatType.DIRECT, customer), customer, name, Role.CUSTOMER, "customer")
                event = Event(EventKind.CONTACT_ADDED, CHANNEL, customer, now,
                              profile=Profile(name=name, source=frame.source or "官网在线咨询"))
            await self._remember_name(customer, name)
        self._leave(ws)
        # register first, then history, then the event: its replies arrive live, after history
        self._who[ws] = joined
        self._sockets[joined.chat].add(ws)
        # then what storage says of a member: a moderation action delivered from now on is relayed here
        if joined.page_role == "member" and not await self._in_good_standing(joined.identity):
            self._leave(ws)
            await _error(ws, REMOVED)
            return
        await self._send_history(ws, joined, session)
        if event is not None:
            await self._apply(event)

    async def _apply(self, event: Event) -> None:
        """Hand an event to the engine; a socket that closes meanwhile (or a server shutting down) cancels
        this handler, and must not cut the engine's transaction off halfway."""
        await asyncio.shield(self.handle(event))

    async def _customer(self, ws: web.WebSocketResponse, token: str | None) -> tuple[str, str]:
        """(customer id, token) the page proved with `token`, or a new customer when it proved nothing.

        A socket mints at most one new customer: rejoining without a session on the same socket is the
        same person, so one connection cannot become hundreds of customers (each with a hand-off note)."""
        signer = await self.keys.signer()
        customer = customer_of(signer, token)
        # a customer id is random with a prefix no staff identity needs; should one ever be staff, start afresh
        if customer is None or token is None or await self.store.is_staff(CHANNEL, customer):
            if ws not in self._minted:
                self._minted[ws] = new_customer_token(signer)
            return self._minted[ws]
        return customer, token

    async def _remember_name(self, customer: str, name: str) -> None:
        if self._names.get(customer) != name:
            self._names[customer] = name
            await self.store.set_value(NAME_KEY + customer, name)

    async def _in_good_standing(self, member: str) -> bool:
        """Learn what any process delivered about the member (False: removed): the newer mute or unmute
        of the one delivered here and the one storage has wins."""
        key = (self.demo_group, member)
        standing = await self.store.standing(CHANNEL, self.demo_group, member)
        if standing.removed:
            self._removed.add(key)
        if standing.mute_ref is not None and standing.mute_ref > self._mutes.get(key, (-1, None))[0]:
            self._mutes[key] = (standing.mute_ref, standing.muted_until)
        return key not in self._removed

    async def _member_name(self, sender: str, chat_type: ChatType = ChatType.GROUP) -> str:
        """A customer's display name as the page last stored it."""
        if sender not in self._names:
            stored = await self.store.get_value(NAME_KEY + sender)
            if stored is None:
                return UNNAMED[chat_type]
            self._names[sender] = stored
        return self._names[sender]

    async def _name_of(self, sender: str, joined: Joined) -> str:
        if sender == "bot" or sender == joined.identity:
            return "bot" if sender == "bot" else joined.name
        return await self._member_name(sender, joined.chat[0])

    async def _send_history(self, ws: web.WebSocketResponse, joined: Joined, session: str | None) -> None:
        history = await self.store.history(CHANNEL, *joined.chat)
        guides: dict[str, str] = {}
        frame: dict[str, object] = {
            "type": "joined", "role": joined.page_role, "name": joined.name,
            "chat": self.demo_group if joined.chat[0] is ChatType.GROUP else "",
            # moderation notices come as system lines where they happened (the store already left out
            # what the guard deleted and anything empty)
            "history": [{"id": h.ref, **(await self._guide(h.sender, guides) if h.from_guide
                                         else {"from": await self._name_of(h.sender, joined)}),
                         "mine": h.sender == joined.identity and not h.from_guide,
                         "text": h.text, "at": h.at.isoformat(), **({"notice": True} if h.notice else {})}
                        for h in history]}
        if session is not None:
            frame["session"] = session  # the page keeps it: the only way back to this history
        await ws.send_json(frame)

    async def _say(self, joined: Joined, frame: SayFrame) -> None:
        text = frame.text.strip()  # the engine caps the length for every channel, and notes the cut
        if not text:
            return
        message_id = scoped_message_id(joined.identity, frame.id)
        now = self.clock.now()
        chat_type, chat_id = joined.chat
        if chat_type is ChatType.GROUP:
            _, muted = self._mutes.get((chat_id, joined.identity), (0, None))
            if muted is not None and muted > now:
                return  # the platform swallows a muted member's messages
            # the members connected to other processes get it from the engine's transaction (bot/relay.py)
            await self._broadcast(joined.chat, _member_frame(message_id, joined.name, text, now),
                                  sender=joined.identity)
        mentions = "@bot" in text or "@机器人" in text or frame.mention
        text = text.replace("@bot", "").replace("@机器人", "").strip() or text
        await self._apply(Event(EventKind.MESSAGE, CHANNEL, joined.identity, now, chat_type,
                                chat_id if chat_type is ChatType.GROUP else None, text=text,
                                message_id=message_id, sender_role=joined.role, mentions_bot=mentions,
                                profile=Profile(name=joined.name)))


def scoped_message_id(sender: str, client_id: str | None) -> str:
    """The page's message id scoped to its sender: the engine drops a repeated (channel, message_id) as a
    redelivery, so two people choosing the same id must not collide. Fits the 191-character column."""
    client_id = client_id or uuid.uuid4().hex
    scoped = f"{sender}:{client_id}"
    if len(scoped) > MESSAGE_ID_WIDTH:
        scoped = f"{sender}:{hashlib.sha256(client_id.encode()).hexdigest()[:32]}"
    return scoped


def _member_frame(message_id: str, name: str, text: str, at: datetime) -> dict[str, object]:
    """A member's message as the page shows it; `in:` keeps its id apart from the outbox ids of bot messages,
    and is what a guard's delete names."""
    return {"type": "message", "id": f"in:{message_id}", "from": name, "text": text, "at": at.isoformat()}


def _outbox_id(ref: str) -> int:
    """The outbox id an action carries as its ref (0 for one that never was in the outbox)."""
    return int(ref) if ref.isdigit() else 0


def _display_name(raw: str) -> str:
    """The nickname as others see it: printable characters only, trimmed, at most MAX_NAME."""
    return "".join(ch for ch in raw if ch.isprintable()).strip()[:MAX_NAME]


async def _error(ws: web.WebSocketResponse, text: str) -> None:
    if not ws.closed:
        await ws.send_json({"type": "error", "text": text})
