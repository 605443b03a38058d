"""SQLite connections in the shape SQLAlchemy's aiosqlite dialect drives, one thread hop per statement.

aiosqlite sends each step of a statement to its driver thread and back — make a cursor, execute, fetch,
close: three or four hops for a statement that itself takes microseconds, and on a busy server the hops
are what the time goes to. Here a statement runs whole in one hop and its rows come back with it
(SQLAlchemy buffers them anyway). A file database has a thread of its own per connection, so a disk that
stalls never blocks the event loop; the in-memory database of `siyu simulate` has no disk to wait for and
runs on the loop's own thread.
"""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


@dataclass
class _Outcome:
    """What one statement left behind, read on the driver's thread before its cursor closed."""

    rows: list[Any] = field(default_factory=list)
    description: Any = None
    rowcount: int = -1
    lastrowid: int | None = None


def _run_statement(conn: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Outcome(rows, cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


class SqliteCursor:
    """An aiosqlite-shaped cursor: `execute` runs the statement whole, the fetches read what it returned."""

    arraysize = 1

    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection
        self._outcome = _Outcome()

    async def __aenter__(self) -> SqliteCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> SqliteCursor:
        self._outcome = await self._connection.run(_run_statement, sql, parameters, False)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> SqliteCursor:
        self._outcome = await self._connection.run(_run_statement, sql, list(parameters), True)
        return self

    async def fetchone(self) -> Any:
        rows = self._outcome.rows
        return rows.pop(0) if rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = size or self.arraysize
        taken, self._outcome.rows = self._outcome.rows[:count], self._outcome.rows[count:]
        return taken

    async def fetchall(self) -> list[Any]:
        rows, self._outcome.rows = self._outcome.rows, []
        return rows

    async def close(self) -> None:
        self._outcome.rows = []  # rowcount and lastrowid stay readable, as a closed sqlite3 cursor's do

    @property
    def description(self) -> Any:
        return self._outcome.description

    @property
    def rowcount(self) -> int:
        return self._outcome.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._outcome.lastrowid


class SqliteConnection:
    """An aiosqlite-shaped connection; `thread` None runs it on the calling thread (in memory only)."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor | None) -> None:
        self._conn = conn
        self._thread = thread
        self._connection: sqlite3.Connection | None = conn  # what the dialect checks before commit/rollback

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, *args)` on this connection's thread."""
        if self._connection is None:  # what aiosqlite says: SQLAlchemy takes it for a lost connection
            raise ValueError("no active connection")
        if self._thread is None:
            return work(self._conn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(work, self._conn, *args))

    def cursor(self) -> SqliteCursor:
        return SqliteCursor(self)

    @property
    def sqlite(self) -> sqlite3.Connection:
        return self._conn

    @property
    def on_loop(self) -> bool:
        """Runs on the event loop's own thread (the in-memory database)."""
        return self._thread is None

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def create_function(self, *args: Any, **kw: Any) -> None:
        await self.run(lambda conn: conn.create_function(*args, **kw))

    async def commit(self) -> None:
        await self.run(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        await self.run(sqlite3.Connection.rollback)

    async def close(self) -> None:
        if self._connection is None:
            return
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._connection = None
            if self._thread is not None:
                self._thread.shutdown(wait=False)

    def stop(self) -> None:
        """Close at once, from outside the event loop (SQLAlchemy's terminate)."""
        if self._connection is None:
            return
        self._connection = None
        if self._thread is None:
            self._conn.close()
        else:
            with suppress(RuntimeError):  # the interpreter is shutting down: its threads close everything
                self._thread.submit(self._conn.close)
            self._thread.shutdown(wait=False)


async def connect_file(path: str) -> SqliteConnection:
    """`create_async_engine(..., async_creator=partial(connect_file, path))`.

    The connection is in autocommit mode: the driver's own implicit BEGIN (deferred, issued before the first
    write) is what deadlocks on the lock upgrade; storage/db.py issues the right BEGIN instead."""
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
    opened = partial(sqlite3.connect, path, isolation_level=None, check_same_thread=False)
    conn = await asyncio.get_running_loop().run_in_executor(thread, opened)
    return SqliteConnection(conn, thread)


async def connect_memory() -> SqliteConnection:
    """`create_async_engine(..., async_creator=connect_memory)`: one in-memory database, on the loop's thread."""
    return SqliteConnection(sqlite3.connect(":memory:", check_same_thread=False), None)


async def plain_connection(engine: AsyncEngine) -> sqlite3.Connection:
    """The sqlite3 connection behind an in-memory engine, for a reader that only looks (`siyu simulate`
    reads its transcript with plain SQL: a few microseconds a read, where a session costs a millisecond).
    Read only between transactions: it is the one connection every session shares."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
    if not isinstance(driver, SqliteConnection) or not driver.on_loop:
        raise TypeError(f"{engine.url}: not an in-memory SQLite database run inline")
    return driver.sqlite
