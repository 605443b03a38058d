"""Staff accounts: passwords (argon2), API tokens (stored as SHA-256 digests) and throttled logins.

Failed logins are counted in the database (the `kv` table), so the limits hold across every
process that shares it, not only within one. Each attempt is written down *before* its password
is checked, so parallel guesses count too; a success then removes that client's failures for the id.

The limits are per staff id *from one client address* and per client address: failures from
somewhere else never lock a guide out, and a refusal is not counted, so every lockout ends one
FAILURE_WINDOW after the last counted failure (bounded, however long someone keeps trying).
"""
from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Collection
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bot.clock import Clock
from bot.plugin import LoginResult
from storage import repo
from storage.db import Database

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "siyu_"
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_STAFF = 5      # per staff id from one client within the window: slows guessing one account
MAX_FAILURES_PER_CLIENT = 20    # per client address within the window: slows one source trying many ids
FAILURE_KEY = "staff_login_failure:"  # kv keys: staff_login_failure:<scope>:<digest>:<attempt>


class UnknownStaff(LookupError):
    """The staff id is not one of config.yaml's `staff:`."""


class WeakPassword(ValueError):
    """A password too short to set."""


def require_known(staff_key: str, known: Collection[str]) -> None:
    """UnknownStaff unless `staff_key` is one of the configured staff ids."""
    if staff_key not in known:
        configured = ", ".join(sorted(known)) or "none"
        raise UnknownStaff(f"config.yaml: no staff member with id '{staff_key}' — use one of: {configured} "
                           "(staff: in config.yaml)")


def token_digest(token: str) -> str:
    """How a token is stored and looked up (tokens are random, so a fast hash is enough)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _scope(kind: str, value: str) -> str:
    # hashed so staff-chosen ids and client addresses never land in the table as written
    return f"{FAILURE_KEY}{kind}:{hashlib.sha256(value.encode('utf-8', 'replace')).hexdigest()[:24]}:"


class StaffAccounts:
    """Sets and checks staff credentials; `known` are the configured staff ids (None: do not check)."""

    def __init__(self, db: Database, clock: Clock, known: Collection[str] | None = None,
                 hasher: PasswordHasher | None = None) -> None:
        self.db = db
        self.clock = clock
        self.known = None if known is None else frozenset(known)
        self.hasher = hasher or PasswordHasher()
        self._decoy: str | None = None  # a hash to check unknown ids against, so they take as long

    def _require_known(self, staff_key: str) -> None:
        if self.known is not None:
            require_known(staff_key, self.known)

    # --- what the CLI does ---

    async def set_password(self, staff_key: str, password: str) -> None:
        self._require_known(staff_key)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise WeakPassword(f"the password is too short — use at least {MIN_PASSWORD_LENGTH} characters")
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        async with self.db.session() as session, session.begin():
            await repo.replace_staff_password(session, staff_key, hashed, self.clock.now())

    async def create_token(self, staff_key: str) -> str:
        """A new API token for the staff member; only its digest is stored, so show it once."""
        self._require_known(staff_key)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.session() as session, session.begin():
            await repo.add_staff_token(session, staff_key, token_digest(token), self.clock.now())
        return token

    async def revoke_tokens(self, staff_key: str) -> int:
        self._require_known(staff_key)
        async with self.db.session() as session, session.begin():
            return await repo.delete_staff_tokens(session, staff_key)

    # --- what requests do ---

    async def staff_for_token(self, token: str) -> str | None:
        """The staff id an API token belongs to; None for an unknown or revoked token."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        async with self.db.session() as session:
            return await repo.staff_key_by_token(session, token_digest(token))

    async def password_stamp(self, staff_key: str) -> str | None:
        async with self.db.session() as session:
            hashed = await repo.staff_password_hash(session, staff_key)
        return None if hashed is None else hashlib.sha256(hashed.encode()).hexdigest()[:16]

    async def login(self, staff_key: str, password: str, client: str) -> LoginResult:
        """Check a password, throttled per staff id from one client and per client (see the module docstring)."""
        now = self.clock.now()
        staff_scope, client_scope = _scope("staff", f"{client}\n{staff_key}"), _scope("client", client)
        attempt = uuid.uuid4().hex
        async with self.db.session() as session, session.begin():
            await repo.delete_values(session, FAILURE_KEY, before=now - FAILURE_WINDOW)
            await repo.set_value(session, staff_scope + attempt, "", now)
            await repo.set_value(session, client_scope + attempt, "", now)
        # counted after our own attempt is committed: of N parallel guesses, at most the limit get checked
        async with self.db.session() as session:
            for_staff = await repo.count_values(session, staff_scope, since=now - FAILURE_WINDOW)
            for_client = await repo.count_values(session, client_scope, since=now - FAILURE_WINDOW)
            hashed = await repo.staff_password_hash(session, staff_key)
        if for_staff > MAX_FAILURES_PER_STAFF or for_client > MAX_FAILURES_PER_CLIENT:
            await self._forget(staff_scope + attempt, client_scope + attempt)  # a refused try is no guess
            return LoginResult.THROTTLED
        if not await self._verify(hashed, password):
            return LoginResult.WRONG
        assert hashed is not None
        rehashed = (await asyncio.to_thread(self.hasher.hash, password)
                    if self.hasher.check_needs_rehash(hashed) else None)  # the hasher's settings were raised
        async with self.db.session() as session, session.begin():
            await repo.delete_values(session, staff_scope)
            await repo.delete_values(session, client_scope + attempt)
            if rehashed is not None:
                await repo.replace_staff_password(session, staff_key, rehashed, now)
        return LoginResult.OK

    async def _verify(self, hashed: str | None, password: str) -> bool:
        """argon2 off the event loop; an id without a password costs the same time and fails."""
        if hashed is None:
            if self._decoy is None:
                self._decoy = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
            await self._check(self._decoy, password)
            return False
        return await self._check(hashed, password)

    async def _check(self, hashed: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _forget(self, *keys: str) -> None:
        async with self.db.session() as session, session.begin():
            for key in keys:
                await repo.delete_values(session, key)


class PasswordMismatch(ValueError):
    """The prompt's two entries differ."""


def read_new_password(from_stdin: bool) -> str:
    """The new password: all of stdin (one trailing newline dropped), or typed twice at a hidden prompt."""
    if from_stdin:
        return sys.stdin.read().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Same password again: ") != first:
        raise PasswordMismatch("the two passwords differ — nothing was changed; run the command again")
    return first


@contextlib.asynccontextmanager
async def open_accounts(database_url: str, known: Collection[str], clock: Clock) -> AsyncIterator[StaffAccounts]:
    """Staff accounts on an up-to-date database, closed afterwards (for the CLI)."""
    db = Database(database_url)
    try:
        await db.upgrade()
        yield StaffAccounts(db, clock, known)
    finally:
        await db.close()
