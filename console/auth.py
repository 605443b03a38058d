"""Who a console request is: a cookie session or an API token, and what that staff member may do.

Sessions live in storage (the `kv` table, keyed by a digest of the random session id), so every
process sharing the database knows them, logout ends them everywhere, and a new password ends the
old ones (each session keeps a fingerprint of the password hash it was opened with).

Requests made with the cookie are protected against cross-site forgery twice: the cookie is
SameSite=Strict, and every state-changing request must carry the session's CSRF token in the
`X-CSRF-Token` header (the page reads it from the login answer or the `siyu_csrf` cookie), and,
when the browser names its origin, come from this site. Bearer-token requests carry no ambient
credential, so they need neither.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from pydantic import ValidationError

from bot.clock import Clock
from bot.config import Settings, StaffMember
from bot.plugin import LoginResult
from bot.staff_accounts import StaffAccounts
from console.models import LoginRequest, Me, Role
from storage import repo
from storage.db import Database

log = logging.getLogger(__name__)

SESSION_COOKIE = "siyu_console"
CSRF_COOKIE = "siyu_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)
SESSION_KEY = "console:session:"  # kv: console:session:<sha256 of the session id> → {staff, csrf, stamp}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

NOT_LOGGED_IN = "请先登录（或在 Authorization 头里带上 API 令牌）"
BAD_TOKEN = "API 令牌无效或已被撤销，请用 siyu staff token 重新生成"
WRONG = "工号或密码不对"
THROTTLED = "登录失败次数太多，请 15 分钟后再试"
BAD_LOGIN = "登录请求格式不对：请用 JSON 发送 {\"staff\", \"password\"}"
CSRF_MISSING = "请求缺少有效的 CSRF 令牌，请刷新页面后重试"
CROSS_SITE = "请求来自其他网站，已拒绝"
OPERATORS_ONLY = "这是运营人员的功能，导购账号不能使用"
OTHER_GUIDE = "这位顾客由其他导购负责，你不能查看或操作"


@dataclass(frozen=True)
class Staffer:
    """The staff member behind a request; `csrf` is None for a bearer-token request."""

    key: str
    name: str
    role: Role
    csrf: str | None = None

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def me(self) -> Me:
        return Me(staff=self.key, name=self.name, role=self.role, csrf_token=self.csrf)


class Refused(web.HTTPException):
    """A JSON refusal with a Chinese sentence; raised anywhere under /api."""

    def __init__(self, status: int, error: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": error}, ensure_ascii=False), content_type="application/json")


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def over_https(request: web.Request) -> bool:
    """HTTPS here, or at the reverse proxy in front (a client that claims it only makes its cookie stricter)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def same_site(request: web.Request) -> bool:
    """The browser's Origin (or, without it, Sec-Fetch-Site) says the request comes from our own pages."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.split("://", 1)[-1].rstrip("/") == request.host
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


class ConsoleAuth:
    """Logs staff in and out, and says who each request is."""

    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.accounts = StaffAccounts(db, clock, {m.id for m in settings.staff})

    def member(self, staff_key: str) -> StaffMember | None:
        """config.yaml is the source of truth: someone removed from it is nobody here."""
        return next((m for m in self.settings.staff if m.id == staff_key), None)

    # --- routes: /api/session ---

    async def login(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # a cross-site form cannot send JSON without asking
            raise Refused(415, BAD_LOGIN)
        if not same_site(request):
            raise Refused(403, CROSS_SITE)
        try:
            form = LoginRequest.model_validate(await request.json())
        except (ValueError, LookupError, RecursionError, ValidationError):
            raise Refused(400, BAD_LOGIN) from None
        result = await self.accounts.login(form.staff, form.password, request.remote or "unknown")
        if result is LoginResult.THROTTLED:
            log.warning("console: a staff login was refused, too many recent failures")
            raise Refused(429, THROTTLED)
        member = self.member(form.staff) if result is LoginResult.OK else None
        stamp = await self.accounts.password_stamp(form.staff) if member else None
        if member is None or stamp is None:
            log.info("console: a staff login failed")
            raise Refused(401, WRONG)
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock.now()
        async with self.db.session() as session, session.begin():
            await repo.delete_values(session, SESSION_KEY, before=now - SESSION_TTL)  # expired ones, anyone's
            await repo.set_value(session, SESSION_KEY + _digest(session_id),
                                 json.dumps({"staff": member.id, "csrf": csrf, "stamp": stamp}), now)
        staffer = Staffer(member.id, member.name, member.role, csrf)
        response = web.json_response(staffer.me().model_dump(mode="json"), dumps=_dumps)
        secure = over_https(request)
        age = int(SESSION_TTL.total_seconds())
        response.set_cookie(SESSION_COOKIE, session_id, max_age=age, path="/", httponly=True, samesite="Strict",
                            secure=secure)
        response.set_cookie(CSRF_COOKIE, csrf, max_age=age, path="/", samesite="Strict", secure=secure)
        return response

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(staffer_of(request).me().model_dump(mode="json"), dumps=_dumps)

    async def logout(self, request: web.Request) -> web.Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            async with self.db.session() as session, session.begin():
                await repo.delete_values(session, SESSION_KEY + _digest(session_id))
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        response.del_cookie(CSRF_COOKIE, path="/")
        return response

    # --- every other request ---

    async def identify(self, request: web.Request) -> Staffer:
        """Who the request is (401 when nobody), with the CSRF checks for cookie requests that change state."""
        authorization = request.headers.get("Authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            staff_key = await self.accounts.staff_for_token(token.strip()) if scheme.lower() == "bearer" else None
            member = self.member(staff_key) if staff_key else None
            if member is None:
                raise Refused(401, BAD_TOKEN)
            return Staffer(member.id, member.name, member.role)
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id or len(session_id) > 128:
            raise Refused(401, NOT_LOGGED_IN)
        now = self.clock.now()
        async with self.db.session() as session:
            raw = await repo.get_value(session, SESSION_KEY + _digest(session_id))
            fresh = await repo.count_values(session, SESSION_KEY + _digest(session_id), since=now - SESSION_TTL)
        if raw is None or not fresh:
            raise Refused(401, NOT_LOGGED_IN)
        data = json.loads(raw)
        member = self.member(data["staff"])
        if member is None or await self.accounts.password_stamp(member.id) != data["stamp"]:
            raise Refused(401, NOT_LOGGED_IN)  # removed from config.yaml, or the password changed since
        staffer = Staffer(member.id, member.name, member.role, data["csrf"])
        if request.method not in SAFE_METHODS:
            if not same_site(request):
                raise Refused(403, CROSS_SITE)
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), staffer.csrf.encode() if staffer.csrf else b""):
                raise Refused(403, CSRF_MISSING)
        return staffer

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Every /api route but the login itself needs a staff member."""
        if not (request.method == "POST" and request.match_info.route.resource is not None
                and request.match_info.route.resource.canonical.endswith("/session")):
            request[STAFFER] = await self.identify(request)
        return await handler(request)


STAFFER = web.RequestKey("console.staffer", Staffer)  # where the middleware leaves who it is


def staffer_of(request: web.Request) -> Staffer:
    return request[STAFFER]


def require_operator(staffer: Staffer) -> None:
    if not staffer.operator:
        raise Refused(403, OPERATORS_ONLY)
