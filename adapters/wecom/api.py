"""The qyapi client: access_token cached until shortly before expiry, refreshed once when the
platform says it is invalid, retries with back-off and jitter on busy answers, a timeout on
every call, and errors translated into siyu's own exception types."""
from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from bot.clock import Clock

log = logging.getLogger(__name__)
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"
TOKEN_INVALID = {40014, 42001}           # invalid / expired access_token
RETRYABLE = {-1, 45009, 45033}           # system busy, API frequency limit, concurrency limit
# aiohttp puts the request URL, query included, into some errors (TooManyRedirects, InvalidURL):
# the query carries corpsecret or access_token, so no error text keeps a query string
_QUERY = re.compile(r"\?[^\s'\")>]*")


class WeComError(Exception):
    """A WeCom API call failed; `errcode` is the platform's code (0 for transport failures)."""

    def __init__(self, errcode: int, errmsg: str, path: str = "") -> None:
        super().__init__(f"{path}: {errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeComUnavailable(WeComError):
    """Timeouts, connection errors and busy answers that survived our retries."""


@dataclass
class WeComClient:
    """One corp + secret (each WeCom secret has its own token)."""

    corp_id: str
    secret: str = field(repr=False)
    clock: Clock
    api_base: str = DEFAULT_API_BASE
    timeout: float = 10.0
    attempts: int = 4
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _token: str | None = field(default=None, repr=False)
    _expires: datetime | None = None
    _session: aiohttp.ClientSession | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token_fetches: int = 0

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def token(self, refresh: bool = False) -> str:
        async with self._lock:
            now = self.clock.now()
            if refresh or self._token is None or self._expires is None or now >= self._expires:
                data = await self._request("GET", "/gettoken", params={"corpid": self.corp_id,
                                                                        "corpsecret": self.secret})
                self._token = str(data["access_token"])
                # refresh five minutes early so a call never races the expiry
                self._expires = now + timedelta(seconds=int(data.get("expires_in", 7200)) - 300)
                self.token_fetches += 1
            return self._token

    async def call(self, path: str, body: dict[str, Any] | None = None,
                   params: dict[str, str] | None = None, repeatable: bool = True) -> dict[str, Any]:
        """POST `body` (or GET when None) with the access_token; returns the JSON answer (errcode 0).

        `repeatable=False` for calls the platform would carry out twice (an assisted send, a welcome):
        one that got no answer is not tried again, since it may have gone through."""
        refreshed = False
        while True:
            token = await self.token()
            try:
                return await self._request("POST" if body is not None else "GET", path, body,
                                           {**(params or {}), "access_token": token}, repeatable)
            except WeComError as exc:
                if exc.errcode in TOKEN_INVALID and not refreshed:
                    refreshed = True
                    await self.token(refresh=True)
                    continue
                raise

    def _scrub(self, text: str) -> str:
        """Error text without query strings, and without our secret or token should they appear bare."""
        text = _QUERY.sub("?…", text)
        for secret in (self.secret, self._token):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                       params: dict[str, str] | None = None, repeatable: bool = True) -> dict[str, Any]:
        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                http = await self._http()
                async with http.request(method, self.api_base + path, json=body, params=params) as response:
                    data = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                error: WeComError = WeComUnavailable(0, f"{type(exc).__name__}: {self._scrub(str(exc))}", path)
                # not connecting at all is safe to repeat; a request that got no answer may have been done
                if not repeatable and not isinstance(exc, aiohttp.ClientConnectorError):
                    raise error from None
            else:
                code = int(data.get("errcode", 0))
                if code == 0:
                    return data
                errmsg = self._scrub(str(data.get("errmsg", "")))
                error = WeComError(code, errmsg, path)
                if code not in RETRYABLE:
                    raise error
                error = WeComUnavailable(code, errmsg, path)
            if attempt == self.attempts:
                raise error
            wait = delay * (1 + random.random())  # jitter: many workers must not retry in step
            log.warning("wecom %s failed (%s); retry %d in %.1fs", path, error, attempt, wait)
            await self.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")
