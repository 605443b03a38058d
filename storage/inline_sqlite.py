"""An in-memory SQLite connection run on the event loop's own thread, for SQLAlchemy's aiosqlite dialect.

aiosqlite hands every statement to a driver thread and back: right for a file (the disk may block),
pure overhead for a database in memory, where a statement takes microseconds and the two thread hops
take far longer. `siyu simulate` runs 35 days of the real engine on one; this makes it several times
faster without changing a statement. Used only for `sqlite+aiosqlite://` (in memory).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine


class InlineCursor:
    """An aiosqlite-shaped cursor whose methods run at once."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> "InlineCursor":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> "InlineCursor":
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> "InlineCursor":
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class InlineConnection:
    """An aiosqlite-shaped connection to one in-memory database, on the calling thread."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._connection = self._conn  # what the dialect checks before commit/rollback

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    @property
    def sqlite(self) -> sqlite3.Connection:
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()


async def connect() -> InlineConnection:
    """`create_async_engine(..., async_creator=connect)`."""
    return InlineConnection()


async def plain_connection(engine: AsyncEngine) -> sqlite3.Connection:
    """The sqlite3 connection behind an in-memory engine, for a reader that only looks (`siyu simulate`
    reads its transcript with plain SQL: a few microseconds a read, where a session costs a millisecond).
    Read only between transactions: it is the one connection every session shares."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        inline = raw.driver_connection
    if not isinstance(inline, InlineConnection):
        raise TypeError(f"{engine.url}: not an in-memory SQLite database run inline")
    return inline.sqlite
