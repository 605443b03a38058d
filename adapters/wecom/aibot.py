"""The WeCom AI bot (智能机器人) long connection: one WebSocket per bot, JSON frames with req_id.

subscribe with bot id and secret → ping every 30 s → callbacks for 1v1 messages, group
@mentions and events. A reply echoes the callback's req_id (a finished stream); a welcome
answers `enter_chat` within 5 s; anything else is a proactive `aibot_send_msg`. After
`disconnected_event` (another connection took over) we do not reconnect: one live connection per bot.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.bodies import BadBody, parse_json_object
from adapters.wecom import AIBOT_CHANNEL as CHANNEL
from bot.clock import Clock
from bot.events import Action, ActionKind, ChatType, Event, EventKind, Profile
from bot.transport import FOREVER, DedupesRepeats, DeliveryError, DeliveryInDoubt

_MENTION = re.compile(r"@\S+")  # 「@山茶集小助手 什么时候发货」: the platform keeps the bot's name in the text
log = logging.getLogger(__name__)
DEFAULT_URL = "wss://openws.work.weixin.qq.com"
WELCOME_WINDOW = timedelta(seconds=5)
REPLY_WINDOW = timedelta(minutes=5)  # stream replies must finish well inside the platform's limit


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Sender(_Shape):
    userid: str = Field("", max_length=128)


class _Text(_Shape):
    content: str = ""


class _EventInfo(_Shape):
    eventtype: str = ""


class AiBotCallback(_Shape):
    """The part of an AI bot callback body siyu reads (frames and HTTP callbacks alike).

    A body of another shape fails validation and becomes no Events, instead of failing over and over.
    """

    model_config = ConfigDict(populate_by_name=True)

    msgid: str | None = Field(None, max_length=128)
    msgtype: str = ""
    chattype: str = "single"
    chatid: str = Field("", max_length=128)
    sender: _Sender | None = Field(None, alias="from")
    text: _Text | None = None
    event: _EventInfo | None = None
    response_url: str | None = None


@dataclass
class _Callback:
    req_id: str
    at: datetime
    welcome: bool


@dataclass
class AiBotConnection(DedupesRepeats):
    """Keeps one authenticated long connection and translates frames both ways."""

    bot_id: str
    secret: str = field(repr=False)
    handle: Callable[[Event], Awaitable[None]]
    clock: Clock
    url: str = DEFAULT_URL
    heartbeat: float = 30.0
    backoff: float = 1.0
    backoff_max: float = 30.0
    ack_timeout: float = 5.0
    channel: str = CHANNEL
    connections: int = 0
    stopped_by_platform: bool = False
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _acks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _callbacks: dict[str, _Callback] = field(default_factory=dict)
    _authenticated: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _response_urls: dict[str, str] = field(default_factory=dict)

    async def translate_callback(self, payload: str) -> list[Event]:
        """The HTTP callback mode: a decrypted JSON message → Events; replies go to its response_url.

        A stored payload of the wrong shape becomes no Events, logged once (the inbox would retry a failure).
        """
        try:
            body = AiBotCallback.model_validate(parse_json_object(payload))
        except (BadBody, ValidationError) as exc:
            log.warning("wecom aibot: skipping a stored callback of the wrong shape (%s)", type(exc).__name__)
            return []
        user = body.sender.userid if body.sender else ""
        chat = body.chatid if body.chattype == "group" else user
        if body.response_url:
            self._response_urls[chat] = body.response_url
        cmd = "aibot_event_callback" if body.msgtype == "event" else "aibot_msg_callback"
        events = self._translate(cmd, "", body)
        self._callbacks.pop(chat, None)  # no req_id to echo over HTTP
        return events

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Close the socket politely first, then end the loop."""
        ws, task = self._ws, self._task
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_authenticated(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._authenticated.wait(), timeout)

    async def run(self) -> None:
        """Connect, authenticate and serve; reconnect with back-off unless the platform said stop."""
        delay = self.backoff
        async with aiohttp.ClientSession() as http:
            while not self.stopped_by_platform:
                try:
                    async with http.ws_connect(self.url, heartbeat=None) as ws:
                        self._ws = ws
                        self.connections += 1
                        await self._serve(ws)
                        delay = self.backoff  # a connection that authenticated resets the back-off
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
                    log.warning("wecom aibot: connection failed: %s", exc)
                finally:
                    self._ws = None
                    self._authenticated.clear()
                    for future in self._acks.values():
                        if not future.done():
                            future.set_exception(ConnectionError("connection closed"))
                    self._acks.clear()
                if self.stopped_by_platform:
                    log.warning("wecom aibot: the platform moved this bot to another connection; not reconnecting")
                    return
                wait = min(delay, self.backoff_max) * (1 + random.random() * 0.2)
                log.info("wecom aibot: reconnecting in %.1fs", wait)
                await asyncio.sleep(wait)
                delay *= 2

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reader = asyncio.create_task(self._read(ws))
        try:
            ack = await self._request("aibot_subscribe", {"bot_id": self.bot_id, "secret": self.secret})
            if ack.get("errcode", 0) != 0:
                raise ConnectionError(f"subscribe refused: {ack.get('errcode')} {ack.get('errmsg', '')}")
            self._authenticated.set()
            log.info("wecom aibot: subscribed as %s", self.bot_id)
            while not reader.done():
                done, _ = await asyncio.wait({reader}, timeout=self.heartbeat)
                if not done:
                    await self._request("ping", None)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _request(self, cmd: str, body: dict[str, Any] | None, req_id: str | None = None) -> dict[str, Any]:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        req_id = req_id or f"{cmd}_{uuid.uuid4().hex[:12]}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[req_id] = future
        frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": req_id}}
        if body is not None:
            frame["body"] = body
        await self._ws.send_str(json.dumps(frame, ensure_ascii=False))
        try:
            return await asyncio.wait_for(future, self.ack_timeout)
        finally:
            self._acks.pop(req_id, None)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = parse_json_object(message.data)
            except BadBody:
                log.warning("wecom aibot: ignoring a frame that is not a JSON object")
                continue
            headers = frame.get("headers")
            req_id = headers.get("req_id", "") if isinstance(headers, dict) else ""
            req_id = req_id if isinstance(req_id, str) else ""
            cmd = frame.get("cmd")
            if cmd is None and req_id in self._acks:
                if not self._acks[req_id].done():
                    self._acks[req_id].set_result(frame)
                continue
            try:
                body = AiBotCallback.model_validate(frame.get("body") or {})
                for event in self._translate(cmd if isinstance(cmd, str) else None, req_id, body):
                    await self.handle(event)
            except ValidationError:
                log.warning("wecom aibot: ignoring a %s frame of the wrong shape", cmd)
            except Exception:  # one bad callback must not end the connection
                log.exception("wecom aibot: callback %s failed", cmd)
            if self.stopped_by_platform:
                await ws.close()
                return

    def _translate(self, cmd: str | None, req_id: str, body: AiBotCallback) -> list[Event]:
        """A callback becomes Events; the req_id is kept so the reply can echo it."""
        now = self.clock.now()
        user = body.sender.userid if body.sender else ""
        group = body.chattype == "group"
        chat = body.chatid if group else user
        if cmd == "aibot_msg_callback" and body.msgtype == "text" and user and chat:
            self._callbacks[chat] = _Callback(req_id, now, welcome=False)
            return [Event(EventKind.MESSAGE, CHANNEL, user, now, ChatType.GROUP if group else ChatType.DIRECT,
                          chat if group else None,
                          text=_MENTION.sub(" ", body.text.content if body.text else "").strip(),
                          message_id=body.msgid or None, mentions_bot=group)]
        if cmd == "aibot_event_callback":
            event_type = body.event.eventtype if body.event else ""
            if event_type == "enter_chat" and user:
                self._callbacks[user] = _Callback(req_id, now, welcome=True)
                return [Event(EventKind.CONTACT_ADDED, CHANNEL, user, now,
                              profile=Profile(name=user, source="企业微信智能机器人"))]
            if event_type == "disconnected_event":
                self.stopped_by_platform = True
        return []

    async def _post_response(self, url: str, text: str) -> None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(url, json={"msgtype": "markdown", "markdown": {"content": text}}) as response:
                    data = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise DeliveryError(f"wecom aibot response_url: {exc}") from None
        if int(data.get("errcode", 0)) != 0:
            raise DeliveryError(f"wecom aibot response_url: {data.get('errcode')} {data.get('errmsg', '')}")

    def repeat_window(self, action: Action) -> timedelta | None:
        """No frame carries a key the platform dedupes on once the callback's req_id is gone (it lives in
        memory), so a message is never repeated; other actions send nothing."""
        return None if action.kind is ActionKind.SAY else FOREVER

    async def deliver(self, action: Action) -> None:
        if action.kind is not ActionKind.SAY:
            return
        chat = action.address.chat_id
        pending = self._callbacks.get(chat)
        now = self.clock.now()
        if chat in self._response_urls and (self._ws is None or pending is None):
            await self._post_response(self._response_urls.pop(chat), action.text)
            return
        try:
            if pending and pending.welcome and now - pending.at <= WELCOME_WINDOW:
                del self._callbacks[chat]
                ack = await self._request("aibot_respond_welcome_msg",
                                          {"msgtype": "text", "text": {"content": action.text}}, pending.req_id)
            elif pending and not pending.welcome and now - pending.at <= REPLY_WINDOW:
                del self._callbacks[chat]
                stream = {"id": f"siyu-{action.ref}", "finish": True, "content": action.text}
                ack = await self._request("aibot_respond_msg", {"msgtype": "stream", "stream": stream},
                                          pending.req_id)
            else:
                ack = await self._request("aibot_send_msg", {"chatid": chat, "msgtype": "markdown",
                                                             "markdown": {"content": action.text}})
        except TimeoutError:  # sent, but no ack: the platform may have shown it
            raise DeliveryInDoubt("wecom aibot: no ack") from None
        except ConnectionError as exc:
            raise DeliveryError(f"wecom aibot: {exc}") from None
        if ack.get("errcode", 0) != 0:
            raise DeliveryError(f"wecom aibot: {ack.get('errcode')} {ack.get('errmsg', '')}")
