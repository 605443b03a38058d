"""Connecting to the database and keeping its schema current.

SQLite allows one writer at a time. A transaction that starts as a reader and later writes has to
upgrade its lock, and under WAL that upgrade fails at once ("database is locked", no busy wait)
whenever another writer committed meanwhile. So every write transaction (`session.begin()`)
starts with BEGIN IMMEDIATE and takes the write lock before its first statement, while reads stay
deferred; busy_timeout waits out a writer in another process, and in this process writers queue
on one asyncio lock instead of polling SQLite's busy handler (which sleeps up to 100 ms a try).
"""
from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Insert, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, AsyncSessionTransaction, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import StaticPool

from storage import sqlite_driver
from storage.models import Message, Touch

MIGRATIONS = Path(__file__).with_name("migrations")
BEGIN_OPTION = "siyu_begin"  # execution option: how a SQLite transaction begins (immediate | deferred)
BUSY_TIMEOUT_MS = 10_000     # another process's write transaction; ours queue on the in-process lock
PG_WRITERS = 10       # PostgreSQL: write transactions at once per process (the pool's kept connections)
PG_READERS_OVER = 10  # …and this many more connections for reads
_QUEUED = "siyu_queued_outbound"
_SCHEDULED = "siyu_touches_for"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets the web server read while the scheduler writes; busy_timeout waits out a writer.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across app crashes, one fsync per checkpoint
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _explicit_begin(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # the driver's own implicit BEGIN (deferred, issued before the first write) is what deadlocks on the
    # upgrade; `_sqlite_begin` issues the right BEGIN instead (SQLAlchemy's pysqlite recipe)
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION, "immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")


class TrackingSession(Session):
    """A session that remembers the outbound messages added to it and the customers it scheduled touches
    for, so whoever commits can deliver at once (the outbox still has it all should that process die)."""


@event.listens_for(TrackingSession, "transient_to_pending")
def _remember_outbound(session: Session, instance: object) -> None:
    if isinstance(instance, Message) and instance.direction == "out":
        session.info.setdefault(_QUEUED, []).append(instance)


@event.listens_for(TrackingSession, "do_orm_execute")
def _remember_touches(state: ORMExecuteState) -> None:
    if isinstance(state.statement, Insert) and state.statement.table is Touch.__table__:
        contact = state.statement.compile().params.get("contact_id")
        if contact is not None:
            state.session.info.setdefault(_SCHEDULED, set()).add(contact)


def queued_outbound(session: AsyncSession) -> list[Message]:
    """The outbound messages added in this session so far, in the order they were added."""
    return list(session.sync_session.info.get(_QUEUED, ()))


def touches_scheduled_for(session: AsyncSession) -> frozenset[int]:
    """The customers this session put touches in the outbox for (due now or later)."""
    return frozenset(session.sync_session.info.get(_SCHEDULED, ()))


class WriterLock:
    """Where write transactions of this process queue, in arrival order, instead of failing on a timeout.

    SQLite: one writer at a time (the file allows no more). PostgreSQL: as many as the pool keeps
    connections, so a burst of events waits here rather than timing out on the pool, and the
    overflow connections stay free for reads.
    """

    def __init__(self, writers: int = 1) -> None:
        self._slots = asyncio.Semaphore(writers)
        self._single = writers == 1
        self._owner: asyncio.Task[Any] | None = None

    async def acquire(self) -> None:
        task = asyncio.current_task()
        if self._single and task is not None and self._owner is task:  # would wait for itself forever
            raise RuntimeError("a write transaction was opened inside another one in the same task")
        await self._slots.acquire()
        if self._single:
            self._owner = task

    def release(self) -> None:
        self._owner = None
        self._slots.release()


class _WriteTransaction:
    """`session.begin()` on SQLite: the in-process writer lock, then BEGIN IMMEDIATE, then the work."""

    def __init__(self, session: "SiyuSession", lock: WriterLock) -> None:
        self.session = session
        self.lock = lock
        self.transaction: AsyncSessionTransaction | None = None

    async def __aenter__(self) -> AsyncSessionTransaction:
        await self.lock.acquire()
        try:
            self.transaction = AsyncSessionTransaction(self.session)
            await self.transaction.__aenter__()
            await self.session.connection(execution_options={BEGIN_OPTION: "immediate"})
        except BaseException:
            if self.transaction is not None and self.transaction.is_active:
                await self.transaction.rollback()
            self.lock.release()
            raise
        return self.transaction

    async def __aexit__(self, type_: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        try:
            assert self.transaction is not None
            await self.transaction.__aexit__(type_, value, traceback)
        finally:
            self.lock.release()


class SiyuSession(AsyncSession):
    """An AsyncSession whose `begin()` is a write transaction that queues in-process and cannot
    deadlock on SQLite."""

    sync_session_class = TrackingSession
    write_lock: Any = None  # a callable returning the Database's writer lock

    def begin(self) -> Any:  # type: ignore[override]
        return _WriteTransaction(self, self.write_lock())


class InlineSession(SiyuSession):
    """A session on the in-memory database run inline (storage/sqlite_driver.py), closed in place.

    SQLAlchemy closes a session in a task of its own, so that a caller cancelled meanwhile cannot abandon
    the close halfway; that costs two turns of the event loop per session. Inline, nothing in a close
    ever waits, so nothing can interrupt it: `siyu simulate` opens thousands of sessions."""

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()


class Database:
    """One async engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, object] = {}
        file_backed = False
        inline = False
        autocommit_driver = False
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
                kwargs["async_creator"] = sqlite_driver.connect_memory  # no disk to wait for: no driver thread
                inline = True
            else:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                file_backed = True
                if not parsed.query:  # a plain path (URI options are aiosqlite's to read)
                    kwargs["async_creator"] = partial(sqlite_driver.connect_file, database)
                    autocommit_driver = True  # opened so: the driver never issues its own BEGIN
        self._writers = 1
        if self.dialect == "postgresql":
            kwargs.update(pool_size=PG_WRITERS, max_overflow=PG_READERS_OVER)
            self._writers = PG_WRITERS
        # hide_parameters: a database error's text never carries customers' words into a log
        self.engine: AsyncEngine = create_async_engine(url, hide_parameters=True, **kwargs)
        bind = self.engine
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            # the in-memory database is one connection shared by everyone: plain BEGINs would nest there
            if file_backed:
                if not autocommit_driver:
                    event.listen(self.engine.sync_engine, "connect", _explicit_begin)
                event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
                bind = self.engine.execution_options(**{BEGIN_OPTION: "deferred"})  # reads stay deferred
        self._lock: WriterLock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        session_class = type("BoundSession", (InlineSession if inline else SiyuSession,),
                             {"write_lock": self._writer_lock})
        self._bind = bind
        self._session_class = session_class

    def session(self) -> SiyuSession:
        """A session: reads as they come; `async with session.begin():` for one write transaction."""
        return self._session_class(self._bind, expire_on_commit=False)

    def _writer_lock(self) -> WriterLock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a CLI may run several event loops in turn
            self._lock, self._lock_loop = WriterLock(self._writers), loop
        return self._lock

    async def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied (what `siyu db upgrade` runs)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade_on, "head")

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_on(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)
