"""Who a web chat socket is: signed customer sessions the page keeps, and signed staff login cookies.

A customer is a random id (`c_` + 128 random bits) the server signs; the page stores the signed
token and sends it when it joins. Without the signature nobody can claim an id, and the `c_`
prefix keeps customer ids apart from staff identities. The nickname is only a display name.

A guide proves who they are by logging in; the cookie names the staff id, when it was issued,
and a fingerprint of the password hash, so a new password ends the sessions of the old one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import SecretStr

from bot.clock import Clock
from bot.plugin import AdapterStore

CUSTOMER_PREFIX = "c_"
SECRET_KEY = "webchat:session_secret"  # kv key of the generated secret (when SIYU_WEBCHAT_SECRET is unset)
STAFF_COOKIE = "siyu_staff"
STAFF_SESSION = timedelta(hours=12)
MAX_TOKEN = 512  # longer tokens are not ours; refuse before any work


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 under one secret; `purpose` keeps a signature for one use from passing as another."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "Signer(****)"

    def sign(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}\n{payload}".encode(), hashlib.sha256).digest())

    def verify(self, purpose: str, payload: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, payload), signature)


class Keys:
    """The signing secret: SIYU_WEBCHAT_SECRET, or one generated once and kept in storage.

    Kept in storage, every process sharing the database signs alike and sessions survive restarts.
    """

    def __init__(self, store: AdapterStore, configured: SecretStr | None) -> None:
        self.store = store
        self._signer = Signer(configured.get_secret_value().encode()) if configured else None

    async def signer(self) -> Signer:
        if self._signer is None:
            secret = await self.store.keep_value(SECRET_KEY, secrets.token_urlsafe(32))
            self._signer = Signer(secret.encode())
        return self._signer


def new_customer_token(signer: Signer) -> tuple[str, str]:
    """A fresh customer: (customer id, the token the page keeps)."""
    customer = CUSTOMER_PREFIX + _b64(secrets.token_bytes(16))
    return customer, f"{customer}.{signer.sign('customer', customer)}"


def customer_of(signer: Signer, token: object) -> str | None:
    """The customer id a token proves; None for anything not signed by us."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        return None
    customer, _, signature = token.rpartition(".")
    if not customer.startswith(CUSTOMER_PREFIX) or not signer.verify("customer", customer, signature):
        return None
    return customer


@dataclass(frozen=True)
class StaffSession:
    """A logged-in staff member, as the cookie says (still to be checked against the password stamp)."""

    staff_key: str
    stamp: str


def staff_cookie(signer: Signer, clock: Clock, staff_key: str, stamp: str) -> str:
    payload = _b64(json.dumps({"staff": staff_key, "at": clock.now().isoformat(), "stamp": stamp}).encode())
    return f"{payload}.{signer.sign('staff', payload)}"


def staff_session(signer: Signer, clock: Clock, cookie: str | None) -> StaffSession | None:
    """The session a cookie proves, if it is ours and younger than STAFF_SESSION."""
    if not cookie or len(cookie) > MAX_TOKEN:
        return None
    payload, _, signature = cookie.rpartition(".")
    if not payload or not signer.verify("staff", payload, signature):
        return None
    try:
        data = json.loads(_unb64(payload))
        issued = datetime.fromisoformat(data["at"])
        staff_key, stamp = str(data["staff"]), str(data["stamp"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    now = clock.now()
    if issued.tzinfo is None or not now - STAFF_SESSION < issued <= now + timedelta(minutes=5):
        return None
    return StaffSession(staff_key, stamp)
