"""Fake platform servers on 127.0.0.1 that speak the real wire formats."""
from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


class LocalServer:
    """Serves a fake's routes on 127.0.0.1; subclasses add routes in `routes`."""

    server: TestServer | None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        self.routes(app)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


@dataclass
class FakeOpenAI(LocalServer):
    """`POST /v1/chat/completions` as an OpenAI-compatible server answers it.

    `reply(request_json)` returns the assistant message content, or raises web.HTTPException; an async
    `reply` may hold its answer back (a model still thinking) until the test lets it go.
    """

    reply: Callable[[dict[str, Any]], str | Awaitable[str]]
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        content = self.reply(body)
        if inspect.isawaitable(content):
            content = await content
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)

    async def start(self) -> str:
        return await super().start() + "/v1"



def user_message(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def answer(intent: str, confidence: float = 0.9) -> str:
    return json.dumps({"intent": intent, "confidence": confidence})


BOT_USER = {"id": 999000, "is_bot": True, "first_name": "山茶集小助手", "username": "shanchaji_bot",
            "can_join_groups": True, "can_read_all_group_messages": True, "supports_inline_queries": False}


@dataclass
class FakeTelegram(LocalServer):
    """The Bot API (`/bot<token>/<method>`) as api.telegram.org speaks it, with scriptable failures."""

    token: str = "123456:TEST-TOKEN"
    updates: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    server: TestServer | None = None
    _next_update: int = 1
    _next_message: int = 1000
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, update: dict[str, Any]) -> None:
        self.updates.append({"update_id": self._next_update, **update})
        self._next_update += 1
        self._arrived.set()

    def fail_next(self, method: str, status: int, description: str, **parameters: Any) -> None:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        self.failures.setdefault(method, []).append((status, body))

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        raw = dict(await request.post()) if request.can_read_body else {}
        if request.content_type == "application/json":
            raw = await request.json()
        params: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                params[key] = json.loads(value) if isinstance(value, str) else value
            except ValueError:
                params[key] = value
        if self.failures.get(method):
            status, body = self.failures[method].pop(0)
            self.refused.append((method, params))
            return web.json_response(body, status=status)
        if method != "getUpdates":
            self.calls.append((method, params))  # what the platform accepted
        return web.json_response({"ok": True, "result": await self._result(method, params)})

    async def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if not pending:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=min(float(params.get("timeout") or 0), 0.5))
                except TimeoutError:
                    pass
                pending = [u for u in self.updates if u["update_id"] >= offset]
            return pending
        if method == "sendMessage":
            self._next_message += 1
            chat_id = int(params["chat_id"])
            chat = {"id": chat_id, "type": "private", "first_name": "x"} if chat_id > 0 else \
                {"id": chat_id, "type": "supergroup", "title": "group"}
            return {"message_id": self._next_message, "date": 1_772_000_000, "chat": chat, "from": BOT_USER,
                    "text": params.get("text", "")}
        return True  # setMyCommands, deleteWebhook, deleteMessage, restrictChatMember, banChatMember, …

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._api)

    async def start(self) -> str:
        return await super().start() + "/bot"



def tg_user(user_id: int, name: str, is_bot: bool = False) -> dict[str, Any]:
    return {"id": user_id, "is_bot": is_bot, "first_name": name}


def tg_private(user_id: int, name: str, text: str, message_id: int) -> dict[str, Any]:
    message: dict[str, Any] = {"message_id": message_id, "date": 1_772_000_000,
                               "chat": {"id": user_id, "type": "private", "first_name": name},
                               "from": tg_user(user_id, name), "text": text}
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"message": message}


def tg_group(chat_id: int, user_id: int, name: str, text: str, message_id: int, **extra: Any) -> dict[str, Any]:
    return {"message": {"message_id": message_id, "date": 1_772_000_000,
                        "chat": {"id": chat_id, "type": "supergroup", "title": "山茶集会员群"},
                        "from": tg_user(user_id, name), "text": text, **extra}}


def tg_joined(chat_id: int, user_id: int, name: str, message_id: int) -> dict[str, Any]:
    return {"message": {"message_id": message_id, "date": 1_772_000_000,
                        "chat": {"id": chat_id, "type": "supergroup", "title": "山茶集会员群"},
                        "from": tg_user(user_id, name), "new_chat_members": [tg_user(user_id, name)]}}


