"""Guide login for the web chat: `POST /webchat/login` sets a signed session cookie the socket checks.

The cookie is HttpOnly (page scripts cannot read it), SameSite=Strict (other sites' pages cannot
send it, which also covers cross-site WebSocket hijacking) and Secure when served over HTTPS. The
login only takes JSON, which a cross-site form cannot post without the browser asking us first.
"""
from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from adapters.webchat import CHANNEL
from adapters.webchat.frames import storable
from adapters.webchat.sessions import (
    STAFF_COOKIE,
    STAFF_SESSION,
    Keys,
    staff_cookie,
    staff_session,
)
from bot.clock import Clock
from bot.plugin import AdapterStore, LoginResult, StaffIdentity

log = logging.getLogger(__name__)

WRONG = "工号或密码不对"
THROTTLED = "登录失败次数太多，请 15 分钟后再试"
BAD_REQUEST = "登录请求格式不对，请刷新页面后重试"
NOT_LOGGED_IN = "导购需要先登录：选择「导购」，填写工号和密码后点「进入」；处理转人工会话请用控制台 /console"
EXPIRED = "登录已失效（密码已更改或已过期），请重新登录"


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    staff: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class StaffLogin:
    """The login and logout routes, and the check a guide's socket runs on its cookie."""

    def __init__(self, store: AdapterStore, clock: Clock, keys: Keys) -> None:
        self.store = store
        self.clock = clock
        self.keys = keys

    def install(self, app: web.Application) -> None:
        app.router.add_post("/webchat/login", self._login)
        app.router.add_post("/webchat/logout", self._logout)

    async def _login(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.json_response({"error": BAD_REQUEST}, status=415)
        try:
            form = LoginForm.model_validate(await request.json())
        except (ValueError, LookupError, RecursionError):  # not UTF-8, unknown charset, not JSON, too deep, wrong fields
            return web.json_response({"error": BAD_REQUEST}, status=400)
        if not (storable(form.staff) and storable(form.password)):
            return web.json_response({"error": BAD_REQUEST}, status=400)
        result = await self.store.staff_login(form.staff, form.password, request.remote or "unknown")
        if result is LoginResult.THROTTLED:
            log.warning("web chat: a staff login was refused, too many recent failures")
            return web.json_response({"error": THROTTLED}, status=429)
        identity = await self.store.staff_identity(form.staff, CHANNEL) if result is LoginResult.OK else None
        stamp = await self.store.staff_password_stamp(form.staff) if identity else None
        if identity is None or stamp is None:
            log.info("web chat: a staff login failed")
            return web.json_response({"error": WRONG}, status=401)
        response = web.json_response({"ok": True, "name": identity.name})
        response.set_cookie(STAFF_COOKIE, staff_cookie(await self.keys.signer(), self.clock, identity.key, stamp),
                            max_age=int(STAFF_SESSION.total_seconds()), path="/", httponly=True,
                            samesite="Strict", secure=_over_https(request))
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = web.json_response({"ok": True})
        response.del_cookie(STAFF_COOKIE, path="/")
        return response

    async def guide(self, request: web.Request) -> StaffIdentity | str:
        """The staff member the socket's login cookie proves, or why not (for the page)."""
        session = staff_session(await self.keys.signer(), self.clock, request.cookies.get(STAFF_COOKIE))
        if session is None or not _same_origin(request):
            return NOT_LOGGED_IN
        if await self.store.staff_password_stamp(session.staff_key) != session.stamp:
            return EXPIRED
        identity = await self.store.staff_identity(session.staff_key, CHANNEL)
        return identity if identity is not None else NOT_LOGGED_IN


def _over_https(request: web.Request) -> bool:
    """HTTPS here, or at the reverse proxy in front (it says so in X-Forwarded-Proto).

    Trusting the header is safe for this one use: a client that claims HTTPS only makes its own
    cookie stricter.
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _same_origin(request: web.Request) -> bool:
    """A browser names the page that opened the socket; only our own page may act as a guide.

    (Clients that are not browsers send no Origin; they still need the cookie.)
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1].rstrip("/") == request.host
