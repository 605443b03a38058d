"""Shared fixtures: databases (SQLite always, PostgreSQL when configured), a virtual clock, a network guard."""
from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness import CONFIG, SCRIPTS, Harness  # noqa: F401  (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
PG_ENV = "SIYU_TEST_DATABASE_URL"


# --- no network beyond loopback --------------------------------------------------------------

def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
    elif isinstance(address, (str, bytes)):
        return True  # AF_UNIX socket path (PostgreSQL's local socket)
    else:
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that tries to reach beyond 127.0.0.1."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(method):  # type: ignore[no-untyped-def]
        def connect(self, address):  # type: ignore[no-untyped-def]
            if not _is_loopback(address):
                raise RuntimeError(f"test tried to reach the network: {address!r}")
            return method(self, address)
        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    yield


# --- databases -----------------------------------------------------------------------------

async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


def _postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        message = f"PostgreSQL tests need {PG_ENV}=postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        if os.environ.get("CI"):
            pytest.fail(f"{message} — CI must run them")
        pytest.skip(message)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Every storage-touching test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'siyu.db'}"
        return
    url = _postgres_url()
    try:
        await _reset_postgres(url)
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {url} is not reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {url} is not reachable: {exc}")
    yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """For tests that only make sense on PostgreSQL (SKIP LOCKED across workers)."""
    url = _postgres_url()
    await _reset_postgres(url)
    yield url


@pytest.fixture
def start() -> datetime:
    """Monday 2 March 2026, 10:15 in Shanghai: a customer adds the guide mid-morning."""
    return datetime(2026, 3, 2, 10, 15, tzinfo=SHANGHAI)


@pytest.fixture
async def harness(db_url: str, start: datetime) -> AsyncIterator[Harness]:
    h = await Harness.create(db_url, start, SCRIPTS)
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]