def tg_blocked(user_id: int, name: str) -> dict[str, Any]:
    return {"my_chat_member": {"chat": {"id": user_id, "type": "private", "first_name": name},
                               "from": tg_user(user_id, name), "date": 1_772_000_000,
                               "old_chat_member": {"user": BOT_USER, "status": "member"},
                               "new_chat_member": {"user": BOT_USER, "status": "kicked", "until_date": 0}}}


@dataclass
class FakeQyapi(LocalServer):
    """qyapi.weixin.qq.com/cgi-bin as WeCom answers it: tokens that expire, errcodes on demand."""

    corp_id: str = "wwcorp0001"
    secret: str = "s3cret"
    token_number: int = 0
    valid_token: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: dict[str, list[int]] = field(default_factory=dict)
    send_status: dict[tuple[str, str], int] = field(default_factory=dict)
    kf_messages: list[dict[str, Any]] = field(default_factory=list)
    kf_page: int = 2
    group_members: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    group_owner: str = "guide01"  # the staff member who owns every customer group
    contact_tags: dict[str, list[str]] = field(default_factory=dict)  # corp tags a guide gave each customer
    # 在职/离职继承: (handover, takeover, departed) → customer → status (1 taken over, 2 waiting, 3 refused, 4 full)
    handovers: dict[tuple[str, str, bool], dict[str, int]] = field(default_factory=dict)
    contact_ways: dict[str, dict[str, Any]] = field(default_factory=dict)  # config_id → add_contact_way body
    _scans: dict[str, int] = field(default_factory=dict)
    server: TestServer | None = None
    _msgids: int = 0

    def expire_token(self) -> None:
        self.valid_token = None

    def fail(self, path: str, *errcodes: int) -> None:
        self.errors.setdefault(path, []).extend(errcodes)

    def called(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.calls if p == path]

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        if path == "/gettoken":
            if request.query.get("corpid") != self.corp_id or request.query.get("corpsecret") != self.secret:
                return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
            self.token_number += 1
            self.valid_token = f"token-{self.token_number}"
            return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": self.valid_token,
                                      "expires_in": 7200})
        if request.query.get("access_token") != self.valid_token:
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        body = await request.json() if request.can_read_body else dict(request.query)
        if self.errors.get(path):
            code = self.errors[path].pop(0)
            return web.json_response({"errcode": code, "errmsg": "api freq out of limit" if code == 45009 else "error"})
        self.calls.append((path, body))
        return web.json_response({"errcode": 0, "errmsg": "ok", **self._result(path, body)})

    def _result(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/externalcontact/get":
            who = body.get("external_userid", "")
            return {"external_contact": {"external_userid": who, "name": f"客户{who[-4:]}", "type": 1},
                    "follow_user": [{"userid": "guide01", "tags": [{"tag_name": tag, "type": 1}
                                                                   for tag in self.contact_tags.get(who, ["high_value"])]}]}
        if path == "/externalcontact/add_msg_template":
            self._msgids += 1
            return {"fail_list": [], "msgid": f"msgGROUPSEND_{self._msgids}"}
        if path == "/externalcontact/get_groupmsg_send_result":
            rows = [{"external_userid": customer, "userid": body["userid"], "status": status}
                    for (msgid, customer), status in self.send_status.items() if msgid == body["msgid"]]
            return {"next_cursor": "", "send_list": rows}
        if path == "/kf/sync_msg":
            start = int(body.get("cursor") or 0)
            page = self.kf_messages[start:start + self.kf_page]
            end = start + len(page)
            return {"next_cursor": str(end), "has_more": int(end < len(self.kf_messages)), "msg_list": page}
        if path == "/externalcontact/groupchat/get":
            return {"group_chat": {"chat_id": body["chat_id"], "name": "会员群", "owner": self.group_owner,
                                   "member_list": self.group_members.get(body["chat_id"], [])}}
        if path == "/externalcontact/get_corp_tag_list":
            return {"tag_group": [{"group_id": "etGROUP", "group_name": "客户状态", "tag": [
                {"id": "etGIFT0001", "name": "测试礼已发", "order": 1}]}]}
        if path == "/kf/customer/batchget":
            return {"customer_list": [{"external_userid": c, "nickname": f"微信用户{c[-1]}"}
                                      for c in body["external_userid_list"]], "invalid_external_userid": []}
        if path == "/kf/send_msg":
            self._msgids += 1
            return {"msgid": f"kfmsg_{self._msgids}"}
        if path in ("/externalcontact/transfer_customer", "/externalcontact/resigned/transfer_customer"):
            pair = self.handovers.setdefault((body["handover_userid"], body["takeover_userid"],
                                              "resigned" in path), {})
            for customer in body["external_userid"]:
                pair[customer] = 2  # waiting: the customer has 24 h to refuse
            return {"customer": [{"external_userid": c, "errcode": 0} for c in body["external_userid"]]}
        if path in ("/externalcontact/transfer_result", "/externalcontact/resigned/transfer_result"):
            pair = self.handovers.get((body["handover_userid"], body["takeover_userid"], "resigned" in path), {})
            return {"customer": [{"external_userid": c, "status": status, "takeover_time": 1_772_000_000}
                                 for c, status in pair.items()], "next_cursor": ""}
        if path == "/externalcontact/add_contact_way":
            config_id = f"cfg{len(self.contact_ways) + 1:04d}"
            self.contact_ways[config_id] = body
            return {"config_id": config_id, "qr_code": f"https://wework.qpic.cn/wwpic/{config_id}/0"}
        return {}

    def settle_handover(self, customer: str, status: int) -> None:
        """The platform settles a waiting hand-over: 1 taken over, 3 refused by the customer, 4 guide full."""
        for pair in self.handovers.values():
            if customer in pair:
                pair[customer] = status

    def scan(self, config_id: str) -> str:
        """A customer scans a 「联系我」 code: the guide WeCom gives them, round-robin over its users."""
        users = self.contact_ways[config_id]["user"]
        turn = self._scans.get(config_id, 0)
        self._scans[config_id] = turn + 1
        return str(users[turn % len(users)])

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/cgi-bin/{path:.*}", self._handle)

    async def start(self) -> str:
        return await super().start() + "/cgi-bin"



@dataclass
class FakeAiBotGateway(LocalServer):
    """The AI bot long-connection gateway: subscribe, ping, callbacks out, replies in, all as JSON frames."""

    bot_id: str = "aibot001"
    secret: str = "aibotsecret"
    frames: list[dict[str, Any]] = field(default_factory=list)
    subscribes: int = 0
    unanswered: dict[str, int] = field(default_factory=dict)  # cmd → how many of its next frames get no ack
    swallowed: list[dict[str, Any]] = field(default_factory=list)  # the frames taken without an ack
    server: TestServer | None = None
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, cmd: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("cmd") == cmd]

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, "timed out waiting for the bot"
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass

    async def push(self, cmd: str, body: dict[str, Any]) -> str:
        req_id = f"cb_{len(self.frames)}_{cmd}"
        await self._sockets[-1].send_json({"cmd": cmd, "headers": {"req_id": req_id}, "body": body})
        return req_id

    async def drop(self) -> None:
        """The network breaks: close the socket without a goodbye."""
        await self._sockets[-1].close()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=0.5)
        await ws.prepare(request)
        self._sockets.append(ws)
        async for message in ws:
            frame = json.loads(message.data)
            self.frames.append(frame)
            self._changed.set()
            if self.unanswered.get(frame.get("cmd", ""), 0) > 0:
                self.unanswered[frame["cmd"]] -= 1
                self.swallowed.append(frame)  # taken by the platform; the answer is lost on the way back
                continue
            ack: dict[str, Any] = {"headers": frame["headers"], "errcode": 0, "errmsg": "ok"}
            if frame.get("cmd") == "aibot_subscribe":
                self.subscribes += 1
                body = frame.get("body") or {}
                if (body.get("bot_id"), body.get("secret")) != (self.bot_id, self.secret):
                    ack = {"headers": frame["headers"], "errcode": 853000, "errmsg": "invalid bot_id or secret"}
            await ws.send_json(ack)
        return ws

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._ws)

    async def start(self) -> str:
        return (await super().start()).replace("http://", "ws://", 1) + "/"

    async def close(self) -> None:
        for ws in self._sockets:
            if not ws.closed:
                await ws.close()
        await super().close()
